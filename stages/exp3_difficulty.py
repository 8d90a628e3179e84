"""Stage `exp3_difficulty@<strategy>`: difficulty score of every pool unit under the strategy's static
scorer (each scorer gets the inputs it declares: texts, token ids, the reference LM); online scorers
(selfloss) and the baselines get null scores.

Every path comes from the command line (dvc.yaml). params: exp3.scorer_seed, exp3 compute keys.
Writes <out> (one {"unit_id", "score"} per pool unit).
"""
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.curriculum import runs
from tinyhelen.curriculum.config import Exp3Config
from tinyhelen.curriculum.scorers import check_strategy
from tinyhelen.train.compute import set_threads


def main(args):
    cfg = load_section("exp3", Exp3Config, args.params)
    set_threads(args.threads or cfg.threads)
    runs.difficulty(args.strategy, args.units, args.tokenizer, cfg, args.out, args.reference)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("strategy", type=check_strategy,
                   help="a registered scorer or baseline (tinyhelen.curriculum.scorers.strategy_names())")
    add_paths(p, {"--units": "curriculum units directory (exp3_units)", "--tokenizer": "tokenizer directory",
                  "--reference": "reference LM directory (exp3_reference_lm)", "--out": "scores JSONL"})
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = exp3.threads)")
    stage_main(main, p)
