"""Stage `exp3_difficulty`: difficulty score of every pool unit under the static scorer of each strategy of
`exp3.strategies` (each scorer gets the inputs it declares: texts, token ids, the reference LM); online
scorers (selfloss) and the baselines get null scores.

Every path comes from the command line (dvc.yaml). params: exp3.strategies, exp3.scorer_seed, exp3 compute
keys. Writes <out>/<strategy>.jsonl (one {"unit_id", "score"} per pool unit) for every strategy; each
`exp3_train@<strategy>-<seed>` depends on its own file, so a changed scorer reruns only its runs.
"""
from pathlib import Path

from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.exp3 import runs
from tinyhelen.exp3.config import Exp3Config
from tinyhelen.train.compute import set_threads


def main(args):
    cfg = load_section("exp3", Exp3Config, args.params)
    set_threads(args.threads or cfg.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for strategy in cfg.strategies:
        runs.difficulty(strategy, args.units, args.tokenizer, cfg, out / f"{strategy}.jsonl", args.reference)


if __name__ == "__main__":
    p = parser(__doc__)
    add_paths(p, {"--units": "curriculum units directory (exp3_units)", "--tokenizer": "tokenizer directory",
                  "--reference": "reference LM directory (exp3_reference_lm)",
                  "--out": "directory of the <strategy>.jsonl scores"})
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = exp3.threads)")
    stage_main(main, p)
