"""Stage `exp2_report`: EXP2's typed result built from its run files alone (`tinyhelen.exp2.result.from_runs`:
the checkpoint selection recomputed from the judged inner-comparison answers, per recipe every metric with its
bootstrap interval over the judged Leaner-Eval answers, per bin, the tuning curves).

params: seed, exp2, instruct.source, instruct.template, generate.max_questions, judge.backend (shown:
        generate.decoding)
deps: the run files (judge_inner, judge, instruct_tune, the leaner LLaMA's pretraining: its size) and the judge's
      summary (judge model, position agreement: shown in the tables, not part of the result)
outs: the typed result and its metrics (JSON), the detail (JSON: what the tables show beside the result), the
      tables (Markdown), the plot data (TSV: checkpoint curve, recipes) and the figure (PNG); paths from dvc.yaml
"""
import json
from pathlib import Path

from tinyhelen import results
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.exp2 import result, tables
from tinyhelen.exp2.config import Exp2Config
from tinyhelen.exp2.generate import GenerateConfig
from tinyhelen.io import write_json, write_tsv


def main(args):
    res = result.from_runs(args.run_files, args.params)
    cfg = load_section("exp2", Exp2Config, args.params)
    summary = json.loads((Path(args.judge) / "summary.json").read_text())
    prov = {"judge_model": summary.get("model"), "n_boot": cfg.n_boot,
            "decoding": load_section("generate", GenerateConfig, args.params).decoding.model_dump(),
            "agreement": summary.get("agreement"), "position_means": summary.get("position_means")}
    write_json(args.detail, {"provenance": prov})
    results.write_report(res, args.result, args.metrics, args.md, tables.document(res, provenance=prov))
    write_tsv(args.curve_plot, result.curve_rows(res), ["step", *cfg.recipes])
    write_tsv(args.recipes_plot, result.recipe_rows(res), ["recipe", "bin", "metric", "mean", "lo", "hi"])
    result.plot_png(res, args.png)


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {
        "--run-files": "the run files directory (exp2/, instruct/, pretrain/)",
        "--judge": "the judge stage's output (summary.json: judge model, position agreement)",
        "--result": "typed result (JSON)", "--metrics": "DVC metrics (JSON)", "--detail": "detail (JSON)",
        "--md": "tables (Markdown)", "--curve-plot": "checkpoint-selection curve (TSV)",
        "--recipes-plot": "per recipe and bin (TSV)", "--png": "figure (PNG)"}))
