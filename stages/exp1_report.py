"""Stage `exp1_report`: the EXP1 table (arch x pretraining corpus x task) from the GLUE stage reports.

Every path comes from the command line (dvc.yaml).
params: exp1.*, models.preset, pretrain.{token_budget,batch_size,seq_len} (the expected tokens per run)
reads:  <glue-reports>/<arch>-<init>.json, <glue-runs>/<arch>-<init>.json, <pretrain-reports>/<arch>-<side>.json
writes: the typed result and its metrics (JSON), tables (Markdown),
        plot data (TSV) and figure (PNG)
"""
from pathlib import Path

from tinyhelen import results
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.io import InputError, atomic_open, write_tsv
from tinyhelen.exp1 import result
from tinyhelen.exp1.config import Exp1Config, ModelsConfig
from tinyhelen.exp1.pretrain import PretrainConfig


def _read(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read report ({exc})") from None


def main(args):
    exp1 = load_section("exp1", Exp1Config, args.params)
    preset = load_section("models", ModelsConfig, args.params).preset
    pcfg = load_section("pretrain", PretrainConfig, args.params)
    gdir, rdir, pdir = Path(args.glue_reports), Path(args.glue_runs), Path(args.pretrain_reports)
    glue_reports = {p.stem: _read(p) for p in sorted(gdir.glob("*.json"))}
    glue_runs = {p.stem: _read(p) for p in sorted(rdir.glob("*.json"))}
    pre_reports = {p.stem: _read(p) for p in sorted(pdir.glob("*.json"))}
    res = result.exp1_table(glue_reports, pre_reports, exp1.archs, exp1.sides, pcfg.tokens_per_run, exp1.inits)
    results.write(result.Exp1Result.build(glue_reports, glue_runs, pre_reports, exp1.archs, exp1.sides,
                                          pcfg.tokens_per_run, preset, exp1.inits), args.result, args.metrics)
    with atomic_open(args.md) as fh:
        fh.write(result.exp1_markdown(res, preset))
    rows = result.exp1_plot_rows(res)
    write_tsv(args.plot, rows, list(rows[0]))
    result.exp1_png(res, args.png)


if __name__ == "__main__":
    p = add_paths(parser(__doc__), {
        "--glue-reports": "directory of the glue stages' reports", "--glue-runs": "directory of the glue stages' "
        "per-run detail", "--pretrain-reports": "directory of the pretraining reports",
        "--result": "typed result (JSON)", "--metrics": "DVC metrics (JSON)", "--md": "EXP1 tables (Markdown)",
        "--plot": "plot data (TSV)", "--png": "figure (PNG)"})
    stage_main(main, p)
