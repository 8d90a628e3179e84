"""Stage `exp3_report`: EXP3 table (strategy x seed, mean ± std), steps/data to reach the target loss and
reductions vs full-random, loss curves of every strategy. `curriculum` selects the headline strategy.

params: curriculum, exp3.strategies, exp3.seeds, exp3.report
deps: data/curriculum/runs, data/curriculum/difficulty, data/curriculum/units
outs: reports/exp3.json (metrics), reports/exp3.md, reports/exp3_detail.json,
      reports/plots/exp3_val_loss.tsv + exp3_pool.tsv (plots), reports/figures/exp3.png
"""
import json
from pathlib import Path

from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.curriculum import report, runs
from tinyhelen.curriculum.config import CurriculumParam, Exp3Config
from tinyhelen.curriculum.units import load_units
from tinyhelen.io import atomic_open, write_json, write_tsv


def main(args):
    cfg = load_section("exp3", Exp3Config, args.params)
    selected = load_section("curriculum", CurriculumParam, args.params).value
    data = report.load_runs(args.runs, cfg.strategies, cfg.seeds)
    rep = report.build(data, cfg.strategies, cfg.seeds, selected, cfg.report.target_loss, cfg.report.target_from)
    units, _ = load_units(args.units)
    pool = units.subset("pool")
    rep["correlations"] = report.correlations(runs.pool_scores_matrix(args.difficulty, pool.unit_ids))
    t = cfg.train
    info = {"steps": t.max_steps, "tokens": t.max_steps * t.batch_size * t.seq_len, "pool_units": len(pool),
            "pool_tokens": int(pool.lengths().sum())}
    rep["metrics"]["budget"] = info
    rep["metrics"]["preset"] = t.model.preset
    info_path = Path(args.units) / "info.json"
    rep["units"] = json.loads(info_path.read_text()) if info_path.exists() else None
    write_json("reports/exp3.json", rep["metrics"])
    write_json("reports/exp3_detail.json", rep)
    with atomic_open("reports/exp3.md") as fh:
        fh.write(report.markdown(rep, info))
    for name, col in (("exp3_val_loss", "val_loss"), ("exp3_pool", "pool_fraction")):
        rows = report.curve_rows(data, cfg.strategies, col)
        write_tsv(f"reports/plots/{name}.tsv", rows, ["step", *cfg.strategies])
    report.plot_png(data, cfg.strategies, rep["metrics"]["target_loss"], "reports/figures/exp3.png")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--runs", default="data/curriculum/runs")
    p.add_argument("--difficulty", default="data/curriculum/difficulty")
    p.add_argument("--units", default="data/curriculum/units")
    stage_main(main, p)
