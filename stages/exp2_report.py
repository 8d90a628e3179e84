"""Stage `exp2_report`: the EXP2 recipe table with bootstrap intervals, per bin, checkpoint-selection curve.

params: exp2, instruct.source, instruct.template, judge.backend, generate.max_questions, generate.decoding, seed
deps: data/judge (the selected checkpoints' Leaner-Eval scores), the checkpoint selection (judge_inner),
reports/instruct (tuning steps and tokens), reports/pretrain/llama-leaner.json (model size)
outs: reports/results/exp2.json (typed result), reports/exp2.json (metrics), reports/exp2_detail.json,
      reports/exp2.md, reports/plots/exp2_curve.tsv + reports/plots/exp2_recipes.tsv (plots), reports/figures/exp2.png
"""
import json
from pathlib import Path

from tinyhelen import instruct, judge, results
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.generate import GenerateConfig
from tinyhelen.io import atomic_open, read_jsonl, write_json, write_tsv


def main(args):
    cfg = load_section("exp2", judge.Exp2Config, args.params)
    jcfg = load_section("judge", judge.JudgeConfig, args.params)
    gcfg = load_section("generate", GenerateConfig, args.params)
    icfg = load_section("instruct", instruct.InstructConfig, args.params)
    scores = read_jsonl(Path(args.judge) / "scores.jsonl")
    summary = json.loads((Path(args.judge) / "summary.json").read_text())
    selection = json.loads(Path(args.selection).read_text())
    rep = judge.report(scores, jcfg.backend, cfg.recipes, cfg.n_boot, load_seed(args.params), selection)
    backend = judge.BACKENDS[jcfg.backend]
    tune = {p.stem: json.loads(p.read_text()) for p in sorted(Path(args.instruct_reports).glob("*.json"))}
    llama = Path(args.pretrain_report)
    results.write(results.Exp2Result.build(
        rep, judge_is_llm=backend.is_llm, main_metric=backend.main_metric, instruct_source=icfg.source,
        template=instruct.TEMPLATES[icfg.template], questions=gcfg.max_questions, tune_reports=tune,
        non_embedding_params=json.loads(llama.read_text()).get("non_embedding_params") if llama.exists() else None))
    prov = {"instruct_source": icfg.source, "judge_backend": jcfg.backend, "judge_model": summary.get("model"),
            "n_boot": cfg.n_boot, "questions": gcfg.max_questions or "all",
            "decoding": gcfg.decoding.model_dump(), "agreement": summary.get("agreement"),
            "position_means": summary.get("position_means")}
    write_json("reports/exp2_detail.json", {"provenance": prov, **rep})
    with atomic_open("reports/exp2.md") as fh:
        fh.write(judge.markdown(rep, prov))
    recipes = judge.curve_rows(rep)
    write_tsv("reports/plots/exp2_curve.tsv", recipes, ["step", *cfg.recipes])
    write_tsv("reports/plots/exp2_recipes.tsv", judge.recipe_rows(rep), ["recipe", "bin", "metric", "mean", "lo", "hi"])
    judge.plot_png(rep, "reports/figures/exp2.png")


if __name__ == "__main__":
    p = parser(__doc__)
    p = add_paths(p, {"--judge": "the judge stage's output (scores.jsonl, summary.json)",
                      "--selection": "the checkpoint selection (judge_inner)",
                      "--instruct-reports": "directory of the instruction-tuning reports",
                      "--pretrain-report": "the leaner LLaMA pretraining report (model size)"})
    stage_main(main, p)
