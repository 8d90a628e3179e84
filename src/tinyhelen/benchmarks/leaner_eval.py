"""Leaner-Eval (stage ``leaner_eval``): simple questions binned by their similarity to the instruction data.

``replay`` writes the released questions with their released bin and our ``similarity``. The live backends
(``openai``, ``local``) ask the model for new simple questions from random seed examples (the released
questions), deduplicate them (exact after normalisation, then near-duplicates by TF-IDF cosine against seeds
and kept questions) and bin them by ``similarity``. Generation requests whose reply fails the parser are
dropped with their reason (a share above ``llm.max_quarantine_share`` fails the stage); an outage fails it.

**Similarity (0-10)** of a question to the instruction-tuning data: ``10 x`` the maximum cosine similarity
between the question's TF-IDF vector and those of the instruction prompts (word 1-2-grams, lowercased,
sublinear tf, IDF fitted on the instruction prompts). Offline, the instruction data are the prompts of the
code genre (``parts.prompt`` in ``data/prepared/corpus/ori/train.jsonl``); the study used alpaca-cleaned.
Bins: ``0-7`` (< 7), ``7-8``, ``8-9``, ``9-10`` (>= 9).
"""
from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from tinyhelen import timing
from tinyhelen.config import Section
from tinyhelen.data import EVAL_BINS, read_docs
from tinyhelen.io import InputError, iter_jsonl, write_jsonl
from tinyhelen.llm import ChatClient, ChatRequest, LLMConfig, quarantine_gate
from tinyhelen.llm.prompts import load_template, strip_end_marker
from tinyhelen.llm.provenance import answered_model, stage_provenance

log = logging.getLogger(__name__)


class LeanerEvalConfig(Section):
    """``leaner_eval:`` section of params.yaml."""

    n_requests: int = Field(20, ge=1)              # openai: generation calls
    questions_per_request: int = Field(10, ge=1)
    examples_per_request: int = Field(5, ge=1)     # seed questions shown per call (random, seeded)
    near_dup_threshold: float = Field(0.8, gt=0, le=1)  # TF-IDF cosine at or above which a question is a near duplicate
    inner_comparison_size: int = Field(31, ge=0)
    reference_genre: str = "code"                  # instruction data: parts.prompt of this genre's ori train docs
    prompt_version: int | None = None
    bin_edges: list[float] = Field(default_factory=lambda: [7.0, 8.0, 9.0])  # similarity edges of 0-7|7-8|8-9|9-10

    @field_validator("bin_edges")
    @classmethod
    def _edges(cls, v: list[float]) -> list[float]:
        if len(v) != 3 or not 0 <= v[0] < v[1] < v[2] <= 10:
            raise ValueError("needs 3 increasing edges within 0-10 (for bins 0-7, 7-8, 8-9, 9-10)")
        return v


class Similarity:
    """``10 x max cosine`` of TF-IDF vectors (word 1-2-grams) between texts and the reference prompts."""

    def __init__(self, reference: list[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not reference:
            raise ValueError("similarity needs a non-empty reference (instruction) set")
        self.vec = TfidfVectorizer(lowercase=True, ngram_range=(1, 2), sublinear_tf=True,
                                   token_pattern=r"(?u)\b\w+\b", dtype=np.float64)
        self.ref = self.vec.fit_transform(reference)

    def scores(self, texts: list[str], block: int = 512) -> np.ndarray:
        out = np.zeros(len(texts))
        for i in range(0, len(texts), block):
            q = self.vec.transform(texts[i:i + block])
            out[i:i + block] = (q @ self.ref.T).max(axis=1).toarray().ravel()
        return np.round(10 * out, 4)


def bin_of(sim: float, edges: list[float] | tuple[float, ...] = (7.0, 8.0, 9.0)) -> str:
    """Bin label of a similarity; the labels keep the released names whatever the edges are."""
    a, b, c = edges
    return "0-7" if sim < a else "7-8" if sim < b else "8-9" if sim < c else "9-10"


def reference_prompts(shard: Path | str, genre: str = "code") -> list[str]:
    out = [d["parts"]["prompt"] for d in read_docs(shard, [genre]) if d.get("parts")]
    if not out:
        raise InputError(shard, f"no {genre} documents with parts.prompt (instruction reference for similarity)")
    return out


def normalise_q(q: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", q.lower()))


def parse_questions(n: int):
    def parse(text: str) -> list[str]:
        body = strip_end_marker(text)
        qs = [m.group(1).strip() for ln in body.splitlines() if (m := re.match(r"^\s*\d+[.)]\s+(.*\S)\s*$", ln))]
        if len(qs) < max(1, n // 2):
            raise ValueError(f"expected a numbered list of {n} questions, found {len(qs)}")
        return qs

    return parse


def dedupe(candidates: list[str], seeds: list[str], threshold: float) -> tuple[list[str], list[dict[str, Any]]]:
    """Drop exact duplicates (after normalisation) and near duplicates (TF-IDF word 1-2-gram cosine >=
    threshold) of seeds or of earlier kept candidates. Returns (kept, dropped records)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    dropped: list[dict[str, Any]] = []
    seen = {normalise_q(s): "copied_example" for s in seeds}
    exact_kept = []
    for q in candidates:
        k = normalise_q(q)
        if not k:
            dropped.append({"question": q, "reason": "empty"})
        elif k in seen:
            dropped.append({"question": q, "reason": seen[k] if seen[k] == "copied_example" else "exact_duplicate"})
        else:
            seen[k] = "generated"
            exact_kept.append(q)
    if not exact_kept:
        return [], dropped
    vec = TfidfVectorizer(lowercase=True, ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b")
    m = vec.fit_transform(seeds + exact_kept)
    s_m, c_m = m[: len(seeds)], m[len(seeds):]
    to_seed = (c_m @ s_m.T).max(axis=1).toarray().ravel() if len(seeds) else np.zeros(len(exact_kept))
    kept_idx: list[int] = []
    for i, q in enumerate(exact_kept):
        if to_seed[i] >= threshold:
            dropped.append({"question": q, "reason": "near_duplicate", "cosine": round(float(to_seed[i]), 4)})
            continue
        if kept_idx:
            c = (c_m[i] @ c_m[kept_idx].T).toarray().ravel()
            if c.max() >= threshold:
                dropped.append({"question": q, "reason": "near_duplicate", "cosine": round(float(c.max()), 4)})
                continue
        kept_idx.append(i)
    return [exact_kept[i] for i in kept_idx], dropped


def qid_of(q: str) -> str:
    return hashlib.sha256(q.encode("utf-8")).hexdigest()


def _generate(cfg: LeanerEvalConfig, llm: LLMConfig, seeds: list[str], seed: int,
              llm_metrics_path: Path | str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any],
                                                            dict[str, Any], int]:
    """New questions from the LLM, deduplicated: (questions, dropped, LLM metrics, provenance, requests).
    Raises ``LLMFailure`` on an outage or when more than ``llm.max_quarantine_share`` requests failed."""
    tpl = load_template("eval_generate", cfg.prompt_version)
    client = ChatClient(llm, metrics_path=llm_metrics_path, timing_key="llm_eval")
    reqs = []
    for i in range(cfg.n_requests):
        ex = random.Random(seed * 1_000_003 + i).sample(seeds, min(cfg.examples_per_request, len(seeds)))
        reqs.append(ChatRequest(f"eval-{i:05d}", tpl.render(examples="\n".join(f"- {q}" for q in ex),
                                                             n=str(cfg.questions_per_request)),
                                tpl.template_id, parse_questions(cfg.questions_per_request)))
    results = client.run(reqs)
    failed = [r for r in results if not r.ok]
    provenance = stage_provenance(llm, results, [tpl.template_id], client.decoding())
    gate = quarantine_gate(len(failed), len(results), llm, "leaner_eval",
                           dict(Counter(f"llm_{r.reason}" for r in failed)), provenance)
    cands = [q for r in results if r.ok for q in r.parsed]
    dropped = [{"question": None, "reason": f"llm_{r.reason}", "details": r.error, "request": r.custom_id}
               for r in failed]
    kept, dd = dedupe(cands, seeds, cfg.near_dup_threshold)
    dropped += dd
    source = f"{answered_model(provenance)}:{tpl.template_id}"
    allq = [{"qid": qid_of(q), "question": q, "source": source, "bin": None} for q in kept]
    llm_metrics = {**client.metrics(), "template": tpl.template_id, "candidates": len(cands), "quarantine_gate": gate}
    return allq, dropped, llm_metrics, provenance, len(reqs)


def _score(sim: Similarity, cfg: LeanerEvalConfig, allq: list[dict[str, Any]], inner: list[dict[str, Any]]
           ) -> np.ndarray:
    """Set every question's ``similarity`` and (where it has none) its ``bin``; returns the scores of ``allq``."""
    scores = sim.scores([q["question"] for q in allq]) if allq else np.zeros(0)
    bins_by_qid = {}
    for q, s in zip(allq, scores):
        q["similarity"] = float(s)
        if q.get("bin") is None:  # generated (or released without a bin): bin by our similarity
            q["bin"] = bin_of(float(s), cfg.bin_edges)
        bins_by_qid[q["qid"]] = q["bin"]
    inner_scores = sim.scores([q["question"] for q in inner]) if inner else np.zeros(0)
    for q, s in zip(inner, inner_scores):
        q["similarity"] = float(s)
        q["bin"] = bins_by_qid.get(q["qid"]) or bin_of(float(s), cfg.bin_edges)
    return scores


def _released_agreement(cfg: LeanerEvalConfig, allq: list[dict[str, Any]]) -> dict[str, float]:
    """How well our similarity reproduces the released bins: Spearman rho and the share of equal bins."""
    from scipy.stats import spearmanr

    order = {b: i for i, b in enumerate(EVAL_BINS)}
    rel = [order[q["bin"]] for q in allq if q["bin"] in order]
    ours = [q["similarity"] for q in allq if q["bin"] in order]
    rho = spearmanr(rel, ours).statistic if len(set(rel)) > 1 else float("nan")
    return {"released_bin_spearman": round(float(rho), 4),
            "bin_agreement": round(sum(bin_of(q["similarity"], cfg.bin_edges) == q["bin"] for q in allq) / len(allq), 4)}


def leaner_eval(cfg: LeanerEvalConfig, llm: LLMConfig, prepared_eval: Path | str, reference_shard: Path | str,
                out_dir: Path | str, quarantine_path: Path | str, seed: int = 1234,
                llm_metrics_path: Path | str | None = None) -> dict[str, Any]:
    """Write ``out_dir/all.jsonl`` and ``out_dir/inner_comparison.jsonl``; return the metrics. Raises
    ``LLMFailure`` (before writing anything) on an outage or too many content failures."""
    t0 = time.monotonic()
    prepared_eval, out_dir = Path(prepared_eval), Path(out_dir)
    sim = Similarity(reference_prompts(reference_shard, cfg.reference_genre))
    released = [r for _, r in iter_jsonl(prepared_eval / "all.jsonl")]
    llm_metrics: dict[str, Any] = {}
    provenance = stage_provenance(llm)
    dropped: list[dict[str, Any]] = []
    n_requests = 0
    if llm.backend == "replay":
        allq = released
        inner = [r for _, r in iter_jsonl(prepared_eval / "inner_comparison.jsonl")]
    else:
        allq, dropped, llm_metrics, provenance, n_requests = _generate(
            cfg, llm, [r["question"] for r in released], seed, llm_metrics_path)
        rng = random.Random(seed)
        inner = [dict(q) for q in rng.sample(allq, min(cfg.inner_comparison_size, len(allq)))] if allq else []
    scores = _score(sim, cfg, allq, inner)
    keys = ["qid", "question", "source", "bin", "similarity"]
    write_jsonl(out_dir / "all.jsonl", ({k: q.get(k) for k in keys} for q in allq))
    write_jsonl(out_dir / "inner_comparison.jsonl", ({k: q.get(k) for k in keys} for q in inner))
    write_jsonl(quarantine_path, dropped)
    computed = Counter(bin_of(float(s), cfg.bin_edges) for s in scores)
    metrics: dict[str, Any] = {
        "backend": llm.backend, "questions": len(allq), "inner_comparison": len(inner),
        "bins": {b: sum(q["bin"] == b for q in allq) for b in EVAL_BINS},
        "similarity_bins": {b: computed.get(b, 0) for b in EVAL_BINS},
        "similarity_mean": round(float(scores.mean()), 4) if len(scores) else 0.0,
        "dropped": len(dropped), "dropped_reasons": dict(Counter(d["reason"] for d in dropped)),
        "llm": llm_metrics, "provenance": provenance,
    }
    if llm.backend == "replay" and len(scores):
        metrics.update(_released_agreement(cfg, allq))
    secs = time.monotonic() - t0
    timing.record(leaner_eval={"seconds": round(secs, 3), "llm_requests": n_requests,
                               "llm_requests_per_s": round(n_requests / secs, 4) if n_requests else 0.0})
    log.info("leaner_eval: %d questions, %d dropped, bins %s", len(allq), len(dropped), metrics["bins"])
    return metrics
