"""Stage `judge`: score every generated answer (LLM judge through the `llm` layer, or offline proxies).

params: judge, llm.* (reply-changing keys), exp2.recipes, seed     deps: data/generations/<recipe> (4 recipes), reference corpora (proxy)
outs: data/judge/{scores.jsonl,summary.json}; metrics reports/judge.json (openai: incl. LLM usage and cost)
"""
from pathlib import Path

from tinyhelen import judge
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.io import atomic_path, write_json, write_jsonl


def main(args):
    cfg = load_section("judge", judge.JudgeConfig, args.params)
    recipes = load_section("exp2", judge.Exp2Config, args.params).recipes
    paths = [Path(f"data/generations/{r}/{s}.jsonl") for r in recipes for s in ("all", "inner_comparison")]
    gens = judge.read_generations(paths)
    seed = load_seed(args.params)
    if cfg.backend == "openai":
        from tinyhelen.llm.config import LLMConfig

        llm_cfg = load_section("llm", LLMConfig, args.params)
        scores, summary = judge.judge_llm(gens, cfg, llm_cfg, seed)  # LLM usage/cost: summary["llm"]
    else:
        scores, summary = judge.judge_proxy(gens, cfg)
    with atomic_path("data/judge") as tmp:
        write_jsonl(tmp / "scores.jsonl", scores)
        write_json(tmp / "summary.json", summary)
    write_json("reports/judge.json", summary)


if __name__ == "__main__":
    stage_main(main, parser(__doc__))
