"""Stage `simplify`: the leaner twin of every original document of every genre of `data.genres` (both splits).

params: llm.* (backend, endpoint, decoding), simplify.*, data.genres, data.splits (the splits rewritten)
deps: prepared ori + leaner shards (leaner: the released twins used by the replay backend), the prompts
outs: <out>/<genre>.jsonl, <quarantine>/<genre>.jsonl
metrics: <metrics>/<genre>.json (reasons, validation stats, LLM requests/tokens/cost, cache hits, provenance);
throughput (documents/s, tokens/s) goes to reports/timings/simplify.json.
Every genre is simplified before anything is written: an LLM outage (or more quarantine than
llm.max_quarantine_share) in any genre exits 3 and writes nothing. The replies already received are in the
reply cache, so a plain `dvc repro` asks the LLM only for what failed.
"""
import logging
from pathlib import Path

from tinyhelen import simplify
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.data import DataConfig
from tinyhelen.io import atomic_path
from tinyhelen.llm import LLMConfig

log = logging.getLogger("tinyhelen.simplify")


def main(args):
    llm = load_section("llm", LLMConfig, args.params)
    cfg = load_section("simplify", simplify.SimplifyConfig, args.params)
    data = load_section("data", DataConfig, args.params)
    splits = list(data.splits)
    results = {}
    for i, genre in enumerate(data.genres, 1):
        log.info("simplify %d/%d: %s", i, len(data.genres), genre)
        ori = {s: Path(args.ori) / f"{s}.jsonl" for s in splits}
        lean = {s: Path(args.released) / f"{s}.jsonl" for s in splits}
        results[genre] = simplify.simplify_genre(genre, ori, lean, cfg, llm)
    with atomic_path(args.metrics) as metrics:  # a persisted output: replaced as a whole (no stale genre)
        metrics.mkdir()
        for genre, res in results.items():
            simplify.write_genre(res, Path(args.out) / f"{genre}.jsonl", Path(args.quarantine) / f"{genre}.jsonl",
                                 metrics / f"{genre}.json")


if __name__ == "__main__":
    p = parser(__doc__)
    add_paths(p, {"--ori": "original documents (prepared shards: <split>.jsonl)",
                  "--released": "released leaner twins (prepared shards; read by the replay backend)",
                  "--out": "directory of the <genre>.jsonl leaner documents",
                  "--quarantine": "directory of the <genre>.jsonl quarantined documents",
                  "--metrics": "directory of the <genre>.json metrics"})
    stage_main(main, p)
