"""Stage `exp3_report`: EXP3 table (strategy x seed, mean ± std, per-genre losses), steps/data to reach each
baseline's performance (full-random, iterative random) under every target definition and the reductions
(steps, and data = unique training tokens consumed), loss curves of every strategy,
Leaner-GLUE of every strategy's checkpoints and of the untrained proxy. `curriculum` selects the headline
strategy. The typed result is built from the run files alone (`tinyhelen.exp3.rebuild.from_runs`).

params: curriculum, exp3.strategies, exp3.seeds, exp3.report, exp3.train.{max_steps,batch_size,seq_len,
        eval_every,model}
deps: the run files (exp3_train, exp3_glue), the difficulty scores and the units (their correlations and
      description go to the detail file; paths in dvc.yaml)
outs: the typed result and its metrics (JSON), the tables (Markdown), the detail (JSON), the plot data (TSV:
      validation loss, pool share) and the figure (PNG)
"""
import json
from pathlib import Path

from tinyhelen import results
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.exp3 import rebuild, result, runs, tables
from tinyhelen.exp3.config import Exp3Config
from tinyhelen.exp3.units import load_units
from tinyhelen.io import write_json, write_tsv


def main(args):
    cfg = load_section("exp3", Exp3Config, args.params)
    res = rebuild.from_runs(args.run_files, args.params)
    data, _ = rebuild.read_runs(args.run_files, cfg.strategies, cfg.seeds)
    units, _ = load_units(args.units)
    corr = result.correlations(runs.pool_scores_matrix(args.difficulty, units.subset("pool").unit_ids))
    info_path = Path(args.units) / "info.json"
    write_json(args.detail, {"aggregate": result.aggregate(res), "correlations": corr,
                             "units": json.loads(info_path.read_text()) if info_path.exists() else None})
    results.write_report(res, args.result, args.metrics, args.md, tables.document(res, correlations=corr))
    for path, col in ((args.loss_plot, "val_loss"), (args.pool_plot, "pool_fraction")):
        write_tsv(path, result.curve_rows(data, cfg.strategies, col), ["step", *cfg.strategies])
    result.plot_png(data, cfg.strategies, res.target_mean(res.baselines[0], res.definitions[0]), args.png)


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {
        "--run-files": "the run files directory (exp3/<strategy>-s<seed>.tsv, exp3/glue/)",
        "--difficulty": "the difficulty scores", "--units": "the curriculum units",
        "--result": "typed result (JSON)", "--metrics": "DVC metrics (JSON)", "--detail": "detail (JSON)",
        "--md": "tables (Markdown)", "--loss-plot": "validation-loss curves (TSV)",
        "--pool-plot": "pool-share curves (TSV)", "--png": "figure (PNG)"}))
