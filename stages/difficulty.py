"""Stage `exp3_difficulty@<strategy>`: difficulty score of every pool unit under the strategy's scorer
(random, sentlen, unigram, lmloss); online scorers (selfloss) and baselines get null scores.

params: exp3.scorer_seed    deps: data/curriculum/units, leaner tokenizer, data/curriculum/reference_lm
outs: data/curriculum/difficulty/<strategy>.jsonl
"""
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.curriculum import runs
from tinyhelen.curriculum.config import STRATEGIES, Exp3Config


def main(args):
    import torch

    cfg = load_section("exp3", Exp3Config, args.params)
    torch.set_num_threads(args.threads or cfg.threads)
    out = args.out or f"data/curriculum/difficulty/{args.strategy}.jsonl"
    runs.difficulty(args.strategy, args.units, args.tokenizer, cfg, out, args.reference)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("strategy", choices=STRATEGIES)
    p.add_argument("--units", default="data/curriculum/units")
    p.add_argument("--tokenizer", default="data/tokenizers/leaner")
    p.add_argument("--reference", default="data/curriculum/reference_lm")
    p.add_argument("--out", default=None, help="default: data/curriculum/difficulty/<strategy>.jsonl")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = exp3.threads)")
    stage_main(main, p)
