"""Curriculum units: the items a difficulty scorer ranks and the pacing adds to the pool.

A **unit** is a document (``exp3.units.unit: document``, the study's), or with ``unit: chunk``, for
documents longer than ``exp3.units.unit_max_tokens`` BPE tokens (some book and web documents have 100k+
words), one consecutive chunk of that many tokens (the last chunk is shorter). Unit ids are the document's
id plus ``:<k>`` (``:0`` for a whole document); chunks are scored and paced independently.

Training documents are assigned to roles in a fixed hash order (sha256 of ``salt + doc_id``): first
``reference`` (held-out data of the reference LM behind ``lmloss``) until ``reference_tokens`` are
reached, then ``pool`` (the proxy's training data, the same for every strategy) until ``pool_tokens``.
A document is never split across roles; the document that crosses a budget is cut at the budget, and
what is cut off or left over is counted as ``unused`` in ``info.json`` (nothing is dropped silently).
The validation loss uses the first ``val_tokens`` tokens of the validation documents packed in the same
hash order with ``<|endoftext|>`` separators.

On-disk layout (``data/curriculum/units/``): ``tokens.npy`` (uint16, all units concatenated),
``offsets.npy`` (int64, ``n_units + 1``), ``units.jsonl`` (unit_id, doc_id, genre, role, n_tokens),
``validation.npy`` (uint16 packed stream) and ``info.json`` (counts and budgets).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyhelen import timing
from tinyhelen.exp3.config import UnitsConfig
from tinyhelen.io import InputError, atomic_path, iter_jsonl, write_jsonl

log = logging.getLogger(__name__)

ROLES = ("pool", "reference")


def hash_order(doc_id: str, salt: str) -> str:
    return hashlib.sha256((salt + doc_id).encode()).hexdigest()


@dataclass
class Units:
    """Token ids of units, concatenated, with their metadata (one entry per unit)."""

    tokens: np.ndarray
    offsets: np.ndarray
    meta: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.meta)

    def ids(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, role: str) -> "Units":
        idx = [i for i, m in enumerate(self.meta) if m["role"] == role]
        parts = [self.ids(i) for i in idx]
        lens = np.array([len(p) for p in parts], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
        return Units(tokens, offsets, [self.meta[i] for i in idx])

    @property
    def unit_ids(self) -> list[str]:
        return [m["unit_id"] for m in self.meta]


def _encode(tok, texts: list[str]) -> list[list[int]]:
    return tok(texts, add_special_tokens=False)["input_ids"]


def _sorted_docs(path: Path, genres: list[str] | None, salt: str) -> list[dict[str, Any]]:
    docs = []
    for line, rec in iter_jsonl(path):
        for key in ("doc_id", "genre", "text"):
            if key not in rec:
                raise InputError(path, f"record lacks {key!r}", line)
        if genres is None or rec["genre"] in genres:
            docs.append(rec)
    if not docs:
        raise InputError(path, f"no documents (genres={genres})")
    docs.sort(key=lambda r: hash_order(r["doc_id"], salt))
    return docs


def build_units(train_path: Path | str, val_path: Path | str, tokenizer, cfg: UnitsConfig,
                out_dir: Path | str, batch_docs: int = 64) -> dict[str, Any]:
    """Tokenise, chunk and assign roles; write the layout above atomically. Returns ``info``."""
    t0 = time.time()
    train_path, val_path = Path(train_path), Path(val_path)
    docs = _sorted_docs(train_path, cfg.genres, cfg.salt)
    budgets = {"reference": cfg.reference_tokens, "pool": cfg.pool_tokens}
    used = {"reference": 0, "pool": 0}
    meta: list[dict[str, Any]] = []
    parts: list[np.ndarray] = []
    unused_docs = unused_tokens = empty_docs = tokenized = 0
    i = 0
    while i < len(docs):
        batch = docs[i:i + batch_docs]
        i += len(batch)
        if all(budgets[r] is not None and used[r] >= budgets[r] for r in ROLES):
            unused_docs += len(batch)  # counted in docs; their tokens are not computed
            continue
        for rec, ids in zip(batch, _encode(tokenizer, [r["text"] for r in batch])):
            tokenized += len(ids)
            if not ids:
                empty_docs += 1
                continue
            role = next((r for r in ("reference", "pool") if budgets[r] is None or used[r] < budgets[r]), None)
            if role is None:
                unused_docs += 1
                unused_tokens += len(ids)
                continue
            room = len(ids) if budgets[role] is None else budgets[role] - used[role]
            keep = ids[:room]
            unused_tokens += len(ids) - len(keep)
            used[role] += len(keep)
            width = cfg.unit_max_tokens if cfg.unit == "chunk" else len(keep)
            for k in range(0, len(keep), width):
                chunk = keep[k:k + width]
                meta.append({"unit_id": f"{rec['doc_id']}:{k // width}", "doc_id": rec["doc_id"],
                             "genre": rec["genre"], "role": role, "n_tokens": len(chunk)})
                parts.append(np.asarray(chunk, dtype=np.uint16))
    if used["pool"] == 0:
        raise InputError(train_path, "no pool units: exp3.units.reference_tokens uses up all training data")
    if len(tokenizer) > np.iinfo(np.uint16).max:
        raise ValueError(f"vocabulary of {len(tokenizer)} does not fit uint16")
    lens = np.array([len(p) for p in parts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    tokens = np.concatenate(parts)

    # validation stream: hash order, EOS-separated, first val_tokens tokens
    vdocs = _sorted_docs(val_path, cfg.genres, cfg.salt)
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    j = 0
    while len(stream) < cfg.val_tokens and j < len(vdocs):
        for ids in _encode(tokenizer, [r["text"] for r in vdocs[j:j + batch_docs]]):
            stream.extend(ids + [eos])
        j += batch_docs
    if len(stream) < cfg.val_tokens:
        raise InputError(val_path, f"only {len(stream)} validation tokens; exp3.units.val_tokens is "
                                   f"{cfg.val_tokens}")
    val = np.asarray(stream[:cfg.val_tokens], dtype=np.uint16)

    n_units = {r: sum(1 for m in meta if m["role"] == r) for r in ROLES}
    info = {"units": n_units, "tokens": used, "unused_docs": unused_docs, "unused_tokens": unused_tokens,
            "empty_docs": empty_docs, "train_docs": len(docs), "chunked_docs": len({m["doc_id"] for m in meta
                                                                                    if not m["unit_id"].endswith(":0")}),
            "val_tokens": int(val.size), "val_docs_used": min(j, len(vdocs))}
    secs = time.time() - t0  # wall clock: reports/timings, never in the output (its hash must not vary)
    timing.record(seconds=round(secs, 2), tokens_per_s=round(tokenized / max(secs, 1e-9)))
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        np.save(tmp / "tokens.npy", tokens)
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "validation.npy", val)
        write_jsonl(tmp / "units.jsonl", meta)
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("units: %s (%.0f tokens/s)", info, tokenized / max(secs, 1e-9))
    return info


def load_tokenizer(path: Path | str):
    """The tokenizer of the units (a clear error when its directory is missing)."""
    from tinyhelen.tokenizer import load

    if not Path(path).is_dir():
        raise InputError(path, "tokenizer directory not found (run the tokenizer stage)")
    return load(path)


def load_units(units_dir: Path | str) -> tuple[Units, np.ndarray]:
    """``(all units, validation stream)`` from a ``build_units`` directory."""
    d = Path(units_dir)
    for name in ("tokens.npy", "offsets.npy", "validation.npy", "units.jsonl"):
        if not (d / name).exists():
            raise InputError(d / name, "file not found (run the exp3_units stage)")
    meta = [rec for _, rec in iter_jsonl(d / "units.jsonl")]
    units = Units(np.load(d / "tokens.npy"), np.load(d / "offsets.npy"), meta)
    if len(units.offsets) != len(meta) + 1:
        raise InputError(d / "offsets.npy", f"{len(units.offsets)} offsets for {len(meta)} units")
    return units, np.load(d / "validation.npy")
