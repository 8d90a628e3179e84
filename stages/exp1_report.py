"""Stage `exp1_report`: the EXP1 table (arch x pretraining corpus x task) from the GLUE stage reports.

params: exp1.*, models.preset, pretrain.{token_budget,batch_size,seq_len} (the expected tokens per run)
deps:   reports/glue/<arch>-<init>.json, reports/glue_runs/<arch>-<init>.json, reports/pretrain/<arch>-<side>.json
outs:   reports/results/exp1.json (typed result), reports/exp1.json (metrics), reports/exp1.md,
        reports/plots/exp1.tsv (plot), reports/figures/exp1.png
"""
from pathlib import Path

from tinyhelen import glue, models, results, train
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.io import InputError, atomic_open, write_tsv


def _read(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read report ({exc})") from None


def main(args):
    exp1 = load_section("exp1", glue.Exp1Config, args.params)
    preset = load_section("models", models.ModelsConfig, args.params).preset
    pcfg = load_section("pretrain", train.PretrainConfig, args.params)
    gdir, rdir, pdir = Path(args.glue_reports), Path(args.glue_runs), Path(args.pretrain_reports)
    glue_reports = {p.stem: _read(p) for p in sorted(gdir.glob("*.json"))}
    glue_runs = {p.stem: _read(p) for p in sorted(rdir.glob("*.json"))}
    pre_reports = {p.stem: _read(p) for p in sorted(pdir.glob("*.json"))}
    res = glue.exp1_table(glue_reports, pre_reports, exp1.archs, exp1.sides, pcfg.tokens_per_run)
    results.write(results.Exp1Result.build(glue_reports, glue_runs, pre_reports, exp1.archs, exp1.sides,
                                           pcfg.tokens_per_run, preset))
    with atomic_open("reports/exp1.md") as fh:
        fh.write(glue.exp1_markdown(res, preset))
    rows = glue.exp1_plot_rows(res)
    write_tsv("reports/plots/exp1.tsv", rows, list(rows[0]))
    glue.exp1_png(res, "reports/figures/exp1.png")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--glue-reports", default="reports/glue")
    p.add_argument("--glue-runs", default="reports/glue_runs")
    p.add_argument("--pretrain-reports", default="reports/pretrain")
    stage_main(main, p)
