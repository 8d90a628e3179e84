"""Stage `judge_inner`: judge every checkpoint's answers to the inner-comparison questions (each recipe's
checkpoints judged together per question) and select one checkpoint per recipe (`judge.select_checkpoints`).

Every path comes from the command line (dvc.yaml).
params: judge, llm.* (reply-changing keys), exp2.recipes, exp2.n_boot, exp2.selection_metric,
exp2.max_unscored_share, seed
Reads <generations>/<recipe>.jsonl for every recipe of exp2.recipes. Writes <out>/{scores.jsonl,summary.json,quarantine.jsonl}, the selection <selection> (selected step per recipe
and the checkpoint curve: read by `generate` and `exp2_report`) and the metrics <metrics>; an LLM outage
(or more quarantine than llm.max_quarantine_share) exits 3 and writes nothing.
"""
from tinyhelen.exp2 import judge
from tinyhelen.exp2.config import Exp2Config
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.io import write_json
from tinyhelen.llm import LLMConfig


def main(args):
    cfg = load_section("judge", judge.JudgeConfig, args.params)
    e2 = load_section("exp2", Exp2Config, args.params)
    seed = load_seed(args.params)
    generations = [f"{args.generations}/{r}.jsonl" for r in e2.recipes]
    scores, summary = judge.judge_answers(generations, args.out, cfg,
                                          load_section("llm", LLMConfig, args.params), seed)
    selection = judge.select_checkpoints(scores, cfg.backend, e2.recipes, e2.n_boot, seed, e2.selection_metric,
                                         e2.max_unscored_share)
    write_json(args.selection, selection)
    write_json(args.metrics, {**summary, "selected": selection["selected"]})


if __name__ == "__main__":
    p = add_paths(parser(__doc__), {"--out": "output directory (scores, summary, quarantine)",
                                    "--selection": "the checkpoint selection (JSON)",
                                    "--metrics": "metrics JSON of the stage"})
    p.add_argument("--generations", required=True,
                   help="directory of the inner-comparison generations (<recipe>.jsonl, generate_inner)")
    stage_main(main, p)
