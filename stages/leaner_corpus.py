"""Stage `leaner_corpus`: assemble the per-genre leaner files into the leaner corpus shards.

params: data.genres, data.splits (every prepared genre and split has a leaner twin)    deps: data/leaner/genres, data/leaner/quarantine
outs: data/leaner/corpus/<split>.jsonl (same schema as data/prepared/corpus/leaner/<split>.jsonl)
metrics: reports/leaner_corpus.json
"""
from pathlib import Path

from tinyhelen import simplify
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.data import DataConfig
from tinyhelen.io import InputError, iter_jsonl, write_json


def main(args):
    cfg = load_section("data", DataConfig, args.params)
    files = [Path(args.genres) / f"{g}.jsonl" for g in cfg.genres]
    for f in files:
        if not f.exists():
            raise InputError(f, "missing: run the simplify stage for this genre first")
    stats = simplify.assemble_corpus(files, args.out, list(cfg.splits))
    quarantine = {g: Path(args.quarantine) / f"{g}.jsonl" for g in cfg.genres}
    quarantined = {g: sum(1 for _ in iter_jsonl(q)) for g, q in quarantine.items() if q.exists()}
    write_json(args.metrics, {**stats, "quarantined": quarantined})


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {
        "--genres": "directory of the per-genre leaner files (<genre>.jsonl)",
        "--quarantine": "directory of the per-genre quarantine files", "--out": "leaner corpus directory",
        "--metrics": "metrics (JSON)"}))
