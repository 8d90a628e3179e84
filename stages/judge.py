"""Stage `judge`: score every generated answer with the configured judge backend (``judge.BACKENDS``: the
offline proxy metrics, or the LLM judge through the `llm` layer with the ``judge.llm`` endpoint/model).

params: judge, llm.* (reply-changing keys), exp2.recipes, seed
deps: data/generations/<recipe> (4 recipes), reference corpora (proxy)
outs: data/judge/{scores.jsonl,summary.json,quarantine.jsonl}; metrics reports/judge.json (LLM usage,
provenance); an LLM outage (or more quarantine than llm.max_quarantine_share) exits 3 and writes nothing
"""
from pathlib import Path

from tinyhelen import judge
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.io import atomic_path, write_json, write_jsonl
from tinyhelen.llm import LLMConfig


def main(args):
    cfg = load_section("judge", judge.JudgeConfig, args.params)
    llm = load_section("llm", LLMConfig, args.params)
    recipes = load_section("exp2", judge.Exp2Config, args.params).recipes
    paths = [Path(f"data/generations/{r}/{s}.jsonl") for r in recipes for s in ("all", "inner_comparison")]
    scores, summary = judge.BACKENDS[cfg.backend].score(judge.read_generations(paths), cfg, llm,
                                                        load_seed(args.params))
    quarantine = summary.pop("quarantine", [])
    with atomic_path("data/judge") as tmp:
        write_jsonl(tmp / "scores.jsonl", scores)
        write_json(tmp / "summary.json", summary)
        write_jsonl(tmp / "quarantine.jsonl", quarantine)
    write_json("reports/judge.json", summary)


if __name__ == "__main__":
    stage_main(main, parser(__doc__))
