"""Stage `exp3_report`: EXP3 table (strategy x seed, mean ± std, per-genre losses), steps/data to reach each
baseline's performance (full-random, iterative random) under every target definition and the reductions
(steps, and data = unique training tokens consumed), loss curves of every strategy,
Leaner-GLUE of every strategy's checkpoints and of the untrained proxy. `curriculum` selects the headline
strategy.

params: curriculum, exp3.strategies, exp3.seeds, exp3.report, exp3.train.{max_steps,batch_size,seq_len,
        eval_every,model}
deps: the runs, difficulty scores, units, tokenizer and exp3_glue scores (paths in dvc.yaml)
outs: the typed result and its metrics (JSON), the tables (Markdown), the detail (JSON), the plot data (TSV:
      validation loss, pool share) and the figure (PNG)
"""
import json
from pathlib import Path

from tinyhelen import results
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.exp3 import result, runs
from tinyhelen.exp3.config import CurriculumParam, Exp3Config
from tinyhelen.exp3.units import load_units
from tinyhelen.io import atomic_open, write_json, write_tsv


def proxy_params(model_cfg, tokenizer_dir: str) -> int:
    """Non-embedding parameters of the proxy (built from its config, not trained)."""
    from tinyhelen import tokenizer
    from tinyhelen.exp1 import models
    from tinyhelen.exp3.curriculum import proxy_config

    tok = tokenizer.load(tokenizer_dir)
    return models.non_embedding_params(models.build_lm(model_cfg.arch, proxy_config(model_cfg, tok)))


def main(args):
    cfg = load_section("exp3", Exp3Config, args.params)
    selected = load_section("curriculum", CurriculumParam, args.params).value
    data = result.load_runs(args.runs, cfg.strategies, cfg.seeds)
    units, _ = load_units(args.units)
    pool = units.subset("pool")
    res = result.build(data, cfg.strategies, cfg.seeds, selected, cfg.report.baselines, cfg.train,
                       pool_units=len(pool), pool_tokens=int(pool.lengths().sum()),
                       non_embedding_params=proxy_params(cfg.train.model, args.tokenizer),
                       glue=result.load_glue(args.glue, [*cfg.strategies, runs.UNTRAINED], cfg.seeds),
                       pool_genres=pool.tokens_by_genre())
    results.write(res, args.result, args.metrics)
    corr = result.correlations(runs.pool_scores_matrix(args.difficulty, pool.unit_ids))
    info_path = Path(args.units) / "info.json"
    write_json(args.detail, {"aggregate": result.aggregate(res), "correlations": corr,
                             "units": json.loads(info_path.read_text()) if info_path.exists() else None})
    with atomic_open(args.md) as fh:
        fh.write(result.markdown(res, corr))
    for path, col in ((args.loss_plot, "val_loss"), (args.pool_plot, "pool_fraction")):
        write_tsv(path, result.curve_rows(data, cfg.strategies, col), ["step", *cfg.strategies])
    result.plot_png(data, cfg.strategies, res.target_mean(res.baselines[0], res.definitions[0]), args.png)


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {
        "--runs": "the exp3_train runs (<strategy>-s<seed>/)", "--difficulty": "the difficulty scores",
        "--units": "the curriculum units", "--tokenizer": "tokenizer directory",
        "--glue": "exp3_glue scores (<strategy>-s<seed>.json, untrained-s<seed>.json)",
        "--result": "typed result (JSON)", "--metrics": "DVC metrics (JSON)", "--detail": "detail (JSON)",
        "--md": "tables (Markdown)", "--loss-plot": "validation-loss curves (TSV)",
        "--pool-plot": "pool-share curves (TSV)", "--png": "figure (PNG)"}))
