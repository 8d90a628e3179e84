"""Stage `exp3_report`: EXP3 table (strategy x seed, mean ± std), steps/data to reach the target loss and
reductions vs full-random (steps, and data = unique pool tokens seen), loss curves of every strategy,
Leaner-GLUE of every strategy's checkpoints and of the untrained proxy. `curriculum` selects the headline
strategy.

params: curriculum, exp3.strategies, exp3.seeds, exp3.report, exp3.train.{max_steps,batch_size,seq_len,
        eval_every,model}
deps: data/curriculum/runs, data/curriculum/difficulty, data/curriculum/units, data/tokenizers/leaner,
      reports/exp3/glue
outs: reports/results/exp3.json (typed result), reports/exp3.json (metrics), reports/exp3.md,
      reports/exp3_detail.json, reports/plots/exp3_val_loss.tsv + exp3_pool.tsv (plots), reports/figures/exp3.png
"""
import json
from pathlib import Path

from tinyhelen import results
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.curriculum import report, runs
from tinyhelen.curriculum.config import CurriculumParam, Exp3Config
from tinyhelen.curriculum.units import load_units
from tinyhelen.io import atomic_open, write_json, write_tsv


def proxy_params(model_cfg, tokenizer_dir: str) -> int:
    """Non-embedding parameters of the proxy (built from its config, not trained)."""
    from tinyhelen import models, tokenizer
    from tinyhelen.curriculum.trainer import proxy_config

    tok = tokenizer.load(tokenizer_dir)
    return models.non_embedding_params(models.build_lm(model_cfg.arch, proxy_config(model_cfg, tok)))


def main(args):
    cfg = load_section("exp3", Exp3Config, args.params)
    selected = load_section("curriculum", CurriculumParam, args.params).value
    data = report.load_runs(args.runs, cfg.strategies, cfg.seeds)
    units, _ = load_units(args.units)
    pool = units.subset("pool")
    res = report.build(data, cfg.strategies, cfg.seeds, selected, cfg.report.target_loss, cfg.report.target_from,
                       cfg.train, pool_units=len(pool), pool_tokens=int(pool.lengths().sum()),
                       non_embedding_params=proxy_params(cfg.train.model, args.tokenizer),
                       glue=report.load_glue(args.glue, [*cfg.strategies, runs.UNTRAINED], cfg.seeds))
    results.write(res)
    corr = report.correlations(runs.pool_scores_matrix(args.difficulty, pool.unit_ids))
    info_path = Path(args.units) / "info.json"
    write_json("reports/exp3_detail.json", {"aggregate": report.aggregate(res), "correlations": corr,
                                            "units": json.loads(info_path.read_text()) if info_path.exists() else None})
    with atomic_open("reports/exp3.md") as fh:
        fh.write(report.markdown(res, corr))
    for name, col in (("exp3_val_loss", "val_loss"), ("exp3_pool", "pool_fraction")):
        rows = report.curve_rows(data, cfg.strategies, col)
        write_tsv(f"reports/plots/{name}.tsv", rows, ["step", *cfg.strategies])
    report.plot_png(data, cfg.strategies, res.target_loss, "reports/figures/exp3.png")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--runs", default="data/curriculum/runs")
    p.add_argument("--difficulty", default="data/curriculum/difficulty")
    p.add_argument("--units", default="data/curriculum/units")
    p.add_argument("--tokenizer", default="data/tokenizers/leaner")
    p.add_argument("--glue", default="reports/exp3/glue",
                   help="exp3_glue scores (<strategy>-s<seed>.json, untrained-s<seed>.json)")
    stage_main(main, p)
