"""Stage `entropy`: n-gram entropy and vocabulary statistics, leaner vs ori.

params: entropy.*    deps: both corpora and both tokenizers (paths in dvc.yaml)
outs: the run file (every figure of every setting, scope and side: reports/runs/entropy.tsv), the typed result
      built from it (reports/results/entropy.json), its metrics (reports/entropy.json), the tables
      (reports/entropy.md), the plot data (reports/plots/entropy.tsv) and figure (reports/figures/entropy.png)
"""
from pathlib import Path

from tinyhelen import results, runfiles, timing, tokenizer
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.entropy import measure, result, tables


def main(args):
    cfg = load_section("entropy", measure.EntropyConfig, args.params)
    corpora = {"leaner": args.leaner, "ori": args.ori}
    shards = {s: [Path(corpora[s]) / f"{sp}.jsonl" for sp in cfg.splits] for s in corpora}
    toks = {"leaner": tokenizer.load(args.leaner_tokenizer), "ori": tokenizer.load(args.ori_tokenizer)}
    run = measure.run(shards, toks, cfg)
    timing.record(**run.perf)
    result.write_run(args.run_file, run.results, cfg.max_n, cfg.top_k, run.coverage["pooled_genres"],
                     run.coverage["dropped"])
    res = result.from_runs(runfiles.root_of(args.run_file, "entropy"))
    results.write_report(res, args.result, args.metrics, args.md, tables.document(res))
    result.write_plots(res, args.plot, args.png)


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {
        "--leaner": "leaner corpus directory (<split>.jsonl)", "--ori": "original corpus directory (<split>.jsonl)",
        "--leaner-tokenizer": "tokenizer of the leaner side", "--ori-tokenizer": "tokenizer of the original side",
        "--run-file": "run file (TSV: every figure)", "--result": "typed result (JSON)",
        "--metrics": "DVC metrics (JSON)", "--md": "tables (Markdown)", "--plot": "plot data (TSV)",
        "--png": "figure (PNG)"}))
