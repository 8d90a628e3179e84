"""Entropy and vocabulary statistics of a corpus side (the ``entropy`` stage).

Definitions (also in README, "Entropy metrics"):

* **word tokens**: lowercased maximal runs of letters/digits, internal apostrophes kept
  (``don't`` and ``don\u2019t`` are one token, ``'quoted'`` gives ``quoted``); a literal backslash-n is
  read as a newline. Regex: ``[^\\W_]+(?:['\u2019][^\\W_]+)*`` over the lowercased text.
* **BPE tokens**: ids from that side's own 2K byte-level BPE tokenizer (what the models see).
* **n-gram entropy** ``H_n`` (bits per n-gram): Shannon entropy of the empirical distribution of
  n-grams, ``H_n = -sum_g p(g) log2 p(g)``, n-grams counted inside documents (never across a boundary).
* **conditional entropy** ``h_n = H_n - H_{n-1}`` (bits per token; ``h_1 = H_1``): the uncertainty of a
  token given the n-1 before it, as estimated from the same counts.
* **vocabulary**: number of distinct word types; **TTR** (type-token ratio): types / tokens;
  **top-k coverage**: share of word tokens that belong to the k most frequent types (k = 2000).
* **mean sentence length**: word tokens per sentence; sentences end at ``.``, ``!``, ``?`` (runs) or at a
  newline; sentences with no word token are not counted.
* **settings**: ``paired`` uses every selected document on both sides (same documents, paired by hash);
  ``equal_budget`` cuts each pair of twin documents to the shorter twin's length (in that token kind), so
  both sides contribute the same documents and exactly the same number of tokens: entropy and vocabulary
  estimates grow with sample size, and leaner text is shorter.
"""
from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator
from tqdm import tqdm

from tinyhelen.config import Section, check_subset
from tinyhelen.data import GENRES, NATURAL_GENRES

log = logging.getLogger(__name__)

WORD_RE = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")  # the definition (reference implementation)
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")
_SENT_RE = re.compile(r"[.!?]+|\n")
# Fast path: bytes kept are a-z, 0-9, the apostrophe, 0x01 (stands for U+2019 while tokenising) and every
# byte >= 0x80 (after folding, only letters/digits remain outside ASCII, so high bytes belong to words).
_KEEP = set(b"abcdefghijklmnopqrstuvwxyz0123456789'\x01") | set(range(0x80, 0x100))
_TRANS = bytes(c if c in _KEEP else 0x20 for c in range(256))
_RSQUO = "\u2019".encode()
_APOS_PAIRS = (b"''", b"'\x01", b"\x01'", b"\x01\x01")


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


def _fold_char(m: re.Match) -> str:
    c = m.group(0)
    return c if c.isalnum() else ("\x01" if c == "\u2019" else " ")


def _drop_outer_apostrophes(b: bytes) -> bytes:
    """Blank every apostrophe that is not between two word bytes (the regex's ``(?:'word)*`` rule)."""
    b = b" " + b + b" "
    for pair in _APOS_PAIRS:  # runs of apostrophes are never internal
        while pair in b:
            b = b.replace(pair, b"  ")
    for pat in (b" '", b" \x01", b"' ", b"\x01 "):
        b = b.replace(pat, b"  ")
    return b


def word_tokens_bytes(text: str) -> list[bytes]:
    """Word tokens as UTF-8 bytes; exactly ``WORD_RE.findall`` on the lowercased text, ~5x faster.

    Non-ASCII characters that are not letters/digits are folded to a space by a regex that only visits
    non-ASCII characters; one ``bytes.translate`` maps every other separator to a space; apostrophes that
    are not internal are blanked with a few ``bytes.replace`` passes; ``split`` does the rest."""
    text = text.replace("\\n", "\n").lower()
    if "\x01" in text:
        text = text.replace("\x01", " ")
    if not text.isascii():
        text = _NON_ASCII_RE.sub(_fold_char, text)
    b = text.encode().translate(_TRANS)
    if 39 not in b and 1 not in b:
        return b.split()
    b = _drop_outer_apostrophes(b)
    if 1 not in b:
        return b.split()
    return [t.replace(b"\x01", _RSQUO) if 1 in t else t for t in b.split()]


def word_tokens(text: str) -> list[str]:
    """Word tokens as defined in the module docstring."""
    return [t.decode() for t in word_tokens_bytes(text)]


def sentence_lengths(text: str) -> list[int]:
    """Word tokens per sentence (sentences with at least one word)."""
    text = text.replace("\\n", "\n")
    return [n for s in _SENT_RE.split(text) if (n := len(word_tokens(s)))]


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
    """Token id sequences of one corpus scope (side x genre set), with their document ids."""

    docs: list[np.ndarray]
    ids: list[str] = field(default_factory=list)
    n_sentences: int = 0
    n_sentence_words: int = 0

    @property
    def n_tokens(self) -> int:
        return int(sum(len(d) for d in self.docs))

    def add(self, doc_id: str, tokens: np.ndarray) -> None:
        self.ids.append(doc_id)
        self.docs.append(tokens)


def equalise(a: Sample, b: Sample) -> tuple[Sample, Sample]:
    """Equal token budgets: keep the documents both samples share and cut each pair of twins to the
    shorter twin's length, so both sides contribute the same documents and the same number of tokens."""
    bi = {d: i for i, d in enumerate(b.ids)}
    out_a, out_b = Sample([]), Sample([])
    for i, doc_id in enumerate(a.ids):
        j = bi.get(doc_id)
        if j is None:
            continue
        n = min(len(a.docs[i]), len(b.docs[j]))
        out_a.add(doc_id, a.docs[i][:n])
        out_b.add(doc_id, b.docs[j][:n])
    out_a.n_sentences, out_a.n_sentence_words = a.n_sentences, a.n_sentence_words
    out_b.n_sentences, out_b.n_sentence_words = b.n_sentences, b.n_sentence_words
    return out_a, out_b


class Vocab:
    """Maps tokens (str or bytes) to dense integer ids."""

    def __init__(self) -> None:
        self.ids: dict = {}

    def encode(self, toks: Iterable) -> np.ndarray:
        ids = self.ids
        return np.fromiter((ids.setdefault(t, len(ids)) for t in toks), dtype=np.int64)


def ngram_stats(sample: Sample, max_n: int, prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    prev = 0.0
    for n in range(1, max_n + 1):
        h = entropy_bits(ngram_counts(sample.docs, n))
        out[f"{prefix}H{n}"] = round(h, 4)
        out[f"{prefix}h{n}"] = round(h - prev, 4)
        prev = h
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
    """Build word and BPE samples for every genre and for ``pooled``. Returns (word, bpe)."""
    vocab = Vocab()
    word: dict[str, Sample] = {}
    sub: dict[str, Sample] = {}
    for rec in docs:
        g = rec["genre"]
        scopes = ([g] if g in cfg.genres else []) + (["pooled"] if g in cfg.pooled_genres else [])
        if not scopes:
            continue
        text = rec["text"]
        wid = vocab.encode(word_tokens_bytes(text))
        sl = sentence_lengths(text)
        bid = np.asarray(bpe(text), dtype=np.int64) if bpe is not None else None
        for s in scopes:
            w = word.setdefault(s, Sample([]))
            w.add(rec["doc_id"], wid)
            w.n_sentences += len(sl)
            w.n_sentence_words += sum(sl)
            if bid is not None:
                sub.setdefault(s, Sample([])).add(rec["doc_id"], bid)
    return word, sub


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


def run(shards: dict[str, list[Path]], tokenizers: dict[str, Any] | None, cfg: EntropyConfig
        ) -> tuple[dict[str, Any], dict[str, float]]:
    """shards: side -> prepared shard paths. Returns (full results, throughput info)."""
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
        if "pooled" in samples[side][0]:
            n_words += samples[side][0]["pooled"].n_tokens
    t_tok = time.time() - t0
    res = compare(samples, cfg)
    secs = time.time() - t0
    perf = {"seconds": round(secs, 2), "tokenize_seconds": round(t_tok, 2),
            "word_tokens": n_words, "word_tokens_per_s": round(n_words / max(secs, 1e-9))}
    log.info("entropy: %s", perf)
    return res, perf


def summary(res: dict[str, Any], max_n: int, top_k: int) -> dict[str, Any]:
    """The compact DVC metrics: pooled figures per setting and side."""
    keys = ["tokens", "vocab", "ttr", f"top{top_k}_coverage", "mean_sentence_len", "bpe_tokens"]
    keys += [f"word_H{n}" for n in range(1, max_n + 1)] + [f"bpe_H{n}" for n in range(1, max_n + 1)]
    out: dict[str, Any] = {}
    for setting, scopes in res.items():
        if "pooled" not in scopes:
            continue
        out[setting] = {side: {k: st[k] for k in keys if k in st} for side, st in scopes["pooled"].items()}
    return out


def leaner_vs_ori(res: dict[str, Any], max_n: int) -> dict[str, Any]:
    """Pooled n-gram entropies H_1..H_max_n (word and BPE): is leaner below ori on each?

    Returns per setting the figures where leaner is NOT below ori (empty list = below on every figure)."""
    out: dict[str, Any] = {}
    figs = [f"{k}_H{n}" for k in ("word", "bpe") for n in range(1, max_n + 1)]
    for setting, scopes in res.items():
        sides = scopes.get("pooled", {})
        if {"leaner", "ori"} <= set(sides):
            lo, ori = sides["leaner"], sides["ori"]
            present = [f for f in figs if f in lo and f in ori]
            out[setting] = {"figures": len(present),
                            "leaner_not_below": [f for f in present if not lo[f] < ori[f]]}
    return out


def markdown(res: dict[str, Any], max_n: int, top_k: int) -> str:
    lines = ["# Entropy and vocabulary: leaner vs original", ""]
    cols = ["tokens", "vocab", "ttr", f"top{top_k}_coverage", "mean_sentence_len"]
    cols += [f"word_H{n}" for n in range(1, max_n + 1)] + [f"bpe_H{n}" for n in range(1, max_n + 1)]
    for setting, scopes in res.items():
        lines += [f"## {setting}", "", "| scope | side | " + " | ".join(cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for scope, sides in scopes.items():
            for side, st in sides.items():
                lines.append(f"| {scope} | {side} | " + " | ".join(str(st.get(c, "")) for c in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_rows(res: dict[str, Any], max_n: int) -> list[dict[str, Any]]:
    """Rows for the DVC plot: n-gram order vs pooled entropy per side and token kind (paired setting)."""
    pooled = res.get("paired", {}).get("pooled", {})
    rows = []
    for n in range(1, max_n + 1):
        row: dict[str, Any] = {"n": n}
        for side, st in pooled.items():
            row[f"{side}_word_H"] = st.get(f"word_H{n}")
            row[f"{side}_bpe_H"] = st.get(f"bpe_H{n}")
        rows.append(row)
    return rows


def plot_png(rows: list[dict[str, Any]], path: Path | str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinyhelen.io import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    ns = [r["n"] for r in rows]
    for ax, kind in zip(axes, ("word", "bpe")):
        for side, style in (("ori", "o-"), ("leaner", "s-")):
            ys = [r.get(f"{side}_{kind}_H") for r in rows]
            if all(y is not None for y in ys):
                ax.plot(ns, ys, style, label=side)
        ax.set_title(f"{kind} n-gram entropy (pooled, paired docs)")
        ax.set_xlabel("n")
        ax.set_ylabel("bits per n-gram")
        ax.set_xticks(ns)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def count_unigrams(texts: Iterable[str]) -> Counter:
    """Word unigram counts, ``Counter[str]`` (used by the benchmark and the simplify stage's word list)."""
    c: Counter = Counter()
    for t in texts:
        c.update(word_tokens_bytes(t))
    return Counter({k.decode(): v for k, v in c.items()})
