"""Stage `entropy`: n-gram entropy and vocabulary statistics, leaner vs ori.

params: entropy.*    deps: leaner corpus (data/leaner/corpus), ori corpus (data/prepared/corpus/ori), both tokenizers
outs: reports/results/entropy.json (typed result), reports/entropy.json (metrics), reports/entropy_by_genre.json,
      reports/entropy.md, reports/plots/entropy.tsv (plot), reports/figures/entropy.png
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
    run = entropy.run(shards, toks, cfg)
    timing.record(**run.perf)
    results.write(results.EntropyResult.from_stage(run.results, cfg.max_n, cfg.top_k, run.coverage["pooled_genres"],
                                                   run.coverage["dropped"]))
    write_json("reports/entropy_by_genre.json", {"results": run.results, "coverage": run.coverage,
                                                  "leaner_vs_ori": entropy.leaner_vs_ori(run.results, cfg.max_n)})
    with atomic_open("reports/entropy.md") as fh:
        fh.write(entropy.markdown(run.results, cfg.max_n, cfg.top_k, run.coverage))
    rows = entropy.plot_rows(run.results, cfg.max_n)
    write_tsv("reports/plots/entropy.tsv", rows, list(rows[0]))
    entropy.plot_png(rows, "reports/figures/entropy.png")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--leaner", default="data/leaner/corpus", help="leaner corpus dir (<split>.jsonl)")
    p.add_argument("--ori", default="data/prepared/corpus/ori", help="original corpus dir (<split>.jsonl)")
    stage_main(main, p)
