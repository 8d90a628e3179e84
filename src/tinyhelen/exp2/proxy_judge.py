"""The offline proxy judge (``judge.backend: proxy``): clearly named proxy metrics of generated answers,
NOT LLM-judge scores (see ``tinyhelen.exp2.judge`` for what each ``proxy_*`` metric means).
"""
from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tinyhelen import timing
from tinyhelen.entropy.words import word_tokens
from tinyhelen.io import InputError

log = logging.getLogger(__name__)

PROXY_PROVENANCE = {"backend": "proxy", "source": "proxy", "configured_model": None, "models": [], "templates": [],
                    "decoding": None}
PROXY_METRICS = ("proxy_ref_ppl", "proxy_empty", "proxy_repetition", "proxy_distinct_1", "proxy_distinct_2",
                 "proxy_q_overlap", "proxy_len_words")
# the answer statistics reported per recipe whatever the judge backend (``base_record`` computes them)
ANSWER_STATS = ("proxy_empty", "proxy_distinct_2", "proxy_repetition", "proxy_q_overlap")
STOPWORDS = frozenset("""a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so some
such than that the their theirs them themselves then there these they this those through to too under until
up very was we were what when where which while who whom why will with would you your yours yourself
yourselves tell describe explain imagine think would like""".split())


class ProxyConfig(BaseModel):
    """``judge.proxy``: the reference LM of the proxy metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ref_corpora: list[str] = Field(default_factory=lambda: ["data/prepared/corpus/leaner/train.jsonl",
                                                            "data/prepared/corpus/ori/train.jsonl"])
    ref_genres: list[str] = Field(default_factory=lambda: ["book", "conversation", "textbook", "web", "wiki"])
    ref_max_words: int | None = Field(1_000_000, ge=1, description="words per corpus file (null = all)")
    discount: float = Field(0.75, gt=0, lt=1, description="Kneser-Ney absolute discount")


_SENT_SPLIT = re.compile(r"[.!?]+|\n")
BOS, EOS = "<s>", "</s>"


class BigramLM:
    """Interpolated Kneser-Ney word-bigram language model with sentence boundaries and an open vocabulary.

    p(w | v) = max(c(v w) - d, 0) / c(v) + d * N1+(v .) / c(v) * p_cont(w)
    p_cont(w) = (N1+(. w) + 1) / (N1+(. .) + |V| + 1)   (add-one over the vocabulary + one unknown word)
    An unseen history uses p_cont alone."""

    def __init__(self, discount: float = 0.75):
        self.d = discount
        self.bigrams: Counter = Counter()
        self.hist: Counter = Counter()
        self.followers: Counter = Counter()    # N1+(v .)
        self.cont: Counter = Counter()         # N1+(. w)
        self.n_types = 0
        self.words = 0

    @staticmethod
    def sentences(text: str) -> list[list[str]]:
        return [w for s in _SENT_SPLIT.split(text.replace("\\n", "\n")) if (w := word_tokens(s))]

    def fit(self, texts: Iterable[str], max_words: int | None = None) -> "BigramLM":
        for text in texts:
            for sent in self.sentences(text):
                seq = [BOS, *sent, EOS]
                self.bigrams.update(zip(seq, seq[1:]))
                self.words += len(sent)
            if max_words is not None and self.words >= max_words:
                break
        return self

    def finalize(self) -> "BigramLM":
        self.hist, self.followers, self.cont = Counter(), Counter(), Counter()
        for (v, w), c in self.bigrams.items():
            self.hist[v] += c
            self.followers[v] += 1
            self.cont[w] += 1
        self.n_bigram_types = len(self.bigrams)
        self.vocab = len(self.cont)
        return self

    def logprob(self, v: str, w: str) -> float:
        pc = (self.cont.get(w, 0) + 1) / (self.n_bigram_types + self.vocab + 1)
        cv = self.hist.get(v, 0)
        if not cv:
            return math.log(pc)
        p = max(self.bigrams.get((v, w), 0) - self.d, 0) / cv + self.d * self.followers[v] / cv * pc
        return math.log(p)

    def perplexity(self, text: str) -> float:
        """Per-token perplexity (words + one end-of-sentence token per sentence). An empty text is scored
        as one empty sentence (``<s> </s>``), so every answer gets a finite value."""
        sents = self.sentences(text) or [[]]
        lp, n = 0.0, 0
        for sent in sents:
            seq = [BOS, *sent, EOS]
            for v, w in zip(seq, seq[1:]):
                lp += self.logprob(v, w)
                n += 1
        return math.exp(-lp / n)


def train_reference_lm(cfg: ProxyConfig) -> tuple[BigramLM, dict[str, Any]]:
    """The proxy reference LM, trained on the configured prepared corpora (natural-language genres)."""
    from tinyhelen.data import read_docs

    t0 = time.time()
    lm = BigramLM(cfg.discount)
    for path in cfg.ref_corpora:
        before = lm.words
        docs = (d["text"] for d in read_docs(path, cfg.ref_genres))
        lm.fit(docs, None if cfg.ref_max_words is None else before + cfg.ref_max_words)
        if lm.words == before:
            raise InputError(path, f"no words of genres {cfg.ref_genres} for the reference LM")
    lm.finalize()
    secs = time.time() - t0
    info = {"kind": "interpolated Kneser-Ney word bigram", "corpora": list(cfg.ref_corpora),
            "genres": list(cfg.ref_genres), "train_words": lm.words, "vocab": lm.vocab,
            "bigram_types": lm.n_bigram_types}
    timing.record(reference_lm={"seconds": round(secs, 3), "words_per_s": round(lm.words / max(secs, 1e-9))})
    log.info("reference LM: %s", info)
    return lm, info


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def content_words(text: str) -> set[str]:
    words = set(word_tokens(text))
    return (words - STOPWORDS) or words


def answer_stats(answer: str, question: str) -> dict[str, float]:
    """The statistics of one answer that need no reference LM (every judge backend's records carry them):
    empty, repeated 3-gram share, distinct-1/2, question overlap, length in words."""
    words = word_tokens(answer)
    tri = _ngrams(words, 3)
    seen: set = set()
    rep = 0
    for g in tri:
        rep += g in seen
        seen.add(g)
    out: dict[str, float] = {"proxy_empty": 0.0 if words else 1.0, "proxy_repetition": rep / len(tri) if tri else 0.0}
    for n in (1, 2):
        grams = _ngrams(words, n)
        out[f"proxy_distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
    q = content_words(question)
    out["proxy_q_overlap"] = len(q & set(words)) / len(q) if q else 0.0
    out["proxy_len_words"] = float(len(words))
    return out


def proxy_scores(answer: str, question: str, lm: BigramLM) -> dict[str, float | None]:
    """All proxy metrics of one answer (see the module docstring): ``answer_stats`` and the reference-LM
    perplexity."""
    stats = answer_stats(answer, question)
    return {"proxy_ref_ppl": lm.perplexity(answer) if stats["proxy_len_words"] else None, **stats}


def base_record(r: dict[str, Any]) -> dict[str, Any]:
    """The identifying fields of a generation record, copied into its score record, with its
    ``answer_stats`` (rounded): every backend reports them."""
    rec: dict[str, Any] = {k: r.get(k) for k in ("set", "qid", "bin", "recipe", "checkpoint", "step")}
    rec.update({k: round(v, 6) for k, v in answer_stats(r["answer"], r["question"]).items()})
    return rec


def judge_proxy(gens: list[dict[str, Any]], cfg: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Proxy metrics of every answer (``cfg``: the JudgeConfig); returns (score records, summary)."""
    lm, info = train_reference_lm(cfg.proxy)
    t0 = time.time()
    records = []
    for r in gens:
        rec = base_record(r)
        rec["backend"] = "proxy"
        ppl = lm.perplexity(r["answer"]) if rec["proxy_len_words"] else None
        rec["proxy_ref_ppl"] = None if ppl is None else round(ppl, 6)
        records.append(rec)
    secs = time.time() - t0
    timing.record(proxy_judge={"seconds": round(secs, 3), "answers_per_s": round(len(records) / max(secs, 1e-9), 1)})
    return records, {"backend": "proxy", "note": "proxy metrics, not LLM-judge scores", "reference_lm": info,
                     "answers": len(records), "empty_answers": int(sum(r["proxy_empty"] for r in records)),
                     "provenance": PROXY_PROVENANCE}
