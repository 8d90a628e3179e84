"""Stage `entropy`: n-gram entropy and vocabulary statistics, leaner vs ori.

params: entropy.*    deps: leaner corpus (data/leaner/corpus), ori corpus (data/prepared/corpus/ori), both tokenizers
outs: reports/results/entropy.json (typed result), reports/entropy.json (metrics), reports/entropy_by_genre.json,
      reports/entropy.md,
      reports/plots/entropy.tsv (plot), reports/figures/entropy.png
"""
from pathlib import Path

from tinyhelen import entropy, results, timing, tokenizer
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.io import atomic_open, write_json, write_tsv


def main(args):
    cfg = load_section("entropy", entropy.EntropyConfig, args.params)
    sides = ("leaner", "ori")
    corpora = {"leaner": args.leaner, "ori": args.ori}
    shards = {s: [Path(corpora[s]) / f"{sp}.jsonl" for sp in cfg.splits] for s in sides}
    toks = {s: tokenizer.load(f"data/tokenizers/{s}") for s in sides}
    res, perf = entropy.run(shards, toks, cfg)
    results.write(results.EntropyResult.from_stage(res, cfg.max_n, cfg.top_k, cfg.pooled_genres))
    timing.record(**perf)
    write_json("reports/entropy_by_genre.json", {"results": res, "leaner_vs_ori": entropy.leaner_vs_ori(res, cfg.max_n)})
    with atomic_open("reports/entropy.md") as fh:
        fh.write(entropy.markdown(res, cfg.max_n, cfg.top_k))
    rows = entropy.plot_rows(res, cfg.max_n)
    write_tsv("reports/plots/entropy.tsv", rows, list(rows[0]))
    entropy.plot_png(rows, "reports/figures/entropy.png")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--leaner", default="data/leaner/corpus", help="leaner corpus dir (<split>.jsonl)")
    p.add_argument("--ori", default="data/prepared/corpus/ori", help="original corpus dir (<split>.jsonl)")
    stage_main(main, p)
