"""Writing one genre's result, and assembling the per-genre leaner files into the leaner corpus
(the ``leaner_corpus`` stage)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyhelen.data import read_docs
from tinyhelen.io import write_json, write_jsonl
from tinyhelen.simplify.genre import GenreResult


def write_genre(res: GenreResult, out: Path | str, quarantine: Path | str, metrics: Path | str) -> None:
    write_jsonl(out, res.docs)
    write_jsonl(quarantine, res.quarantine)
    write_json(metrics, res.metrics)


def assemble_corpus(genre_files: list[Path], out_dir: Path | str, splits: list[str]) -> dict[str, Any]:
    """Concatenate per-genre leaner files into ``<out_dir>/<split>.jsonl`` (genre order as given)."""
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in splits}
    stats: dict[str, Any] = {}
    for path in genre_files:
        for rec in read_docs(path):
            if rec["split"] not in by_split:
                raise ValueError(f"{path}: document {rec['doc_id'][:12]} has split {rec['split']!r}, "
                                 f"expected one of {splits}")
            by_split[rec["split"]].append(rec)
            g = stats.setdefault(rec["split"], {}).setdefault(rec["genre"], {"docs": 0, "words": 0})
            g["docs"] += 1
            g["words"] += len(rec["text"].split())
    for split, recs in by_split.items():
        write_jsonl(Path(out_dir) / f"{split}.jsonl", recs)
    return {"documents": stats,
            "totals": {s: {"docs": sum(g["docs"] for g in t.values()), "words": sum(g["words"] for g in t.values())}
                       for s, t in stats.items()}}
