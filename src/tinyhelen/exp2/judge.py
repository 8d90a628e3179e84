"""EXP2 judging and report: LLM-judge scores or offline proxy metrics of the generated answers.

Judge backends (``judge.backend``) are registered once, in ``BACKENDS``: each says which metrics it
produces, its main metric, whether its scores are LLM judgements, and how it scores. The report (here and
in the report card) reads the registry.

``llm``  grammar, coherence and specificity, integers 0-5 each (sum 0-15), from an LLM through the shared
    LLM layer (``tinyhelen.llm``: cache, retries, concurrency; an outage fails the stage). Its endpoint and
    model are ``judge.llm`` (each key null = the ``llm`` section's value; ``llm.backend: replay`` means
    ``openai`` here, since no judge replies were released), so changing the judge model reruns only the
    judge. The default prompt (``prompts/judge/v2.txt``) follows the study's judging protocol: anchored
    levels 0-5, lenient scoring that shows the relative differences between the answers, one worked
    example, up to ``judge.max_group`` (10) answers to the same question shown together in a seeded
    shuffled order and each scored, an empty answer marked so that it gets the worst score. Groups:
    ``judge.group_by: question`` (the study's: all answers to a question, sorted by recipe and step, split
    into chunks of at most ``max_group``) or ``question_step`` (one answer per recipe at the same step).
    Differences from the study, each a param: temperature 0 (``judge.llm.temperature``; the study sampled at
    0.8, top_p 0.95), a JSON reply constrained by a JSON schema (``judge.json_schema``; the study parsed
    tab-separated lines), and optionally a second presentation order (``judge.orders: 2``, the reverse of
    the first) with agreement and per-position means reported (position bias). ``prompts/judge/v1.txt``
    (a strict grader scoring each answer on its own) is kept as ``judge.template_version: 1``. Replies are
    parsed strictly (``parse_judgement``) and re-asked; a reply that still fails is written to
    ``data/judge/quarantine.jsonl`` with its reason and its answers stay unjudged (null).
``proxy``  (offline default; no LLM, NOT the LLM scores) clearly named proxy metrics, all ``proxy_*``:

    proxy_ref_ppl      word-level perplexity of the answer under a reference language model trained in the
                       pipeline (an interpolated Kneser-Ney word-bigram LM on the prepared train corpora of
                       both sides; tokenizer-independent, so recipes with different BPEs compare). Lower is
                       more fluent-looking text (a fluency proxy; degenerate repetition can also score low).
                       Undefined (null, left out of its mean, counted in ``n``) for an answer without words.
    proxy_empty        1 for an answer without any word (empty or only spaces/symbols), else 0
    proxy_repetition   share of the answer's word 3-grams that repeat an earlier 3-gram of the same answer
    proxy_distinct_1/2 distinct word 1-/2-grams over all 1-/2-grams of the answer (0 for an empty answer)
    proxy_q_overlap    share of the question's content words (stop words removed) found in the answer
                       (a crude specificity proxy)
    proxy_len_words    answer length in words

Every backend's score records also carry the answer statistics that need no reference LM
(``proxy_judge.base_record``); the report shows four of them per recipe whatever the backend
(``ANSWER_STATS``, ``reported_metrics``).

Checkpoint selection (``judge_inner``, ``select_checkpoints``): the answers of every checkpoint to the 31
inner-comparison questions are judged and one checkpoint per recipe is selected; that checkpoint answers
Leaner-Eval (``generate``), judged with the four recipes' answers to a question together (``judge``).
Report (``exp2_report``): per recipe the mean of every criterion (and of the 0-15 sum for the LLM) with
bootstrap 95% intervals (questions resampled with replacement, seeded), per similarity bin, and the
checkpoint-selection curve.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from tinyhelen.config import ParamsError, Section
from tinyhelen.io import InputError, iter_jsonl
from tinyhelen.exp2.llm_judge import (CRITERIA, LLM_METRICS, JudgeLLMConfig, judge_llm, judge_llm_config,  # noqa: F401
                                 parse_judgement)
from tinyhelen.exp2.proxy_judge import (ANSWER_STATS, PROXY_METRICS, BigramLM, ProxyConfig, judge_proxy,  # noqa: F401
                                         proxy_scores)

log = logging.getLogger(__name__)

HIGHER_IS_BETTER = {"grammar": True, "coherence": True, "specificity": True, "total": True,
                    "proxy_ref_ppl": False, "proxy_empty": False, "proxy_repetition": False, "proxy_distinct_1": True,
                    "proxy_distinct_2": True, "proxy_q_overlap": True, "proxy_len_words": True}
METRIC_LABELS = {
    "grammar": "grammar (LLM, 0-5)", "coherence": "coherence (LLM, 0-5)",
    "specificity": "specificity (LLM, 0-5)", "total": "sum (LLM, 0-15)",
    "proxy_ref_ppl": "proxy: reference-LM word perplexity of non-empty answers (lower = more fluent-looking)",
    "proxy_empty": "proxy: empty-answer share",
    "proxy_repetition": "proxy: repeated 3-gram share (lower = better)",
    "proxy_distinct_1": "proxy: distinct-1", "proxy_distinct_2": "proxy: distinct-2",
    "proxy_q_overlap": "proxy: question content-word overlap", "proxy_len_words": "proxy: answer length (words)",
}


# ----------------------------------------------------------------------------------------- backends
@dataclass(frozen=True)
class JudgeBackend:
    """One way of scoring the EXP2 answers. ``score(gens, judge_cfg, llm_cfg, seed)`` returns
    (score records, summary); every record carries each of ``metrics`` (None where unscored)."""

    name: str
    metrics: tuple[str, ...]
    main_metric: str          # the headline column and the default checkpoint-selection metric
    is_llm: bool              # True: LLM judgements; False: automatic proxies (never shown as LLM scores)
    description: str
    score: Callable[..., tuple[list[dict[str, Any]], dict[str, Any]]] = field(repr=False, compare=False)

    @property
    def higher_is_better(self) -> Mapping[str, bool]:
        return {m: HIGHER_IS_BETTER[m] for m in self.metrics}

    @property
    def labels(self) -> Mapping[str, str]:
        return {m: METRIC_LABELS[m] for m in self.metrics}


BACKENDS: dict[str, JudgeBackend] = {b.name: b for b in (
    JudgeBackend("proxy", PROXY_METRICS, "proxy_ref_ppl", False,
                 "offline proxy metrics (reference-LM perplexity, repetition, distinct-n, overlap), not LLM scores",
                 lambda gens, cfg, llm, seed: judge_proxy(gens, cfg)),
    JudgeBackend("llm", LLM_METRICS, "total", True,
                 "LLM judge: grammar, coherence, specificity 0-5 each and their sum 0-15 (judge.llm endpoint)",
                 judge_llm),
)}


# ----------------------------------------------------------------------------------------- config
class JudgeConfig(Section):
    """``judge:`` section of params.yaml."""

    backend: str = Field("proxy", description="a name registered in judge.BACKENDS (proxy | llm)")
    orders: int = Field(1, ge=1, le=2, description="judge each group in 1 (study) or 2 orders (position bias)")
    max_group: int = Field(10, ge=1, le=26, description="answers shown together at most (study: 10)")
    group_by: Literal["question", "question_step"] = "question"
    json_schema: bool = Field(True, description="constrain replies with a JSON schema (response_format)")
    max_reasks: int | None = Field(None, ge=0, description="null = llm.max_reasks")
    template_version: int | None = Field(None, ge=1, description="prompts/judge/v<N>.txt; null = latest")
    llm: JudgeLLMConfig = JudgeLLMConfig()
    proxy: ProxyConfig = ProxyConfig()

    @field_validator("backend")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in BACKENDS:
            raise ValueError(f"unknown judge backend {v!r}; registered: {sorted(BACKENDS)}")
        return v


# ----------------------------------------------------------------------------------------- inputs
def read_generations(paths: Iterable[Path | str]) -> list[dict[str, Any]]:
    """Generation records of every recipe (``data/generations/<recipe>/<set>.jsonl``)."""
    out = []
    need = ("set", "qid", "question", "recipe", "step", "answer")
    for path in paths:
        for line, rec in iter_jsonl(path):
            if not isinstance(rec, dict) or any(k not in rec for k in need):
                raise InputError(path, f"generation record needs fields {list(need)}", line)
            out.append(rec)
    if not out:
        raise InputError(", ".join(map(str, paths)), "no generations")
    return out


# ----------------------------------------------------------------------------------------- report
def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95
                 ) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval (items resampled with replacement, seeded)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(x.mean()), float(lo), float(hi)


def metrics_of(backend: str) -> tuple[str, ...]:
    return BACKENDS[backend].metrics


def reported_metrics(backend: str) -> tuple[str, ...]:
    """The backend's metrics, then the answer statistics every backend's records carry (``ANSWER_STATS``:
    empty share, distinct-2, repeated 3-gram share, question overlap) that it does not produce itself."""
    own = metrics_of(backend)
    return own + tuple(m for m in ANSWER_STATS if m not in own)


def estimate(vals: list[float], n_boot: int, seed: int) -> dict[str, Any]:
    m, lo, hi = bootstrap_ci(vals, n_boot, seed)
    r = lambda v: None if math.isnan(v) else round(v, 4)  # noqa: E731
    return {"mean": r(m), "ci95": [r(lo), r(hi)], "n": len(vals)}


def select_checkpoints(scores: list[dict[str, Any]], backend: str, recipes: Sequence[str], n_boot: int, seed: int,
                       selection_metric: str | None = None, max_unscored_share: float = 0.5) -> dict[str, Any]:
    """Checkpoint selection on the judged inner-comparison answers: the curve (mean of the selection metric
    per recipe and checkpoint, with bootstrap intervals) and one selected step per recipe.

    The selected checkpoint has the best mean among those whose share of answers WITHOUT a value
    (proxy_ref_ppl: empty answers; LLM: unjudged) is at most ``max_unscored_share`` (an all-empty checkpoint
    must not win on the few answers it gave). If no checkpoint qualifies there is no signal to select on: the
    recipe's selected step is None and ``no_signal`` says why (the EXP2 claims are then not measured)."""
    metrics = metrics_of(backend)
    sel = selection_metric or BACKENDS[backend].main_metric
    if sel not in metrics:
        raise ParamsError(f"exp2.selection_metric: {sel!r} is not a metric of backend {backend} "
                          f"({', '.join(metrics)})")
    inner = [s for s in scores if s["set"] == "inner_comparison"]
    out: dict[str, Any] = {"backend": backend, "selection_metric": sel, "higher_is_better": HIGHER_IS_BETTER[sel],
                           "max_unscored_share": max_unscored_share, "selected": {}, "no_signal": {},
                           "checkpoint_curve": {}}
    for rec in recipes:
        curve = []
        for st in sorted({s["step"] for s in inner if s["recipe"] == rec}):
            here = [s for s in inner if s["recipe"] == rec and s["step"] == st]
            vals = [s[sel] for s in here if s.get(sel) is not None]
            curve.append({"step": st, **estimate(vals, n_boot, seed), "unscored_share": round(1 - len(vals) / len(here), 4)})
        if not curve:
            raise InputError(f"inner-comparison scores of {rec}", "no judged answers: run generate_inner and "
                                                                  "judge_inner for every recipe")
        out["checkpoint_curve"][rec] = curve
        valid = [c for c in curve if c["mean"] is not None and c["unscored_share"] <= max_unscored_share]
        if valid:
            out["selected"][rec] = (max if HIGHER_IS_BETTER[sel] else min)(valid, key=lambda c: c["mean"])["step"]
        else:
            out["selected"][rec] = None
            least = min(c["unscored_share"] for c in curve)
            out["no_signal"][rec] = (f"no signal: none of its {len(curve)} checkpoints has {sel} on at least "
                                     f"{1 - max_unscored_share:.0%} of its inner-comparison answers (at best "
                                     f"{1 - least:.0%})")
    return out


def judge_answers(paths: Sequence[Path | str], out_dir: Path | str, cfg: "JudgeConfig", llm: Any, seed: int
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score the generations in ``paths`` with ``cfg.backend``; write ``out_dir/{scores.jsonl, summary.json,
    quarantine.jsonl}`` atomically; return (scores, summary without the quarantine)."""
    from tinyhelen.io import atomic_path, write_json, write_jsonl

    scores, summary = BACKENDS[cfg.backend].score(read_generations(paths), cfg, llm, seed)
    quarantine = summary.pop("quarantine", [])
    with atomic_path(out_dir) as tmp:
        write_jsonl(tmp / "scores.jsonl", scores)
        write_json(tmp / "summary.json", summary)
        write_jsonl(tmp / "quarantine.jsonl", quarantine)
    return scores, summary
