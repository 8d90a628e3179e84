"""Stage `exp2_report`: the EXP2 recipe table with bootstrap intervals, per bin, checkpoint-selection curve.

params: exp2, instruct.source, judge.backend, generate.max_questions, generate.decoding, seed
deps: data/judge       outs: reports/exp2.json (metrics), reports/exp2_detail.json, reports/exp2.md,
reports/plots/exp2_curve.tsv + reports/plots/exp2_recipes.tsv (plots), reports/figures/exp2.png
"""
import json
from pathlib import Path

from tinyhelen import judge
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.generate import GenerateConfig
from tinyhelen.instruct import InstructConfig
from tinyhelen.io import atomic_open, read_jsonl, write_json, write_tsv


def main(args):
    cfg = load_section("exp2", judge.Exp2Config, args.params)
    jcfg = load_section("judge", judge.JudgeConfig, args.params)
    gcfg = load_section("generate", GenerateConfig, args.params)
    icfg = load_section("instruct", InstructConfig, args.params)
    scores = read_jsonl("data/judge/scores.jsonl")
    summary = json.loads(Path("data/judge/summary.json").read_text())
    rep = judge.report(scores, jcfg.backend, cfg.recipes, cfg.n_boot, load_seed(args.params), cfg.selection_metric,
                       cfg.max_unscored_share)
    prov = {"instruct_source": icfg.source, "judge_backend": jcfg.backend, "judge_model": summary.get("model"),
            "n_boot": cfg.n_boot, "questions": gcfg.max_questions or "all",
            "decoding": gcfg.decoding.model_dump(), "agreement": summary.get("agreement"),
            "position_means": summary.get("position_means")}
    metrics = {"instruct_source": icfg.source, "judge_backend": jcfg.backend,
               "scores": "LLM judge 0-5" if judge.BACKENDS[jcfg.backend].is_llm else "proxy metrics (not LLM scores)",
               "selection_metric": rep["selection_metric"], "recipes": judge.flat_metrics(rep)}
    if summary.get("agreement"):
        metrics["order_agreement_total_exact"] = summary["agreement"]["total"]["exact"] \
            if summary["agreement"].get("total") else None
    write_json("reports/exp2.json", metrics)
    write_json("reports/exp2_detail.json", {"provenance": prov, **rep})
    with atomic_open("reports/exp2.md") as fh:
        fh.write(judge.markdown(rep, prov))
    recipes = judge.curve_rows(rep)
    write_tsv("reports/plots/exp2_curve.tsv", recipes, ["step", *cfg.recipes])
    write_tsv("reports/plots/exp2_recipes.tsv", judge.recipe_rows(rep), ["recipe", "bin", "metric", "mean", "lo", "hi"])
    judge.plot_png(rep, "reports/figures/exp2.png")


if __name__ == "__main__":
    stage_main(main, parser(__doc__))
