"""Stage `entropy`: n-gram entropy and vocabulary statistics, leaner vs ori.

params: entropy.*    deps: both corpora and both tokenizers (paths in dvc.yaml)
outs: the typed result (reports/results/entropy.json), its metrics (reports/entropy.json), every scope
      (reports/entropy_by_genre.json), the tables (reports/entropy.md), the plot data (reports/plots/entropy.tsv)
      and figure (reports/figures/entropy.png)
"""
from pathlib import Path

from tinyhelen import results, timing, tokenizer
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.entropy import measure, result
from tinyhelen.io import atomic_open, write_json, write_tsv


def main(args):
    cfg = load_section("entropy", measure.EntropyConfig, args.params)
    corpora = {"leaner": args.leaner, "ori": args.ori}
    shards = {s: [Path(corpora[s]) / f"{sp}.jsonl" for sp in cfg.splits] for s in corpora}
    toks = {"leaner": tokenizer.load(args.leaner_tokenizer), "ori": tokenizer.load(args.ori_tokenizer)}
    run = measure.run(shards, toks, cfg)
    timing.record(**run.perf)
    results.write(result.EntropyResult.from_stage(run.results, cfg.max_n, cfg.top_k, run.coverage["pooled_genres"],
                                                  run.coverage["dropped"]), args.result, args.metrics)
    write_json(args.by_genre, {"results": run.results, "coverage": run.coverage,
                               "leaner_vs_ori": result.leaner_vs_ori(run.results, cfg.max_n)})
    with atomic_open(args.md) as fh:
        fh.write(result.markdown(run.results, cfg.max_n, cfg.top_k, run.coverage))
    rows = result.plot_rows(run.results, cfg.max_n)
    write_tsv(args.plot, rows, list(rows[0]))
    result.plot_png(rows, args.png)


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {
        "--leaner": "leaner corpus directory (<split>.jsonl)", "--ori": "original corpus directory (<split>.jsonl)",
        "--leaner-tokenizer": "tokenizer of the leaner side", "--ori-tokenizer": "tokenizer of the original side",
        "--result": "typed result (JSON)", "--metrics": "DVC metrics (JSON)", "--by-genre": "every scope (JSON)",
        "--md": "tables (Markdown)", "--plot": "plot data (TSV)", "--png": "figure (PNG)"}))
