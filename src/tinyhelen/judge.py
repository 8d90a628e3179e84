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
from tinyhelen.llm_judge import (CRITERIA, LLM_METRICS, JudgeLLMConfig, judge_llm, judge_llm_config,  # noqa: F401
                                 parse_judgement)
from tinyhelen.proxy_judge import PROXY_METRICS, BigramLM, ProxyConfig, judge_proxy, proxy_scores  # noqa: F401

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


def _summ(vals: list[float], n_boot: int, seed: int) -> dict[str, Any]:
    m, lo, hi = bootstrap_ci(vals, n_boot, seed)
    r = lambda v: None if math.isnan(v) else round(v, 4)  # noqa: E731
    return {"mean": r(m), "ci95": [r(lo), r(hi)], "n": len(vals)}


def select_checkpoints(scores: list[dict[str, Any]], backend: str, recipes: Sequence[str], n_boot: int, seed: int,
                       selection_metric: str | None = None, max_unscored_share: float = 0.5) -> dict[str, Any]:
    """Checkpoint selection on the judged inner-comparison answers: the curve (mean of the selection metric
    per recipe and checkpoint, with bootstrap intervals) and one selected step per recipe.

    The selected checkpoint has the best mean among those whose share of answers WITHOUT a value
    (proxy_ref_ppl: empty answers; LLM: unjudged) is at most ``max_unscored_share`` (an all-empty checkpoint
    must not win on the few answers it gave); if none qualifies, the one with the fewest unscored answers."""
    metrics = metrics_of(backend)
    sel = selection_metric or BACKENDS[backend].main_metric
    if sel not in metrics:
        raise ParamsError(f"exp2.selection_metric: {sel!r} is not a metric of backend {backend} "
                          f"({', '.join(metrics)})")
    inner = [s for s in scores if s["set"] == "inner_comparison"]
    out: dict[str, Any] = {"backend": backend, "selection_metric": sel, "higher_is_better": HIGHER_IS_BETTER[sel],
                           "max_unscored_share": max_unscored_share, "selected": {}, "checkpoint_curve": {}}
    for rec in recipes:
        curve = []
        for st in sorted({s["step"] for s in inner if s["recipe"] == rec}):
            here = [s for s in inner if s["recipe"] == rec and s["step"] == st]
            vals = [s[sel] for s in here if s.get(sel) is not None]
            curve.append({"step": st, **_summ(vals, n_boot, seed), "unscored_share": round(1 - len(vals) / len(here), 4)})
        if not curve:
            raise InputError(f"inner-comparison scores of {rec}", "no judged answers: run generate_inner and "
                                                                  "judge_inner for every recipe")
        out["checkpoint_curve"][rec] = curve
        valid = [c for c in curve if c["mean"] is not None and c["unscored_share"] <= max_unscored_share]
        if valid:
            best = (max if HIGHER_IS_BETTER[sel] else min)(valid, key=lambda c: c["mean"])
        else:
            best = min(curve, key=lambda c: (c["unscored_share"], c["step"]))
        out["selected"][rec] = best["step"]
    return out


def report(scores: list[dict[str, Any]], backend: str, recipes: Sequence[str], n_boot: int, seed: int,
           selection: dict[str, Any]) -> dict[str, Any]:
    """Per recipe / per bin tables (bootstrap CIs) of the Leaner-Eval answers, with the checkpoint selection
    (``select_checkpoints``) they came from. Every recipe's answers must come from its selected checkpoint."""
    metrics = metrics_of(backend)
    if selection.get("backend") != backend:
        raise InputError("checkpoint selection", f"judged by backend {selection.get('backend')!r}, the Leaner-Eval "
                                                 f"answers by {backend!r}: rerun judge_inner")
    main = [s for s in scores if s["set"] == "all"]
    out: dict[str, Any] = {"backend": backend, "metrics": list(metrics), "recipes": {}, "by_bin": {},
                           "checkpoint_curve": selection["checkpoint_curve"],
                           "selection_metric": selection["selection_metric"],
                           "higher_is_better": {m: HIGHER_IS_BETTER[m] for m in metrics}}
    bins = sorted({s["bin"] for s in main if s.get("bin")})
    for rec in recipes:
        rows = [s for s in main if s["recipe"] == rec]
        chosen = selection["selected"].get(rec)
        steps = sorted({s["step"] for s in rows})
        if steps and steps != [chosen]:
            raise InputError(f"Leaner-Eval answers of {rec}", f"come from step(s) {steps}, but step {chosen} was "
                                                              "selected: rerun generate")
        out["recipes"][rec] = {m: _summ([s[m] for s in rows if s.get(m) is not None], n_boot, seed)
                               for m in metrics}
        out["recipes"][rec]["answers"] = len(rows)
        out["recipes"][rec]["selected_step"] = chosen
        out["by_bin"][rec] = {b: {m: _summ([s[m] for s in rows if s.get("bin") == b and s.get(m) is not None],
                                           n_boot, seed) for m in metrics} for b in bins}
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


def flat_metrics(rep: dict[str, Any]) -> dict[str, Any]:
    """The compact DVC metrics view: per recipe mean and interval of every metric."""
    return {rec: {m: {"mean": v[m]["mean"], "lo": v[m]["ci95"][0], "hi": v[m]["ci95"][1]}
                  for m in rep["metrics"]} | {"selected_step": v.get("selected_step")}
            for rec, v in rep["recipes"].items()}


def _fmt(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean']:.3g} [{s['ci95'][0]:.3g}, {s['ci95'][1]:.3g}]"


def markdown(rep: dict[str, Any], provenance: dict[str, Any]) -> str:
    backend = rep["backend"]
    metrics = rep["metrics"]
    lines = ["# EXP2: instruction tuning with four data recipes", ""]
    if not BACKENDS[backend].is_llm:
        lines += ["> **Proxy metrics, not LLM-judge scores.** Judged offline (`judge.backend: proxy`): the "
                  "columns are automatic proxies (see docs/exp2.md), not the study's grammar/coherence/"
                  "specificity scores. Run with `judge.backend=llm` for the LLM-judged table.", ""]
    else:
        lines += [f"Judge: LLM `{provenance.get('judge_model')}` (temperature 0), grammar/coherence/"
                  "specificity 0-5 each, sum 0-15 (mean over the presentation orders).", ""]
    lines += [f"- Instruction data source: `{provenance.get('instruct_source')}`",
              f"- Recipe = `<pretraining corpus>-<instruction-tuning corpus>`; 95% bootstrap intervals "
              f"({provenance.get('n_boot')} resamples of the questions)",
              f"- Questions answered: {provenance.get('questions')}; decoding: {provenance.get('decoding')}", ""]
    lines += ["## Per recipe (Leaner-Eval)", "", "| recipe | " + " | ".join(METRIC_LABELS[m] for m in metrics)
              + " | selected step |", "|---" * (len(metrics) + 2) + "|"]
    for rec, v in rep["recipes"].items():
        lines.append(f"| {rec} | " + " | ".join(_fmt(v[m]) for m in metrics) + f" | {v.get('selected_step')} |")
    main = BACKENDS[backend].main_metric
    lines += ["", f"## Per similarity bin: {METRIC_LABELS[main]}", ""]
    bins = sorted({b for v in rep["by_bin"].values() for b in v})
    lines += ["| recipe | " + " | ".join(f"split-{b}" for b in bins) + " |", "|---" * (len(bins) + 1) + "|"]
    for rec, v in rep["by_bin"].items():
        lines.append(f"| {rec} | " + " | ".join(_fmt(v[b][main]) for b in bins) + " |")
    sel = rep["selection_metric"]
    lines += ["", f"## Checkpoint selection (31 inner-comparison questions): {METRIC_LABELS[sel]}", ""]
    steps = sorted({c["step"] for cs in rep["checkpoint_curve"].values() for c in cs})
    lines += ["| recipe | " + " | ".join(f"step {s}" for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for rec, cs in rep["checkpoint_curve"].items():
        by = {c["step"]: c for c in cs}
        lines.append(f"| {rec} | " + " | ".join(
            (_fmt(by[s]) + (f" ({by[s]['unscored_share']:.0%} unscored)" if by[s].get("unscored_share") else ""))
            if s in by else "" for s in steps) + " |")
    if provenance.get("agreement"):
        ag = provenance["agreement"]
        lines += ["", "## Position bias (same answers, two presentation orders)", "",
                  f"Answers judged in both orders: {ag['answers']}. Position means (sum 0-15): "
                  f"{provenance.get('position_means')}", "",
                  "| criterion | exact agreement | within 1 | mean abs diff | Pearson r |", "|---|---|---|---|---|"]
        for c in (*CRITERIA, "total"):
            a = ag.get(c)
            if a:
                lines.append(f"| {c} | {a['exact']} | {a['within_1']} | {a['mean_abs_diff']} | {a['pearson']} |")
    return "\n".join(lines) + "\n"


def curve_rows(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """DVC plot rows: step x recipe (selection metric)."""
    steps = sorted({c["step"] for cs in rep["checkpoint_curve"].values() for c in cs})
    rows = []
    for s in steps:
        row: dict[str, Any] = {"step": s}
        for rec, cs in rep["checkpoint_curve"].items():
            row[rec] = next((c["mean"] for c in cs if c["step"] == s), None)
        rows.append(row)
    return rows


def recipe_rows(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """DVC plot rows: one per (recipe, bin) with the main metric (bin 'all' = every question)."""
    main = BACKENDS[rep["backend"]].main_metric
    rows = []
    for rec, v in rep["recipes"].items():
        rows.append({"recipe": rec, "bin": "all", "metric": main, "mean": v[main]["mean"],
                     "lo": v[main]["ci95"][0], "hi": v[main]["ci95"][1]})
        for b, bv in rep["by_bin"][rec].items():
            rows.append({"recipe": rec, "bin": b, "metric": main, "mean": bv[main]["mean"],
                         "lo": bv[main]["ci95"][0], "hi": bv[main]["ci95"][1]})
    return rows


def plot_png(rep: dict[str, Any], path: Path | str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinyhelen.io import atomic_path

    main = BACKENDS[rep["backend"]].main_metric
    recipes = list(rep["recipes"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    means = [rep["recipes"][r][main]["mean"] or 0 for r in recipes]
    err = [[m - (rep["recipes"][r][main]["ci95"][0] or m) for r, m in zip(recipes, means)],
           [(rep["recipes"][r][main]["ci95"][1] or m) - m for r, m in zip(recipes, means)]]
    ax.bar(recipes, means, yerr=err, capsize=4, color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"][:len(recipes)])
    ax.set_title(METRIC_LABELS[main], fontsize=9)
    ax.set_xlabel("recipe (pretrain-tune)")
    ax = axes[1]
    bins = sorted({b for v in rep["by_bin"].values() for b in v})
    w = 0.8 / max(1, len(recipes))
    for i, r in enumerate(recipes):
        ax.bar([j + i * w for j in range(len(bins))],
               [rep["by_bin"][r][b][main]["mean"] or 0 for b in bins], width=w, label=r)
    ax.set_xticks([j + w * (len(recipes) - 1) / 2 for j in range(len(bins))], [f"split-{b}" for b in bins])
    ax.set_title(f"by similarity bin: {main}", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    sel = rep["selection_metric"]
    for r, cs in rep["checkpoint_curve"].items():
        ax.plot([c["step"] for c in cs], [c["mean"] for c in cs], marker="o", label=r)
    ax.set_title(f"checkpoint selection (inner comparison): {sel}", fontsize=9)
    ax.set_xlabel("instruction-tuning step")
    ax.legend(fontsize=7)
    if not BACKENDS[rep["backend"]].is_llm:
        fig.suptitle("EXP2 - PROXY METRICS (offline, not LLM-judge scores)", fontsize=10)
    else:
        fig.suptitle("EXP2 - LLM judge", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


class Exp2Config(Section):
    """``exp2:`` section of params.yaml (the report)."""

    n_boot: int = Field(1000, ge=100)
    selection_metric: str | None = Field(None, description="checkpoint-selection metric; null = the judge "
                                                           "backend's main metric (judge.BACKENDS)")
    recipes: list[str] = Field(default_factory=lambda: ["leaner-leaner", "leaner-ori", "ori-leaner", "ori-ori"])
    max_unscored_share: float = Field(0.5, ge=0, le=1, description="checkpoint selection ignores checkpoints "
                                      "with more answers without a score (empty / unjudged)")
