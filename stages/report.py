"""Stage `report` (last in the DAG): one report card for the whole study.

params: the whole params.yaml (the card lists every key that differs from its default and compares the
        params in effect with the study's protocol; `report.*` holds the verdict rules)
deps:   the typed results <reports>/results/{entropy,exp1,exp2,exp3}.json, <reports>/prepare.json, the LLM
        stages' metrics (<reports>/simplify/, leaner_glue.json, leaner_eval.json, judge.json) and the saved
        profile runs (<profiles>/<profile>/)
reads (not deps, on purpose): dvc.lock, <reports>/timings/, <reports>/figures/*.png, git HEAD
outs:   the report card (Markdown), its summary (metrics: verdicts and their numbers) and each claim's effect
        against the tokens per run of this run and of every saved profile (figures, plot data)
"""
from tinyhelen import report
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section


def main(args):
    cfg = load_section("report", report.ReportConfig, args.params)
    report.run(".", args.params, cfg, reports=args.reports, profiles=args.profiles, card=args.card,
               summary_path=args.summary, scale_figures=args.scale_figures, scale_plot=args.scale_plot)


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {
        "--reports": "the stages' reports directory (typed results in results/)",
        "--profiles": "the saved profile runs", "--card": "report card (Markdown)", "--summary": "summary (JSON)",
        "--scale-figures": "directory of the figures of each claim against scale (PNG)",
        "--scale-plot": "each claim's points against scale (TSV)"}))
