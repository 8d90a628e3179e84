"""Stage `judge`: score the selected checkpoints' Leaner-Eval answers with the configured judge backend
(``judge.BACKENDS``: the offline proxy metrics, or the LLM judge through the `llm` layer with the
``judge.llm`` endpoint/model); the four recipes' answers to a question are judged together.

Every path comes from the command line (dvc.yaml). params: judge, llm.* (reply-changing keys), exp2.recipes,
seed. Reads <generations>/<recipe>.jsonl for every recipe of exp2.recipes.
Writes <out>/{scores.jsonl,summary.json,quarantine.jsonl} and the metrics <metrics> (LLM usage, provenance);
an LLM outage (or more quarantine than llm.max_quarantine_share) exits 3 and writes nothing.
"""
from tinyhelen.exp2 import judge
from tinyhelen.exp2.config import Exp2Config
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.io import write_json
from tinyhelen.llm import LLMConfig


def main(args):
    cfg = load_section("judge", judge.JudgeConfig, args.params)
    recipes = load_section("exp2", Exp2Config, args.params).recipes
    generations = [f"{args.generations}/{r}.jsonl" for r in recipes]
    _, summary = judge.judge_answers(generations, args.out, cfg, load_section("llm", LLMConfig, args.params),
                                     load_seed(args.params))
    write_json(args.metrics, summary)


if __name__ == "__main__":
    p = add_paths(parser(__doc__), {"--out": "output directory (scores, summary, quarantine)",
                                    "--metrics": "metrics JSON of the stage"})
    p.add_argument("--generations", required=True,
                   help="directory of the Leaner-Eval generations (<recipe>.jsonl, generate)")
    stage_main(main, p)
