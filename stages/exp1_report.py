"""Stage `exp1_report`: EXP1's typed result (arch x pretraining corpus x task) built from its run files alone
(`tinyhelen.exp1.result.from_runs`: the pretraining curves and the GLUE runs per epoch).

Every path comes from the command line (dvc.yaml).
params: exp1.*, models.preset, pretrain.* (the tokens every pretraining run must have seen)
reads:  <run-files>/pretrain/<arch>-<side>.tsv, <run-files>/glue/<arch>-<init>.tsv
writes: the typed result and its metrics (JSON), tables (Markdown), plot data (TSV) and figure (PNG) of the
        scores, and of the pretraining curves (validation loss against tokens at the selected lr)
"""
from tinyhelen import results
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.exp1 import result, tables


def main(args):
    res = result.from_runs(args.run_files, args.params)
    results.write_report(res, args.result, args.metrics, args.md, tables.document(res))
    result.write_plots(res, args.plot, args.png)
    result.write_curves(res, args.run_files, args.curves_plot, args.curves_png)


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {
        "--run-files": "the run files directory (pretrain/, glue/)", "--result": "typed result (JSON)",
        "--metrics": "DVC metrics (JSON)", "--md": "EXP1 tables (Markdown)", "--plot": "plot data (TSV)",
        "--png": "figure (PNG)", "--curves-plot": "pretraining curves, plot data (TSV)",
        "--curves-png": "pretraining curves, figure (PNG)"}))
