"""Stage `tokenizer@<side>`: train the byte-level BPE of one corpus side on its training split.

params: tokenizer.*    deps: data/prepared/corpus/<side>/train.jsonl    outs: data/tokenizers/<side>
"""
from tinyhelen import tokenizer
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.io import write_json


def main(args):
    cfg = load_section("tokenizer", tokenizer.TokenizerConfig, args.params)
    info = tokenizer.build(f"data/prepared/corpus/{args.side}/train.jsonl", f"data/tokenizers/{args.side}", cfg)
    write_json(f"reports/tokenizer_{args.side}.json", info)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("side", choices=["leaner", "ori"])
    stage_main(main, p)
