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
* **Miller-Madow estimate** ``H_n^MM = H_n + (K_n - 1) / (2 N_n ln 2)`` (keys ``*_H<n>_mm``; ``h_n^MM`` the
  same differences): the plug-in ``H_n`` underestimates the entropy of the source by about
  ``(K - 1) / (2 N ln 2)`` bits, where ``K_n`` is the number of distinct n-grams observed and ``N_n`` the
  number of n-grams counted. The correction matters where ``K_n`` approaches ``N_n`` (3- and 4-grams),
  and it differs between samples of different size; it is a first-order correction and still
  underestimates badly undersampled distributions.
* **vocabulary**: number of distinct word types; **TTR** (type-token ratio): types / tokens;
  **top-k coverage**: share of word tokens that belong to the k most frequent types (k = 2000).
* **mean sentence length**: word tokens per sentence; sentences end at ``.``, ``!``, ``?`` (runs) or at a
  newline; sentences with no word token are not counted.
* **settings**: ``paired`` uses every selected document on both sides (same documents, paired by hash);
  ``equal_budget`` cuts each pair of twin documents to the shorter twin's length (in that token kind), so
  both sides contribute the same documents and exactly the same number of tokens: entropy and vocabulary
  estimates grow with sample size, and leaner text is shorter. Every figure of ``equal_budget`` is
  computed on the cut documents (mean sentence length too: the sentences of a document's first n words,
  the last one possibly cut).
* **pooled**: the genres of ``entropy.pooled_genres`` that have documents on both sides; a genre without
  documents on a side drops out of the pooled figures on both sides, and the report names it.
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


def summary(res: dict[str, Any], max_n: int, top_k: int) -> dict[str, Any]:
    """The compact DVC metrics: pooled figures per setting and side."""
    keys = ["tokens", "vocab", "ttr", f"top{top_k}_coverage", "mean_sentence_len", "bpe_tokens"]
    keys += [f"word_H{n}" for n in range(1, max_n + 1)] + [f"bpe_H{n}" for n in range(1, max_n + 1)]
    keys += [f"{kind}_{fig}{n}{mm}" for kind in ("word", "bpe") for fig, mm in (("H", "_mm"), ("h", ""), ("h", "_mm"))
             for n in range(1, max_n + 1)]
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


def markdown(res: dict[str, Any], max_n: int, top_k: int, coverage: dict[str, Any] | None = None) -> str:
    lines = ["# Entropy and vocabulary: leaner vs original", ""]
    if coverage is not None:
        lines.append(f"Pooled genres: {', '.join(coverage['pooled_genres']) or 'none'}.")
        for g, why in coverage["dropped"].items():
            lines.append(f"**Genre `{g}` is not in these figures: {why}.**")
        lines.append("")
    lines += ["H_n: plug-in n-gram entropy (bits per n-gram); MM: Miller-Madow estimate H_n + (K-1)/(2N ln 2); "
              "h_n = H_n - H_(n-1): conditional entropy (bits per token).", ""]
    cols = ["tokens", "vocab", "ttr", f"top{top_k}_coverage", "mean_sentence_len", "bpe_tokens"]
    ns = range(1, max_n + 1)
    ent = [f"H{n}" for n in ns] + [f"H{n} MM" for n in ns] + [f"h{n}" for n in ns]
    for setting, scopes in res.items():
        lines += [f"## {setting}", "", "| scope | side | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        for scope, sides in scopes.items():
            for side, st in sides.items():
                lines.append(f"| {scope} | {side} | " + " | ".join(str(st.get(c, "")) for c in cols) + " |")
        lines += ["", "| scope | side | token kind | " + " | ".join(ent) + " |", "|---|---|---|" + "---|" * len(ent)]
        for scope, sides in scopes.items():
            for side, st in sides.items():
                for kind in ("word", "bpe"):
                    if f"{kind}_H1" not in st:
                        continue
                    vals = [st.get(f"{kind}_H{n}") for n in ns] + [st.get(f"{kind}_H{n}_mm") for n in ns] \
                        + [st.get(f"{kind}_h{n}") for n in ns]
                    lines.append(f"| {scope} | {side} | {kind} | " + " | ".join(str(v) for v in vals) + " |")
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
