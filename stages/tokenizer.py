"""Stage `tokenizer@<side>`: train the byte-level BPE of one corpus side on its training split.

params: tokenizer.*    deps: <corpus>/train.jsonl    outs: data/tokenizers/<side>
(corpus: data/leaner/corpus for the leaner side (the simplify stage's output), data/prepared/corpus/ori for ori)
"""
from tinyhelen import tokenizer
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.io import write_json


def main(args):
    cfg = load_section("tokenizer", tokenizer.TokenizerConfig, args.params)
    corpus = args.corpus or f"data/prepared/corpus/{args.side}"
    info = tokenizer.build(f"{corpus}/train.jsonl", f"data/tokenizers/{args.side}", cfg)
    write_json(f"reports/tokenizer_{args.side}.json", info)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("side", choices=["leaner", "ori"])
    p.add_argument("--corpus", default=None, help="corpus dir with <split>.jsonl (default data/prepared/corpus/<side>)")
    stage_main(main, p)
