"""The study's claims beside our measurements, each with a verdict qualified by the scale we ran.

The verdicts and their pre-registered rules are ``tinyhelen.report.verdicts`` (``decide``; docs/report.md,
"Verdicts and decision rules"). Intervals: EXP1 a paired bootstrap over GLUE fine-tuning seeds (the mean
difference over the (architecture, task) cells of the resampled seeds), with the exact sign-flip p-value
of the per-seed mean differences shown beside it; EXP3 a paired bootstrap over training seeds of the
reduction ``1 - mean(strategy)/mean(baseline)`` against ``full-random`` and the iterative ``random`` control,
under every target definition of ``tinyhelen.exp3.targets`` (they must agree); both need ``MIN_SEEDS``
distinct seeds for a verdict other than ``inconclusive``. EXP2 from the recipes' bootstrap intervals over answers (no minimum of seeds). The
entropy figures are whole-corpus measurements: their direction decides.

Model claims are qualified with the scale actually run as a fraction of the study's (tokens per run, steps,
non-embedding parameters; ``tinyhelen.study.STUDY_SCALE``), e.g. "inconclusive at 1/20,000 of the
study's tokens per run".
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from tinyhelen.config import Section
from tinyhelen.entropy.result import EntropyResult
from tinyhelen.exp1.result import Exp1Result
from tinyhelen.exp2.result import Exp2Result
from tinyhelen.exp3.result import Exp3Result
# the verdict names are re-exported for the callers of ``claims_*`` that compare verdicts (tests/test_judge.py)
from tinyhelen.report.verdicts import (CONTRADICTED, INCONCLUSIVE, MAX_EXACT, NOT_MEASURED, NOT_RUN,  # noqa: F401
                                       REPRODUCED, SIZE_DIFFERS, VERDICTS, Interval, decide, decide_definitions,
                                       mean_difference_interval,
                                       normal_interval, reduction_interval, sign_flip)
from tinyhelen.study import STUDY_EXP3_CLAIM, scale_fractions


class ReportConfig(Section):
    """``report:`` section of params.yaml: the level of the verdicts' intervals (docs/report.md).

    The decision rules themselves are pre-registered in ``tinyhelen.report.verdicts``, not params."""

    confidence: float = Field(0.95, gt=0.5, lt=1, description="level of the intervals a verdict is read from")


# ------------------------------------------------------------------------------------ scale
def _ratio(f: float) -> str:
    """0.0128 -> "1/78", 5e-5 -> "1/20,000" (two significant digits); 2.5 -> "2.5x"."""
    if f > 1:
        return f"{float(f'{f:.2g}'):g}x"
    n = float(f"{1 / f:.2g}")
    return "1/" + (f"{n:,.0f}" if n >= 10 else f"{n:g}")


SCALE_NAMES = {"tokens": "tokens per run", "steps": "steps", "params": "model size"}


def scale_text(fractions: dict[str, float | None]) -> str:
    """E.g. "at 1/20,000 of the study's tokens per run, 1/78 of its steps and 1/14 of its model size".
    Figures within 5% of the study's are left out; all of them: "at the study's scale"."""
    parts = [(_ratio(f), SCALE_NAMES[k], f > 1) for k, f in fractions.items()
             if f is not None and not 0.95 <= f <= 1.05]
    if not parts:
        return "at the study's scale" if any(f is not None for f in fractions.values()) else ""
    items = []
    for i, (r, name, more) in enumerate(parts):
        whose = "the study's" if i == 0 else "its"
        items.append(f"{r} {whose} {name}" if more else f"{r} of {whose} {name}")
    return "at " + (items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1])


# ------------------------------------------------------------------------------------ claims
@dataclass
class Claim:
    """One claim of the study beside our measurement."""

    id: str
    experiment: str
    claim: str
    verdict: str
    measured: str
    why: str
    scale: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)
    marks: list[str] = field(default_factory=list)

    @property
    def verdict_text(self) -> str:
        return f"{self.verdict} {self.scale}".strip()


def _not_run(specs: Sequence[tuple[str, str]], experiment: str, why: str) -> list[Claim]:
    verdict, why = decide(None, ran=False, reason=why)
    return [Claim(cid, experiment, text, verdict, "-", why) for cid, text in specs]


def _numbers(iv: Interval | None, fractions: dict[str, float | None] | None = None, **extra: Any) -> dict:
    r = lambda x, nd=4: None if x is None else round(x, nd)  # noqa: E731
    out: dict[str, Any] = {}
    if iv is not None:
        out.update(effect=r(iv.effect), lo=r(iv.lo), hi=r(iv.hi), n=iv.n)
    for k, f in (fractions or {}).items():
        out[f"scale_{k}"] = None if f is None else float(f"{f:.3g}")
    return {**out, **extra}


ENTROPY = (("entropy_vocab", "Leaner text has a smaller vocabulary"),
           ("entropy_ngram", "Leaner text has lower n-gram entropy"))


def claims_entropy(ent: EntropyResult | None, problem: str | None = None) -> list[Claim]:
    """Data properties, decided on ``equal_budget`` (twin documents cut to equal length: entropy and
    vocabulary grow with sample size and leaner text is shorter) with the bias-corrected entropies when
    present; ``paired`` is shown as evidence. Whole-corpus figures: no sampling interval, so the verdict is
    the direction on every figure (mixed directions: inconclusive, naming the figures)."""
    if ent is None or "equal_budget" not in ent.settings:
        return _not_run(ENTROPY, "entropy", problem or "no equal_budget setting in the entropy result")
    eq = ent.settings["equal_budget"]
    ratio = eq.leaner.vocab / eq.ori.vocab
    verdict = REPRODUCED if ratio < 1 else (CONTRADICTED if ratio > 1 else INCONCLUSIVE)
    others = "; ".join(f"{s}: {v.leaner.vocab:,} vs {v.ori.vocab:,}" for s, v in ent.settings.items()
                       if s != "equal_budget")
    vc = Claim("entropy_vocab", "entropy", ENTROPY[0][1], verdict,
               f"equal_budget: {eq.leaner.vocab:,} vs {eq.ori.vocab:,} word types (x{ratio:.2f})"
               + (f"; {others}" if others else ""),
               "leaner below ori at equal token budgets" if ratio < 1 else "leaner not below ori",
               numbers={"vocab_ratio": round(ratio, 4)})
    mm = ent.corrected("equal_budget")
    figs = [(u, n) for u in ("word", "bpe") for n in ent.orders()
            if eq.leaner.H(u, n, mm) is not None and eq.ori.H(u, n, mm) is not None]
    diff = {f"{u}_H{n}{'_mm' if mm else ''}": eq.leaner.H(u, n, mm) - eq.ori.H(u, n, mm) for u, n in figs}
    below = [k for k, d in diff.items() if d < 0]
    not_below = [k for k, d in diff.items() if d >= 0]
    if not diff:
        verdict, why = INCONCLUSIVE, "no n-gram entropies in the result"
    elif not not_below:
        verdict, why = REPRODUCED, f"leaner below ori on all {len(diff)} figures"
    elif not below:
        verdict, why = CONTRADICTED, f"leaner not below ori on any of {len(diff)} figures"
    else:
        verdict, why = INCONCLUSIVE, f"leaner below on {', '.join(below)}; not below on {', '.join(not_below)}"
    est = "bias-corrected (Miller-Madow)" if mm else "plug-in"
    measured = (f"equal_budget, {est}: leaner - ori = "
                + ", ".join(f"{k.replace('_mm', '')} {d:+.2f}" for k, d in diff.items()) + " bits")
    ec = Claim("entropy_ngram", "entropy", ENTROPY[1][1], verdict, measured, why,
               numbers={"leaner_below": len(below), "figures": len(diff),
                        **{"delta_" + k: round(d, 4) for k, d in diff.items()}})
    return [vc, ec]


EXP1 = (("exp1_leaner_beats_ori", "Leaner-pretrained models beat original-pretrained ones on Leaner-GLUE"),
        ("exp1_llama_best", "LLaMA is the best architecture after fine-tuning"))


def exp1_scale(e1: Exp1Result) -> dict[str, float | None]:
    params = [r.non_embedding_params for r in e1.pretrain]
    return scale_fractions("EXP1", e1.tokens_per_run, max((r.steps for r in e1.pretrain), default=None),
                           statistics.fmean(params) if params else None)


def _by_seed(e1: Exp1Result, pairs: list[tuple[tuple[str, str], tuple[str, str]]],
             tasks: list[str]) -> dict[int, list[float]]:
    """Differences of test scores ``a`` minus ``b`` for every ``(a, b)`` of ``pairs`` (each an (arch, init))
    and task, grouped by fine-tuning seed (the same seed on both sides), seeds in order."""
    cells = {(c.arch, c.init, c.task): c for c in e1.cells}
    out: dict[int, list[float]] = {}
    for x, y in pairs:
        for t in tasks:
            ca, cb = cells.get((*x, t)), cells.get((*y, t))
            if ca is not None and cb is not None:
                for seed in ca.seeds:
                    if seed in cb.seeds:
                        out.setdefault(seed, []).append(ca.seeds[seed] - cb.seeds[seed])
    return dict(sorted(out.items()))


def _seed_claim(cid: str, text: str, groups: dict[int, list[float]], cfg: ReportConfig, label: str,
                scale_fr: dict[str, float | None], extra_measured: str = "", **numbers: Any) -> Claim:
    """An EXP1 claim from its differences grouped by fine-tuning seed: paired bootstrap over seeds (the mean
    difference over the cells of the resampled seeds), the min-seeds rule on the distinct seeds, and the
    exact sign-flip p-value of the per-seed mean differences beside it (not the verdict's interval)."""
    iv = mean_difference_interval(list(groups.values()), confidence=cfg.confidence,
                                  method="bootstrap over fine-tuning seeds")
    p = sign_flip([statistics.fmean(g) for g in groups.values()]).p if len(groups) <= MAX_EXACT else None
    verdict, why = decide(iv, seeds=len(groups), fmt="+.4f")
    diffs = [d for g in groups.values() for d in g]
    measured = (f"{label} = {iv.text()} over {len(diffs)} (cell, seed) pairs from {len(groups)} fine-tuning "
                f"seed(s)" + ("" if p is None else f", exact sign-flip p = {p:.3g}") + extra_measured)
    return Claim(cid, "EXP1", text, verdict, measured, why, scale_text(scale_fr),
                 _numbers(iv, scale_fr, pairs=len(diffs), p_sign_flip=None if p is None else round(p, 4),
                          **numbers))


def claims_exp1(e1: Exp1Result | None, cfg: ReportConfig, problem: str | None = None) -> list[Claim]:
    """(a) leaner - ori test score over the (arch, task) cells of the study's tasks; (b) LLaMA minus the
    best other architecture over the (corpus side, task) cells. Both: per fine-tuning seed, ``_seed_claim``."""
    if e1 is None:
        return _not_run(EXP1, "EXP1", problem or "no EXP1 result")
    fr = exp1_scale(e1)
    tasks = e1.study_tasks()
    sides = [s for s in ("leaner", "ori") if s in e1.inits]
    out = []
    groups = _by_seed(e1, [((a, "leaner"), (a, "ori")) for a in e1.archs], tasks) if len(sides) == 2 else {}
    if not groups:
        out += _not_run(EXP1[:1], "EXP1", "no (arch, task, seed) with both corpus sides")
    else:
        diffs = [d for g in groups.values() for d in g]
        wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
        out.append(_seed_claim(*EXP1[0], groups, cfg, "leaner - ori", fr,
                               f"; leaner ahead in {wins}, behind in {losses}", leaner_ahead=wins))
    means = {a: statistics.fmean(s) for a in e1.archs
             if (s := [x for i in sides if (x := e1.mean_score(a, i)) is not None])}
    if "llama" not in means or len(means) < 2:
        return out + _not_run(EXP1[1:], "EXP1", "needs LLaMA and another pretrained architecture")
    rank = sorted(means, key=lambda a: -means[a])
    rival = next(a for a in rank if a != "llama")
    groups = _by_seed(e1, [(("llama", s), (rival, s)) for s in sides], tasks)
    if not groups:
        return out + _not_run(EXP1[1:], "EXP1", f"no (side, task, seed) with both LLaMA and {rival}")
    c = _seed_claim(*EXP1[1], groups, cfg, f"LLaMA - {rival}", fr,
                    "; mean score " + ", ".join(f"{a} {means[a]:.4f}" for a in rank),
                    best_arch=rank[0], **{f"glue_mean_{a}": round(means[a], 4) for a in rank})
    c.why = f"vs {rival}: {c.why}"
    return out + [c]


@dataclass(frozen=True)
class VsScratch:
    """One pretrained (arch, side) against the same architecture fine-tuned from random initialisation:
    ``interval`` is the mean over the study's tasks of (pretrained - scratch) test score, paired by fine-tuning
    seed, with the verdicts' bootstrap interval over seeds (``n``: the seeds). ``above``: the whole interval is
    above zero (pretraining helped by more than the interval)."""

    arch: str
    side: str
    interval: Interval

    @property
    def above(self) -> bool:
        return self.interval.lo is not None and self.interval.lo > 0


def exp1_vs_scratch(e1: Exp1Result | None, cfg: ReportConfig) -> list[VsScratch]:
    """Did pretraining help at all? Each pretrained (arch, side) minus the arch's ``scratch`` run, over the
    study's tasks, per fine-tuning seed (the EXP1 claims' pairing and interval). Empty without a scratch run."""
    if e1 is None or "scratch" not in e1.inits:
        return []
    tasks = e1.study_tasks()
    out = []
    for arch in e1.archs:
        for side in (i for i in e1.inits if i != "scratch"):
            groups = _by_seed(e1, [((arch, side), (arch, "scratch"))], tasks)
            if groups:
                out.append(VsScratch(arch, side, mean_difference_interval(
                    list(groups.values()), confidence=cfg.confidence, method="bootstrap over fine-tuning seeds")))
    return out


EXP2 = (("exp2_leaner_pretraining", "Leaner pretraining gives better instruction following (LLM-judged)",
         ("leaner-leaner", "leaner-ori"), ("ori-leaner", "ori-ori")),
        ("exp2_leaner_tuning", "Leaner instruction tuning gives better instruction following (LLM-judged)",
         ("leaner-leaner", "ori-leaner"), ("leaner-ori", "ori-ori")))


def exp2_scale(e2: Exp2Result) -> dict[str, float | None]:
    steps = [r.tune_steps for r in e2.recipes if r.tune_steps is not None]
    tokens = [r.tune_tokens for r in e2.recipes if r.tune_tokens is not None]
    return scale_fractions("EXP2", statistics.fmean(tokens) if tokens else None,
                           max(steps) if steps else None, e2.non_embedding_params)


def claims_exp2(e2: Exp2Result | None, cfg: ReportConfig, problem: str | None = None) -> list[Claim]:
    """Effect = mean of the two recipes with the leaner factor minus the two without, in the judge
    backend's main metric (sign: its ``higher_is_better``); interval from the recipes' bootstrap intervals
    (half-width / z of their level, combined in quadrature). Proxy metrics are not LLM judgements: the
    verdict is ``not measured`` and the proxy's direction is shown."""
    specs = [(c, t) for c, t, _, _ in EXP2]
    if e2 is None:
        return _not_run(specs, "EXP2", problem or "no EXP2 result")
    fr = exp2_scale(e2)
    metric = e2.main_metric
    sign = 1.0 if e2.higher_is_better.get(metric, True) else -1.0
    z_in = statistics.NormalDist().inv_cdf(0.5 + e2.interval_level / 2)
    out = []
    for cid, text, pos, neg in EXP2:
        silent = [r for r in pos + neg if e2.recipe(r) is not None and e2.recipe(r).selected_step is None]
        if silent:  # no checkpoint had a signal to select on: nothing was answered, nothing measured
            verdict, why = decide(None, measurable=False, reason="; ".join(
                f"checkpoint selection of {r}: {e2.recipe(r).no_signal or 'no step selected'}" for r in silent))
            out.append(Claim(cid, "EXP2", text, verdict, "-", why))
            continue
        ests = {r: (e2.recipe(r).scores.get(metric) if e2.recipe(r) else None) for r in pos + neg}
        if any(e is None or e.mean is None for e in ests.values()):
            # the stage ran, but no answer could be scored (e.g. every answer empty): nothing was measured
            empty = {r: e2.recipe(r).scores.get("proxy_empty") for r in pos + neg if e2.recipe(r)}
            shares = ", ".join(f"{r} {e.mean:.0%}" for r, e in empty.items() if e and e.mean is not None)
            reason = f"no answer scored in `{metric}`" + (f"; share of empty answers: {shares}" if shares else "")
            verdict, why = decide(None, measurable=False, reason=reason)
            out.append(Claim(cid, "EXP2", text, verdict, "-", why))
            continue
        eff = sign * (statistics.fmean(ests[r].mean for r in pos) - statistics.fmean(ests[r].mean for r in neg))
        se = None if any(e.lo is None or e.hi is None for e in ests.values()) else \
            math.sqrt(sum(((e.hi - e.lo) / (2 * z_in)) ** 2 for e in ests.values())) / 2
        iv = normal_interval(eff, se, cfg.confidence, len(ests), "bootstrap intervals of the recipes")
        measured = (f"{metric} ({'higher' if sign > 0 else 'lower'} is better): "
                    f"({' + '.join(pos)})/2 vs ({' + '.join(neg)})/2, leaner advantage {iv.text('+.3g')}")
        if not e2.judge_is_llm:
            measured += f" [proxy: {'leaner better' if iv.effect > 0 else 'leaner not better'}]"
        verdict, why = decide(iv, measurable=e2.judge_is_llm, fmt="+.3g",
                              reason=f"judge backend `{e2.judge_backend}` gives proxy metrics, not LLM judgements")
        out.append(Claim(cid, "EXP2", text, verdict, measured, why, scale_text(fr) if e2.judge_is_llm else "",
                         _numbers(iv, fr, metric=metric)))
    return out


def exp3_scale(e3: Exp3Result) -> dict[str, float | None]:
    return scale_fractions("EXP3", e3.tokens_per_run, e3.max_steps, e3.non_embedding_params)


def exp3_reduction(strategy: Mapping[int, float | None], baseline: Mapping[int, float | None],
                   at_end: Mapping[int, float], confidence: float) -> tuple[Interval | None, list[int]]:
    """Reduction ``1 - mean(strategy)/mean(baseline)`` over the seeds paired by seed (per-seed values, e.g.
    steps to the target), paired bootstrap over seeds. A strategy run that never reached the target (None)
    counts at the end of its budget (``at_end[seed]``): a bound in the claim's favour (``Interval.censored``).
    A seed whose baseline run is absent or never reached the target cannot be paired: it is left out and
    returned, so that the claim can say so."""
    used = [s for s in sorted(strategy) if baseline.get(s)]
    left_out = [s for s in sorted(strategy) if not baseline.get(s)]
    a = [at_end[s] if strategy[s] is None else strategy[s] for s in used]
    iv = reduction_interval(a, [baseline[s] for s in used], confidence=confidence, method="bootstrap over seeds",
                            censored=sum(strategy[s] is None for s in used))
    return iv, left_out


def reduction_claim(cid: str, text: str,
                    values: Mapping[str, tuple[Mapping[int, float | None], Mapping[int, float | None]]],
                    at_end: Mapping[int, float], *, names: tuple[str, str], cfg: ReportConfig,
                    scale_fr: dict[str, float | None], stated_size: float | None) -> Claim:
    """One EXP3 claim from per-seed values of a strategy and of a baseline (``names``) under each target
    definition (``values[definition] = (strategy's, baseline's)``, the primary definition first): the reduction
    under each (``exp3_reduction``), decided together (``verdicts.decide_definitions``: they must agree) with the
    min-seeds rule, against ``stated_size`` (None: the direction only)."""
    s, b = names
    ivs, left = {}, {}
    for d, (a_vals, b_vals) in values.items():
        ivs[d], left[d] = exp3_reduction(a_vals, b_vals, at_end, cfg.confidence)
    if all(iv is None for iv in ivs.values()):
        return _not_run([(cid, text)], "EXP3", f"no seed where `{b}` reached its target")[0]
    seeds = {d: 0 if iv is None else iv.n for d, iv in ivs.items()}
    verdict, why = decide_definitions(ivs, stated_size=stated_size, seeds=seeds, fmt="+.0%")
    parts = []
    for d, iv in ivs.items():
        if iv is None:
            parts.append(f"{d}: no seed where `{b}` reached its target")
            continue
        note = f", {iv.censored} run(s) of {s} never reached the target (an upper bound)" if iv.censored else ""
        note += f", seed(s) {', '.join(map(str, left[d]))} left out: `{b}` never reached it" if left[d] else ""
        parts.append(f"{d}: {'at most ' if iv.censored else ''}{iv.text('+.1%')} over {iv.n} seed(s){note}")
    primary = next(iter(ivs.values()))
    return Claim(cid, "EXP3", text, verdict, f"reduction vs `{b}`: " + "; ".join(parts), why, scale_text(scale_fr),
                 _numbers(primary, scale_fr, not_reached=None if primary is None else primary.censored,
                          **{f"effect_{d}": None if iv is None else round(iv.effect, 4) for d, iv in ivs.items()}))


def _exp3_specs() -> list[tuple[str, str, str, str, float | None]]:
    """The pre-registered EXP3 claims: (id, text, baseline, field, stated size), one per (measure, baseline).
    Against ``full-random`` the study's claim with its size; against the iterative ``random`` control (same
    pool growth, random order) the direction only: the study states no size there."""
    s, claimed = STUDY_EXP3_CLAIM
    out = []
    for baseline, suffix, who, size in (("full-random", "", "the full-data baseline `full-random`", claimed),
                                        ("random", "_vs_random", "the iterative `random` control (same pacing, "
                                                                 "random order)", None)):
        amount = f"~{claimed:.0%} " if size is not None else ""
        out += [(f"exp3_{s}_fewer_steps{suffix}", f"`{s}` reaches the loss of {who} with {amount}fewer steps",
                 baseline, "steps_to_target", size),
                (f"exp3_{s}_less_data{suffix}", f"`{s}` reaches the loss of {who} with {amount}less data (unique "
                                                "training tokens)", baseline, "data_to_target", size)]
    return out


def claims_exp3(e3: Exp3Result | None, cfg: ReportConfig, problem: str | None = None) -> list[Claim]:
    """The study: the ``lmloss`` curriculum reaches the baseline's loss with ~20% fewer steps **and** data. Four
    claims (``_exp3_specs``): steps and data, each against ``full-random`` and against the iterative ``random``
    control, over training seeds paired by seed, under every target definition of the result
    (``tinyhelen.exp3.targets``; they must agree). A run that never reached its target counts as reaching it at
    the end of its budget (a bound in the claim's favour), so such a claim can be contradicted or
    inconclusive but not reproduced."""
    specs = _exp3_specs()
    if e3 is None:
        return _not_run([(c, t) for c, t, *_ in specs], "EXP3", problem or "no EXP3 result")
    s = STUDY_EXP3_CLAIM[0]
    fr = exp3_scale(e3)
    out = []
    for cid, text, b, fld, size in specs:
        if not e3.runs_of(s) or b not in e3.baselines:
            out += _not_run([(cid, text)], "EXP3", f"runs of `{s}` and the baseline `{b}` needed; strategies "
                                                   f"{sorted(e3.strategies)}, baselines {e3.baselines}")
            continue
        end = {seed: e3.max_steps if fld == "steps_to_target" else
               (r.data_at_end if r.data_at_end is not None else round(r.pool_fraction * e3.pool_tokens))
               for seed, r in e3.runs_of(s).items()}
        values = {d: (e3.per_seed(s, b, d, fld), e3.per_seed(b, b, d, fld)) for d in e3.definitions}
        out.append(reduction_claim(cid, text, values, end, names=(s, b), cfg=cfg, scale_fr=fr, stated_size=size))
    return out
