"""Stage `exp3_units`: tokenise the leaner corpus into curriculum units (pool / reference roles) and the
fixed validation stream of EXP3.

params: exp3.units    deps: leaner corpus (train, validation), leaner tokenizer
outs: data/curriculum/units (tokens.npy, offsets.npy, units.jsonl, validation.npy, info.json)
"""
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.curriculum import runs
from tinyhelen.curriculum.config import Exp3Config


def main(args):
    cfg = load_section("exp3", Exp3Config, args.params)
    runs.make_units(f"{args.corpus}/train.jsonl", f"{args.corpus}/validation.jsonl", args.tokenizer, cfg,
                    args.out)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--corpus", default="data/leaner/corpus", help="dir with train.jsonl and validation.jsonl")
    p.add_argument("--tokenizer", default="data/tokenizers/leaner")
    p.add_argument("--out", default="data/curriculum/units")
    stage_main(main, p)
