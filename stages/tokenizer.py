"""Stage `tokenizer@<side>`: the 2K byte-level BPE used for one corpus side.

With `tokenizer.shared` (the default, the study's) both sides get the same BPE, trained on the leaner
training split (`--shared-corpus`); otherwise each side's BPE is trained on its own training split (`--corpus`).
params: tokenizer.*    deps: <corpus>/train.jsonl, <shared-corpus>/train.jsonl
outs: data/tokenizers/<side>, reports/tokenizer_<side>.json (which corpus it was trained on, vocabulary, size)
"""
from tinyhelen import tokenizer
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.io import write_json


def main(args):
    cfg = load_section("tokenizer", tokenizer.TokenizerConfig, args.params)
    corpus = args.shared_corpus if cfg.shared else args.corpus
    info = tokenizer.build(f"{corpus}/train.jsonl", f"data/tokenizers/{args.side}", cfg)
    write_json(f"reports/tokenizer_{args.side}.json", {"side": args.side, "shared": cfg.shared,
                                                       "trained_on": f"{corpus}/train.jsonl", **info})


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("side", choices=["leaner", "ori"])
    add_paths(p, {"--corpus": "this side's corpus dir (<split>.jsonl)",
                  "--shared-corpus": "the corpus the shared tokenizer is trained on (the leaner corpus)"})
    stage_main(main, p)
