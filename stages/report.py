"""Stage `report` (last in the DAG): one report card for the whole study.

params: the whole params.yaml (the card lists every key that differs from its default; `report.*` holds
        the verdict rules)
deps:   the metrics files of every experiment (reports/entropy.json, exp1.json, exp2.json, exp3.json, ...)
reads (not deps, on purpose): dvc.lock, reports/timings/, reports/figures/*.png, git HEAD
outs:   reports/README.md (report card), reports/summary.json (metrics: verdicts and their numbers)
"""
from tinyhelen import report
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section


def main(args):
    cfg = load_section("report", report.ReportConfig, args.params)
    report.run(".", args.params, cfg)


if __name__ == "__main__":
    stage_main(main, parser(__doc__))
