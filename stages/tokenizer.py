"""Stage `tokenizer`: the 2K byte-level BPE of each corpus side, trained once per distinct corpus.

With `tokenizer.shared` (the default, the study's) one BPE is trained on the leaner training split and saved
for both sides; otherwise each side's BPE is trained on its own training split.
params: tokenizer.*    deps: <leaner>/train.jsonl, <ori>/train.jsonl
outs: the tokenizer of each side, and per side a report (which corpus it was trained on, vocabulary, size)
"""
from tinyhelen import tokenizer
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.io import write_json


def main(args):
    cfg = load_section("tokenizer", tokenizer.TokenizerConfig, args.params)
    corpora = {"leaner": args.leaner, "ori": args.ori if not cfg.shared else args.leaner}
    outs = {"leaner": args.leaner_out, "ori": args.ori_out}
    reports = {"leaner": args.leaner_report, "ori": args.ori_report}
    for corpus in dict.fromkeys(corpora.values()):  # each distinct training corpus once
        sides = [s for s in corpora if corpora[s] == corpus]
        info = tokenizer.build(f"{corpus}/train.jsonl", [outs[s] for s in sides], cfg)
        for side in sides:
            write_json(reports[side], {"side": side, "shared": cfg.shared, "trained_on": f"{corpus}/train.jsonl",
                                       **info})


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {
        "--leaner": "leaner corpus directory (<split>.jsonl)", "--ori": "original corpus directory (<split>.jsonl)",
        "--leaner-out": "tokenizer directory of the leaner side", "--ori-out": "tokenizer directory of the original "
        "side", "--leaner-report": "report of the leaner side's tokenizer (JSON)",
        "--ori-report": "report of the original side's tokenizer (JSON)"}))
