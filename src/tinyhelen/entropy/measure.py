"""Entropy and vocabulary statistics of the two corpus sides: counting, samples, settings and scopes
(the ``entropy`` stage; definitions in ``tinyhelen.entropy``)."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator
from tqdm import tqdm

from tinyhelen.config import Section, check_subset
from tinyhelen.data import GENRES, NATURAL_GENRES
from tinyhelen.entropy.words import sentence_lengths, word_tokens_bytes

log = logging.getLogger(__name__)


class EntropyConfig(Section):
    """``entropy:`` section of params.yaml."""

    max_n: int = Field(4, ge=1, le=8)
    top_k: int = Field(2000, ge=1)
    splits: list[str] = Field(default_factory=lambda: ["train", "validation"])
    genres: list[str] = Field(default_factory=lambda: ["book", "code", "conversation", "textbook", "web", "wiki"])
    pooled_genres: list[str] = Field(default_factory=lambda: list(NATURAL_GENRES))

    @field_validator("genres", "pooled_genres")
    @classmethod
    def _genres(cls, v: list[str]) -> list[str]:
        return check_subset(v, GENRES, "genre")


# ----------------------------------------------------------------------------------------- counting
def entropy_bits(counts: np.ndarray | Sequence[int]) -> float:
    """Shannon entropy (bits) of a distribution given by counts."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    if c.size == 0:
        return 0.0
    n = c.sum()
    return float(math.log2(n) - (c * np.log2(c)).sum() / n)


def ngram_counts(docs: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Counts of distinct n-grams over documents of integer ids (n-grams never cross documents).

    n-grams are packed exactly into uint64 when ``n * bits(vocab) <= 64``, otherwise combined with a
    64-bit multiplicative hash (collision probability ~ N^2 / 2^64: negligible for corpora below 1e8)."""
    docs = [d for d in docs if len(d) >= n]
    if not docs:
        return np.zeros(0, dtype=np.int64)
    ids = np.concatenate(docs).astype(np.uint64)
    lens = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    ends = np.cumsum(lens)
    starts = ends - lens
    valid = np.ones(ids.size, dtype=bool)
    for k in range(1, n):  # the last n-1 positions of each document cannot start an n-gram
        valid[ends - k] = False
    m = ids.size - n + 1
    bits = max(1, int(ids.max()).bit_length())
    key = ids[:m].copy()
    with np.errstate(over="ignore"):
        if n * bits <= 64:
            for k in range(1, n):
                key = (key << np.uint64(bits)) | ids[k:k + m]
        else:
            mult = np.uint64(0x9E3779B97F4A7C15)
            for k in range(1, n):
                key = (key * mult) ^ (ids[k:k + m] + np.uint64(k))
    del starts
    key = key[valid[:m]]
    _, counts = np.unique(key, return_counts=True)
    return counts


@dataclass
class Sample:
    """Token id sequences of one corpus scope (side x genre set), with their document ids and, for word
    samples, each document's sentence lengths (word tokens per sentence, in order)."""

    docs: list[np.ndarray]
    ids: list[str] = field(default_factory=list)
    sents: list[np.ndarray] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return int(sum(len(d) for d in self.docs))

    @property
    def n_sentences(self) -> int:
        return int(sum(len(s) for s in self.sents))

    @property
    def n_sentence_words(self) -> int:
        return int(sum(int(s.sum()) for s in self.sents))

    def add(self, doc_id: str, tokens: np.ndarray, sents: np.ndarray | None = None) -> None:
        self.ids.append(doc_id)
        self.docs.append(tokens)
        if sents is not None:
            self.sents.append(sents)

    def extend(self, other: "Sample") -> None:
        self.ids += other.ids
        self.docs += other.docs
        self.sents += other.sents


def cut_sentences(lengths: np.ndarray, n: int) -> np.ndarray:
    """Sentence lengths of a document's first ``n`` word tokens, given the lengths of all its sentences:
    the sentences that end within them, and the one they cut (with the words before the cut)."""
    ends = np.cumsum(lengths)
    k = int(np.searchsorted(ends, n, side="left"))  # the sentence in which token n ends
    if k >= len(lengths):
        return lengths
    out = lengths[:k + 1].copy()
    out[k] = n - (ends[k - 1] if k else 0)
    return out[out > 0]


def equalise(a: Sample, b: Sample) -> tuple[Sample, Sample]:
    """Equal token budgets: keep the documents both samples share and cut each pair of twins to the
    shorter twin's length, so both sides contribute the same documents and the same number of tokens.
    Sentence lengths (word samples) are those of the cut documents."""
    bi = {d: i for i, d in enumerate(b.ids)}
    out_a, out_b = Sample([]), Sample([])
    for i, doc_id in enumerate(a.ids):
        j = bi.get(doc_id)
        if j is None:
            continue
        n = min(len(a.docs[i]), len(b.docs[j]))
        out_a.add(doc_id, a.docs[i][:n], cut_sentences(a.sents[i], n) if a.sents else None)
        out_b.add(doc_id, b.docs[j][:n], cut_sentences(b.sents[j], n) if b.sents else None)
    return out_a, out_b


class Vocab:
    """Maps tokens (str or bytes) to dense integer ids."""

    def __init__(self) -> None:
        self.ids: dict = {}

    def encode(self, toks: Iterable) -> np.ndarray:
        ids = self.ids
        return np.fromiter((ids.setdefault(t, len(ids)) for t in toks), dtype=np.int64)


def miller_madow(counts: np.ndarray) -> float:
    """Miller-Madow bias correction (bits) of the plug-in entropy of ``counts``: ``(K - 1) / (2 N ln 2)``."""
    n = float(np.asarray(counts).sum())
    return (np.asarray(counts).size - 1) / (2 * n * math.log(2)) if n else 0.0


def ngram_stats(sample: Sample, max_n: int, prefix: str) -> dict[str, float]:
    """``<prefix>H<n>`` (plug-in), ``<prefix>h<n>`` (conditional), ``<prefix>H<n>_mm`` and ``<prefix>h<n>_mm``
    (Miller-Madow) for n = 1..max_n."""
    out: dict[str, float] = {}
    prev = prev_mm = 0.0
    for n in range(1, max_n + 1):
        counts = ngram_counts(sample.docs, n)
        h = entropy_bits(counts)
        mm = h + miller_madow(counts)
        out[f"{prefix}H{n}"] = round(h, 4)
        out[f"{prefix}h{n}"] = round(h - prev, 4)
        out[f"{prefix}H{n}_mm"] = round(mm, 4)
        out[f"{prefix}h{n}_mm"] = round(mm - prev_mm, 4)
        prev, prev_mm = h, mm
    return out


def word_stats(sample: Sample, top_k: int) -> dict[str, float]:
    uni = ngram_counts(sample.docs, 1)
    n = int(uni.sum())
    top = np.sort(uni)[::-1][:top_k].sum() if n else 0
    return {"tokens": n, "vocab": int(uni.size), "ttr": round(uni.size / n, 5) if n else 0.0,
            f"top{top_k}_coverage": round(float(top) / n, 5) if n else 0.0}


# ----------------------------------------------------------------------------------------- the stage
def scope_samples(docs: Iterable[dict[str, Any]], cfg: EntropyConfig, bpe=None
                  ) -> tuple[dict[str, Sample], dict[str, Sample]]:
    """Word and BPE samples of every genre in ``genres`` or ``pooled_genres``. Returns (word, bpe)."""
    vocab = Vocab()
    wanted = set(cfg.genres) | set(cfg.pooled_genres)
    word: dict[str, Sample] = {}
    sub: dict[str, Sample] = {}
    for rec in docs:
        g = rec["genre"]
        if g not in wanted:
            continue
        text = rec["text"]
        word.setdefault(g, Sample([])).add(rec["doc_id"], vocab.encode(word_tokens_bytes(text)),
                                           np.asarray(sentence_lengths(text), dtype=np.int64))
        if bpe is not None:
            sub.setdefault(g, Sample([])).add(rec["doc_id"], np.asarray(bpe(text), dtype=np.int64))
    return word, sub


def pool(samples: dict[str, tuple[dict[str, Sample], dict[str, Sample]]], cfg: EntropyConfig
         ) -> dict[str, Any]:
    """Add the ``pooled`` scope to every side's samples: the pooled genres with documents on every side.
    Returns the coverage: the genres pooled, and each genre dropped from the pooled figures or from the
    per-genre scopes with the reason (``{"pooled_genres": [...], "dropped": {genre: reason}}``)."""
    sides = list(samples)
    dropped: dict[str, str] = {}
    for g in dict.fromkeys([*cfg.pooled_genres, *cfg.genres]):
        empty = [side for side in sides if g not in samples[side][0]]
        if empty:
            where = "either side" if len(empty) == len(sides) > 1 else f"the {' and '.join(empty)} side"
            dropped[g] = f"no documents on {where}"
    used = [g for g in cfg.pooled_genres if g not in dropped]
    for side in sides:
        for kind in samples[side]:
            if all(g in kind for g in used) and used:
                pooled = Sample([])
                for g in used:
                    pooled.extend(kind[g])
                kind["pooled"] = pooled
    for g, why in dropped.items():
        log.warning("entropy: genre %r %s: %s", g, "drops out of the pooled figures" if g in cfg.pooled_genres
                    else "has no per-genre figures", why)
    return {"pooled_genres": used, "dropped": dropped}


def side_stats(word: Sample, bpe: Sample | None, cfg: EntropyConfig) -> dict[str, float]:
    st = word_stats(word, cfg.top_k)
    st["mean_sentence_len"] = round(word.n_sentence_words / word.n_sentences, 3) if word.n_sentences else 0.0
    st.update(ngram_stats(word, cfg.max_n, "word_"))
    if bpe is not None:
        st["bpe_tokens"] = bpe.n_tokens
        st.update(ngram_stats(bpe, cfg.max_n, "bpe_"))
    return st


def compare(samples: dict[str, tuple[dict[str, Sample], dict[str, Sample]]], cfg: EntropyConfig
            ) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """samples: side -> (word samples, bpe samples). Returns setting -> scope -> side -> stats."""
    sides = list(samples)
    scopes = [s for s in ["pooled", *cfg.genres] if all(s in samples[side][0] for side in sides)]
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {"paired": {}, "equal_budget": {}}
    for scope in scopes:
        w = {side: samples[side][0][scope] for side in sides}
        b = {side: samples[side][1].get(scope) for side in sides}
        out["paired"][scope] = {side: side_stats(w[side], b[side], cfg) for side in sides}
        if len(sides) != 2:
            continue
        s0, s1 = sides
        w0, w1 = equalise(w[s0], w[s1])
        b0, b1 = equalise(b[s0], b[s1]) if all(b.values()) else (None, None)
        out["equal_budget"][scope] = {s0: side_stats(w0, b0, cfg), s1: side_stats(w1, b1, cfg)}
    return out


@dataclass
class EntropyRun:
    results: dict[str, Any]   # setting -> scope -> side -> figures
    coverage: dict[str, Any]  # genres pooled, genres dropped (with the reason)
    perf: dict[str, float]    # wall-clock figures (tinyhelen.timing, never in the metrics)


def run(shards: dict[str, list[Path]], tokenizers: dict[str, Any] | None, cfg: EntropyConfig) -> EntropyRun:
    """shards: side -> prepared shard paths."""
    from tinyhelen.data import read_docs

    t0 = time.time()
    samples = {}
    n_words = 0
    for side, paths in shards.items():
        tok = (tokenizers or {}).get(side)
        enc = (lambda t, _tok=tok: _tok(t, add_special_tokens=False)["input_ids"]) if tok is not None else None
        docs = tqdm((rec for p in paths for rec in read_docs(p)), desc=f"entropy[{side}]", unit="doc",
                    mininterval=2.0, disable=None)
        samples[side] = scope_samples(docs, cfg, enc)
    coverage = pool(samples, cfg)
    for side in samples:
        if "pooled" in samples[side][0]:
            n_words += samples[side][0]["pooled"].n_tokens
    t_tok = time.time() - t0
    res = compare(samples, cfg)
    secs = time.time() - t0
    perf = {"seconds": round(secs, 2), "tokenize_seconds": round(t_tok, 2),
            "word_tokens": n_words, "word_tokens_per_s": round(n_words / max(secs, 1e-9))}
    log.info("entropy: %s", perf)
    return EntropyRun(res, coverage, perf)
