"""Curriculum units: the items a difficulty scorer ranks and the pacing adds to the pool.

A **unit** is a document (``exp3.units.unit: document``, the study's), or with ``unit: chunk``, for
documents longer than ``exp3.units.unit_max_tokens`` BPE tokens (some book and web documents have 100k+
words), one consecutive chunk of that many tokens (the last chunk is shorter). Unit ids are the document's
id plus ``:<k>`` (``:0`` for a whole document); chunks are scored and paced independently.

**Stratified by genre.** Every budget (``pool_tokens``, ``reference_tokens``, ``val_tokens``) is split over
the genres in proportion to ``genre_shares`` (default: each genre's share of the training corpus's
whitespace words, i.e. the corpus's own mix; largest-remainder rounding, so the parts sum to the budget), so
no genre is missing from the pool, the reference data or the validation set. Within a genre, training
documents are assigned in a fixed hash order (sha256 of ``salt + doc_id``): first ``reference`` (held-out
data of the reference LM behind ``lmloss``) until the genre's reference budget, then ``pool`` (the proxy's
training data, the same for every strategy) until its pool budget. A document is never split across roles.
The document that crosses a budget is **cut**: its first tokens up to the budget are kept (a prefix, as one
unit; ``n_tokens`` is what is kept, ``doc_tokens`` the document's length), the rest is counted as
``cut_tokens`` in ``info.json``; documents beyond the budgets are counted as ``unused_docs`` (nothing is
dropped silently). Units are stored in the global hash order (genres interleaved).

The **validation set** comes from the validation split (held out from training): per genre, its documents
in the same hash order, each followed by ``<|endoftext|>``, concatenated and cut at the genre's validation
budget. ``validation.npy`` holds the genres' streams one after the other, ``validation.json`` their spans.

On-disk layout (``data/curriculum/units/``): ``tokens.npy`` (uint16, all units concatenated),
``offsets.npy`` (int64, ``n_units + 1``), ``units.jsonl`` (unit_id, doc_id, genre, role, n_tokens,
doc_tokens), ``validation.npy`` (uint16), ``validation.json`` (``{"spans": {genre: [start, end]}}``) and
``info.json`` (counts and budgets, per genre too).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
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

    def tokens_by_genre(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m, n in zip(self.meta, self.lengths()):
            out[m["genre"]] = out.get(m["genre"], 0) + int(n)
        return dict(sorted(out.items()))

    @property
    def unit_ids(self) -> list[str]:
        return [m["unit_id"] for m in self.meta]


@dataclass
class Validation:
    """The fixed validation set: ``tokens`` with one stream per genre at ``spans[genre] = (start, end)``.
    Without spans (``of``), ``tokens`` is one unstratified stream (no per-genre figure)."""

    tokens: np.ndarray
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, stream: np.ndarray) -> "Validation":
        return cls(np.asarray(stream))

    @property
    def genres(self) -> list[str]:
        return list(self.spans)

    def strata(self) -> dict[str | None, np.ndarray]:
        """Stream per genre (key None: the whole, unstratified stream)."""
        if not self.spans:
            return {None: self.tokens}
        return {g: self.tokens[a:b] for g, (a, b) in self.spans.items()}


def largest_remainder(total: int, shares: dict[str, float]) -> dict[str, int]:
    """``total`` split in proportion to ``shares`` into integers summing to ``total`` (largest remainders
    first; ties by key order)."""
    norm = sum(shares.values())
    exact = {k: total * v / norm for k, v in shares.items()}
    out = {k: int(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: -(exact[k] - out[k]))[:total - sum(out.values())]:
        out[k] += 1
    return out


def _encode(tok, texts: list[str]) -> list[list[int]]:
    return tok(texts, add_special_tokens=False)["input_ids"]


def _docs_by_genre(path: Path, genres: list[str] | None, salt: str) -> dict[str, list[dict[str, Any]]]:
    """The documents of ``genres`` (None: all) per genre, each genre in hash order; a named genre without
    documents is an error."""
    docs: dict[str, list[dict[str, Any]]] = {}
    for line, rec in iter_jsonl(path):
        for key in ("doc_id", "genre", "text"):
            if key not in rec:
                raise InputError(path, f"record lacks {key!r}", line)
        if genres is None or rec["genre"] in genres:
            docs.setdefault(rec["genre"], []).append(rec)
    missing = sorted(set(genres or []) - set(docs))
    if not docs or missing:
        raise InputError(path, f"no documents of genre(s) {missing or genres} (exp3.units.genres)")
    for recs in docs.values():
        recs.sort(key=lambda r: hash_order(r["doc_id"], salt))
    return dict(sorted(docs.items()))


def genre_shares(docs: dict[str, list[dict[str, Any]]], given: dict[str, float] | None) -> dict[str, float]:
    """Each genre's share: ``given`` (normalised; a genre it leaves out gets 0), else its share of the
    training documents' whitespace words."""
    raw = {g: (given or {}).get(g, 0.0) for g in docs} if given is not None else \
        {g: float(sum(len(r["text"].split()) for r in recs)) for g, recs in docs.items()}
    total = sum(raw.values())
    return {g: round(v / total, 6) for g, v in raw.items()}


@dataclass
class _Genre:
    """What one genre contributed: units (meta, token ids) and its counts."""

    meta: list[dict[str, Any]] = field(default_factory=list)
    parts: list[np.ndarray] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("pool", "reference", "cut_docs", "cut_tokens", "unused_docs", "empty_docs", "tokenized"), 0))


def _assign(recs: list[dict[str, Any]], budgets: dict[str, int | None], tok, cfg: UnitsConfig,
            batch_docs: int) -> _Genre:
    """One genre's documents (hash order) to the roles: reference until its budget, then pool (None: no
    limit); the document crossing a budget is cut to a prefix."""
    out = _Genre()
    c = out.counts
    for i in range(0, len(recs), batch_docs):
        batch = recs[i:i + batch_docs]
        if all(budgets[r] is not None and c[r] >= budgets[r] for r in ROLES):
            c["unused_docs"] += len(batch)  # counted in docs; their tokens are not computed
            continue
        for rec, ids in zip(batch, _encode(tok, [r["text"] for r in batch])):
            c["tokenized"] += len(ids)
            role = next((r for r in ("reference", "pool") if budgets[r] is None or c[r] < budgets[r]), None)
            if not ids or role is None:
                c["empty_docs" if not ids else "unused_docs"] += 1
                continue
            keep = ids[:len(ids) if budgets[role] is None else budgets[role] - c[role]]
            if len(keep) < len(ids):
                c["cut_docs"] += 1
                c["cut_tokens"] += len(ids) - len(keep)
            c[role] += len(keep)
            width = cfg.unit_max_tokens if cfg.unit == "chunk" else len(keep)
            for k in range(0, len(keep), width):
                chunk = keep[k:k + width]
                out.meta.append({"unit_id": f"{rec['doc_id']}:{k // width}", "doc_id": rec["doc_id"],
                                 "genre": rec["genre"], "role": role, "n_tokens": len(chunk),
                                 "doc_tokens": len(ids)})
                out.parts.append(np.asarray(chunk, dtype=np.uint16))
    return out


def _validation(path: Path, budgets: dict[str, int], tok, salt: str, batch_docs: int) -> tuple[Validation, dict]:
    """Per genre: its validation documents in hash order, EOS after each, cut at the genre's budget."""
    docs = _docs_by_genre(path, list(budgets), salt)
    eos, parts, spans, used, at = tok.eos_token_id, [], {}, {}, 0
    for g, budget in budgets.items():
        stream: list[int] = []
        j = n_docs = 0
        while len(stream) < budget and j < len(docs[g]):
            for ids in _encode(tok, [r["text"] for r in docs[g][j:j + batch_docs]]):
                n_docs += len(stream) < budget  # documents that contribute tokens
                stream.extend(ids + [eos])
            j += batch_docs
        if len(stream) < budget:
            raise InputError(path, f"genre {g!r}: only {len(stream)} validation tokens; its share of "
                                   f"exp3.units.val_tokens is {budget}")
        parts.append(np.asarray(stream[:budget], dtype=np.uint16))
        spans[g], at, used[g] = (at, at + budget), at + budget, n_docs
    return Validation(np.concatenate(parts), spans), used


def build_units(train_path: Path | str, val_path: Path | str, tokenizer, cfg: UnitsConfig,
                out_dir: Path | str, batch_docs: int = 64) -> dict[str, Any]:
    """Tokenise, cut and assign roles per genre; write the layout above atomically. Returns ``info``."""
    t0 = time.time()
    train_path, val_path = Path(train_path), Path(val_path)
    if len(tokenizer) > np.iinfo(np.uint16).max:
        raise ValueError(f"vocabulary of {len(tokenizer)} does not fit uint16")
    docs = _docs_by_genre(train_path, cfg.genres, cfg.salt)
    shares = genre_shares(docs, cfg.genre_shares)
    budgets = {r: None if total is None else largest_remainder(total, shares)
               for r, total in (("pool", cfg.pool_tokens), ("reference", cfg.reference_tokens))}
    per = {g: _assign(recs, {r: None if budgets[r] is None else budgets[r][g] for r in ROLES}, tokenizer, cfg,
                      batch_docs) for g, recs in docs.items()}
    empty = [g for g, x in per.items() if not x.counts["pool"] and shares[g] > 0]
    if empty:
        raise InputError(train_path, f"no pool units of genre(s) {empty}: their documents are used up by "
                                     "exp3.units.reference_tokens")
    for g, x in per.items():
        if budgets["pool"] is not None and x.counts["pool"] < budgets["pool"][g]:
            log.warning("genre %s: %d pool tokens of its %d (not enough documents)", g, x.counts["pool"],
                        budgets["pool"][g])
    genres = list(per.values())  # units in the global hash order (a document's chunks stay in order)
    order = sorted((hash_order(m["doc_id"], cfg.salt), gi, k) for gi, x in enumerate(genres)
                   for k, m in enumerate(x.meta))
    meta = [genres[gi].meta[k] for _, gi, k in order]
    parts = [genres[gi].parts[k] for _, gi, k in order]
    lens = np.array([len(p) for p in parts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    val, val_docs = _validation(val_path, largest_remainder(cfg.val_tokens, {g: v for g, v in shares.items() if v}),
                                tokenizer, cfg.salt, batch_docs)
    info = _info(meta, per, shares, budgets, val, val_docs, sum(len(r) for r in docs.values()))
    tokenized = sum(x.counts["tokenized"] for x in per.values())
    secs = time.time() - t0  # wall clock: reports/timings, never in the output (its hash must not vary)
    timing.record(seconds=round(secs, 2), tokens_per_s=round(tokenized / max(secs, 1e-9)))
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        np.save(tmp / "tokens.npy", np.concatenate(parts))
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "validation.npy", val.tokens)
        (tmp / "validation.json").write_text(json.dumps({"spans": val.spans}, indent=2) + "\n")
        write_jsonl(tmp / "units.jsonl", meta)
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("units: %s (%.0f tokens/s)", info, tokenized / max(secs, 1e-9))
    return info


def _info(meta: list[dict[str, Any]], per: dict[str, _Genre], shares: dict[str, float],
          budgets: dict[str, dict[str, int] | None], val: Validation, val_docs: dict[str, int],
          train_docs: int) -> dict[str, Any]:
    """Counts and budgets, overall and per genre (``info.json``)."""
    total = lambda key: sum(x.counts[key] for x in per.values())  # noqa: E731
    by_genre = {}
    for g, x in per.items():
        c, span = x.counts, val.spans.get(g, (0, 0))
        by_genre[g] = {"share": shares[g], "pool_tokens": c["pool"], "reference_tokens": c["reference"],
                       **{f"{r}_budget": None if budgets[r] is None else budgets[r][g] for r in ROLES},
                       "pool_units": sum(1 for m in x.meta if m["role"] == "pool"),
                       "cut_docs": c["cut_docs"], "cut_tokens": c["cut_tokens"], "unused_docs": c["unused_docs"],
                       "val_tokens": span[1] - span[0], "val_docs": val_docs.get(g, 0)}
    return {"units": {r: sum(1 for m in meta if m["role"] == r) for r in ROLES},
            "tokens": {r: total(r) for r in ROLES}, "cut_docs": total("cut_docs"), "cut_tokens": total("cut_tokens"),
            "unused_docs": total("unused_docs"), "empty_docs": total("empty_docs"),
            "train_docs": train_docs,
            "chunked_docs": len({m["doc_id"] for m in meta if not m["unit_id"].endswith(":0")}),
            "val_tokens": int(val.tokens.size), "genres": by_genre}


def load_tokenizer(path: Path | str):
    """The tokenizer of the units (a clear error when its directory is missing)."""
    from tinyhelen.tokenizer import load

    if not Path(path).is_dir():
        raise InputError(path, "tokenizer directory not found (run the tokenizer stage)")
    return load(path)


def load_units(units_dir: Path | str) -> tuple[Units, Validation]:
    """``(all units, validation set)`` from a ``build_units`` directory."""
    d = Path(units_dir)
    for name in ("tokens.npy", "offsets.npy", "validation.npy", "validation.json", "units.jsonl"):
        if not (d / name).exists():
            raise InputError(d / name, "file not found (run the exp3_units stage)")
    meta = [rec for _, rec in iter_jsonl(d / "units.jsonl")]
    units = Units(np.load(d / "tokens.npy"), np.load(d / "offsets.npy"), meta)
    if len(units.offsets) != len(meta) + 1:
        raise InputError(d / "offsets.npy", f"{len(units.offsets)} offsets for {len(meta)} units")
    val = np.load(d / "validation.npy")
    spans = {g: (int(a), int(b)) for g, (a, b) in json.loads((d / "validation.json").read_text())["spans"].items()}
    if spans and (min(a for a, _ in spans.values()) < 0 or max(b for _, b in spans.values()) > len(val)):
        raise InputError(d / "validation.json", f"spans {spans} outside the {len(val)} validation tokens")
    return units, Validation(val, spans)
