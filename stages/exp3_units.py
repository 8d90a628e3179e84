"""Stage `exp3_units`: tokenise the leaner corpus into curriculum units (pool / reference roles, each
stratified by genre) and the fixed validation set of EXP3 (stratified by genre).

Every path comes from the command line (dvc.yaml). params: exp3.units.
Writes <out>/ (tokens.npy, offsets.npy, units.jsonl, validation.npy, validation.json, info.json).
"""
from pathlib import Path

from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.exp3.config import Exp3Config
from tinyhelen.exp3.units import build_units, load_tokenizer


def main(args):
    cfg = load_section("exp3", Exp3Config, args.params)
    corpus = Path(args.corpus)
    build_units(corpus / "train.jsonl", corpus / "validation.jsonl", load_tokenizer(args.tokenizer), cfg.units,
                args.out)


if __name__ == "__main__":
    p = add_paths(parser(__doc__), {"--corpus": "directory with train.jsonl and validation.jsonl",
                                    "--tokenizer": "tokenizer directory", "--out": "units directory"})
    stage_main(main, p)
