"""Stage `exp2_report`: the EXP2 recipe table with bootstrap intervals, per bin, checkpoint-selection curve.

params: exp2, instruct.source, instruct.template, judge.backend, generate.max_questions, generate.decoding, seed
deps: the judged Leaner-Eval answers of the selected checkpoints (judge), the checkpoint selection (judge_inner),
      the instruction-tuning reports (steps and tokens), the leaner LLaMA's pretraining report (model size)
outs: the typed result and its metrics (JSON), the detail (JSON), the tables (Markdown), the plot data (TSV:
      checkpoint curve, recipes) and the figure (PNG); every path from dvc.yaml
"""
import json
from pathlib import Path

from tinyhelen import results
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.exp2 import judge, result
from tinyhelen.exp2.config import Exp2Config, InstructConfig
from tinyhelen.exp2.generate import GenerateConfig
from tinyhelen.exp2.instruct_data import TEMPLATES
from tinyhelen.io import atomic_open, read_jsonl, write_json, write_tsv


def main(args):
    cfg = load_section("exp2", Exp2Config, args.params)
    jcfg = load_section("judge", judge.JudgeConfig, args.params)
    gcfg = load_section("generate", GenerateConfig, args.params)
    icfg = load_section("instruct", InstructConfig, args.params)
    scores = read_jsonl(Path(args.judge) / "scores.jsonl")
    summary = json.loads((Path(args.judge) / "summary.json").read_text())
    selection = json.loads(Path(args.selection).read_text())
    rep = result.summarise(scores, jcfg.backend, cfg.recipes, cfg.n_boot, load_seed(args.params), selection)
    backend = judge.BACKENDS[jcfg.backend]
    tune = {p.stem: json.loads(p.read_text()) for p in sorted(Path(args.instruct_reports).glob("*.json"))}
    llama = Path(args.pretrain_report)
    results.write(result.Exp2Result.build(
        rep, judge_is_llm=backend.is_llm, main_metric=backend.main_metric, instruct_source=icfg.source,
        template=TEMPLATES[icfg.template], questions=gcfg.max_questions, tune_reports=tune,
        non_embedding_params=json.loads(llama.read_text()).get("non_embedding_params") if llama.exists() else None),
        args.result, args.metrics)
    prov = {"instruct_source": icfg.source, "judge_backend": jcfg.backend, "judge_model": summary.get("model"),
            "n_boot": cfg.n_boot, "questions": gcfg.max_questions or "all",
            "decoding": gcfg.decoding.model_dump(), "agreement": summary.get("agreement"),
            "position_means": summary.get("position_means")}
    write_json(args.detail, {"provenance": prov, **rep})
    with atomic_open(args.md) as fh:
        fh.write(result.markdown(rep, prov))
    write_tsv(args.curve_plot, result.curve_rows(rep), ["step", *cfg.recipes])
    write_tsv(args.recipes_plot, result.recipe_rows(rep), ["recipe", "bin", "metric", "mean", "lo", "hi"])
    result.plot_png(rep, args.png)


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {
        "--judge": "the judge stage's output (scores.jsonl, summary.json)",
        "--selection": "the checkpoint selection (judge_inner)",
        "--instruct-reports": "directory of the instruction-tuning reports",
        "--pretrain-report": "the leaner LLaMA pretraining report (model size)",
        "--result": "typed result (JSON)", "--metrics": "DVC metrics (JSON)", "--detail": "detail (JSON)",
        "--md": "tables (Markdown)", "--curve-plot": "checkpoint-selection curve (TSV)",
        "--recipes-plot": "per recipe and bin (TSV)", "--png": "figure (PNG)"}))
