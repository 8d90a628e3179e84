"""The study's claims beside our measurements, each with a verdict qualified by the scale we ran.

Verdicts (``VERDICTS``; rules in ``docs/report.md``):

* ``reproduced``: the claim's effect is positive with its whole interval above zero (and, for a claimed
  size such as EXP3's ~20%, the mean reaches ``report.exp3_min_reduction``);
* ``contradicted``: the whole interval is below the claimed size (for a direction: below zero);
* ``inconclusive``: the interval contains zero (or the claimed size), or there is no interval;
* ``not measured``: the inputs cannot measure the claim (EXP2 scored by proxy metrics, not an LLM judge);
* ``not run``: the experiment's typed result is absent or invalid (the reason is given).

Model claims are qualified with the scale actually run as a fraction of the study's (tokens per run, steps,
non-embedding parameters; ``tinyhelen.study.STUDY_SCALE``), e.g. "inconclusive at 1/20,000 of the
study's tokens per run". Intervals: EXP1 over (architecture, task, seed) pairs, EXP3 over seeds (Student t),
EXP2 from the recipes' bootstrap intervals; the entropy figures are whole-corpus measurements.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from tinyhelen.config import Section
from tinyhelen.study import STUDY_EXP3_CLAIM, scale_fractions
from tinyhelen.entropy.result import EntropyResult
from tinyhelen.exp1.result import Exp1Result
from tinyhelen.exp2.result import Exp2Result
from tinyhelen.exp3.result import Exp3Result

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured"
NOT_RUN = "not run"
VERDICTS: tuple[str, ...] = (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, NOT_RUN)


class ReportConfig(Section):
    """``report:`` section of params.yaml: the decision rules of the verdicts (docs/report.md)."""

    confidence: float = Field(0.95, gt=0.5, lt=1, description="level of the intervals a verdict is read from")
    exp3_min_reduction: float = Field(0.10, ge=0, le=1, description="the study claims ~20% fewer steps and "
                                                                    "data; a reproduction needs at least this")


# ------------------------------------------------------------------------------------ intervals
@dataclass(frozen=True)
class Interval:
    """An effect (oriented so that > 0 supports the claim) with its interval; ``lo``/``hi`` are None when
    there is no spread to build one from (a single value)."""

    effect: float
    lo: float | None
    hi: float | None
    n: int
    method: str

    def text(self, fmt: str = "+.4f") -> str:
        if self.lo is None or self.hi is None:
            return f"{self.effect:{fmt}} (n={self.n}, no interval)"
        return f"{self.effect:{fmt}} [{self.lo:{fmt}}, {self.hi:{fmt}}]"


def t_interval(values: Sequence[float], confidence: float, method: str) -> Interval | None:
    """Mean and two-sided Student-t interval of ``values`` (None for no values)."""
    from scipy.stats import t

    xs = [float(v) for v in values]
    if not xs:
        return None
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return Interval(m, None, None, 1, method)
    half = float(t.ppf(0.5 + confidence / 2, len(xs) - 1)) * statistics.stdev(xs) / math.sqrt(len(xs))
    return Interval(m, m - half, m + half, len(xs), method)


def normal_interval(effect: float, se: float | None, confidence: float, n: int, method: str) -> Interval:
    if se is None:
        return Interval(effect, None, None, n, method)
    half = statistics.NormalDist().inv_cdf(0.5 + confidence / 2) * se
    return Interval(effect, effect - half, effect + half, n, method)


def decide(iv: Interval | None, threshold: float = 0.0, can_reproduce: bool = True) -> tuple[str, str]:
    """The one decision rule: (verdict, why). ``threshold``: the size the claim states (0: a direction)."""
    if iv is None:
        return INCONCLUSIVE, "no measurement"
    if iv.lo is None or iv.hi is None:
        return INCONCLUSIVE, f"a single value ({iv.effect:+.4g}): no interval"
    if iv.hi < threshold:
        return CONTRADICTED, ("the interval lies below zero" if threshold == 0 else
                              f"the interval lies below the claimed {threshold:.0%}")
    if iv.lo > 0 and iv.effect >= threshold and can_reproduce:
        return REPRODUCED, "the interval lies above zero" + (f" and the mean reaches {threshold:.0%}"
                                                              if threshold else "")
    if iv.lo <= 0:
        return INCONCLUSIVE, "the interval contains zero"
    if iv.effect < threshold:
        return INCONCLUSIVE, f"above zero but the mean is below the claimed {threshold:.0%}"
    return INCONCLUSIVE, "runs never reached the target: their reductions are upper bounds"


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
    return [Claim(cid, experiment, text, NOT_RUN, "-", why) for cid, text in specs]


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


def _paired(e1: Exp1Result, a: tuple[str, str], b: tuple[str, str], tasks: list[str]) -> list[float]:
    """Per (task, seed) differences of test scores, ``a`` minus ``b`` (each an (arch, init))."""
    cells = {(c.arch, c.init, c.task): c for c in e1.cells}
    out = []
    for t in tasks:
        ca, cb = cells.get((*a, t)), cells.get((*b, t))
        if ca is not None and cb is not None:
            out += [ca.seeds[s] - cb.seeds[s] for s in ca.seeds if s in cb.seeds]
    return out


def claims_exp1(e1: Exp1Result | None, cfg: ReportConfig, problem: str | None = None) -> list[Claim]:
    """(a) leaner - ori test score over every (arch, task, seed) pair of the study's tasks; (b) LLaMA minus
    the best other architecture over every (corpus side, task, seed) pair. Both: Student-t interval."""
    if e1 is None:
        return _not_run(EXP1, "EXP1", problem or "no EXP1 result")
    fr = exp1_scale(e1)
    scale = scale_text(fr)
    tasks = e1.study_tasks()
    sides = [s for s in ("leaner", "ori") if s in e1.inits]
    out = []
    diffs = [d for a in e1.archs for d in _paired(e1, (a, "leaner"), (a, "ori"), tasks)] if len(sides) == 2 else []
    iv = t_interval(diffs, cfg.confidence, "(arch, task, seed) pairs")
    if iv is None:
        out.append(Claim(EXP1[0][0], "EXP1", EXP1[0][1], NOT_RUN, "-", "no (arch, task, seed) with both corpus sides"))
    else:
        verdict, why = decide(iv)
        wins = sum(d > 0 for d in diffs)
        out.append(Claim(EXP1[0][0], "EXP1", EXP1[0][1], verdict,
                         f"leaner - ori = {iv.text()} over {iv.n} (arch, task, seed) pairs, leaner ahead in "
                         f"{wins}, behind in {sum(d < 0 for d in diffs)}", why, scale,
                         _numbers(iv, fr, leaner_ahead=wins)))
    means = {a: statistics.fmean(s) for a in e1.archs
             if (s := [x for i in sides if (x := e1.mean_score(a, i)) is not None])}
    if "llama" not in means or len(means) < 2:
        out.append(Claim(EXP1[1][0], "EXP1", EXP1[1][1], NOT_RUN, "-",
                         "needs LLaMA and another pretrained architecture"))
        return out
    rank = sorted(means, key=lambda a: -means[a])
    rival = next(a for a in rank if a != "llama")
    iv = t_interval([d for s in sides for d in _paired(e1, ("llama", s), (rival, s), tasks)], cfg.confidence,
                    "(side, task, seed) pairs")
    verdict, why = decide(iv)
    out.append(Claim(EXP1[1][0], "EXP1", EXP1[1][1], verdict,
                     f"LLaMA - {rival} = {iv.text() if iv else 'n/a'}; mean score "
                     + ", ".join(f"{a} {means[a]:.4f}" for a in rank), f"vs {rival}: {why}", scale,
                     _numbers(iv, fr, best_arch=rank[0], **{f"glue_mean_{a}": round(means[a], 4) for a in rank})))
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
        ests = {r: (e2.recipe(r).scores.get(metric) if e2.recipe(r) else None) for r in pos + neg}
        if any(e is None or e.mean is None for e in ests.values()):
            # the stage ran, but no answer could be scored (e.g. every answer empty): nothing was measured
            empty = {r: e2.recipe(r).scores.get("proxy_empty") for r in pos + neg if e2.recipe(r)}
            shares = ", ".join(f"{r} {e.mean:.0%}" for r, e in empty.items() if e and e.mean is not None)
            why = f"no answer scored in `{metric}`" + (f"; share of empty answers: {shares}" if shares else "")
            out.append(Claim(cid, "EXP2", text, NOT_MEASURED, "-", why, scale_text(fr)))
            continue
        eff = sign * (statistics.fmean(ests[r].mean for r in pos) - statistics.fmean(ests[r].mean for r in neg))
        se = None if any(e.lo is None or e.hi is None for e in ests.values()) else \
            math.sqrt(sum(((e.hi - e.lo) / (2 * z_in)) ** 2 for e in ests.values())) / 2
        iv = normal_interval(eff, se, cfg.confidence, len(ests), "bootstrap intervals of the recipes")
        measured = (f"{metric} ({'higher' if sign > 0 else 'lower'} is better): "
                    f"({' + '.join(pos)})/2 vs ({' + '.join(neg)})/2, leaner advantage {iv.text('+.3g')}")
        if not e2.judge_is_llm:
            direction = "leaner better" if iv.effect > 0 else "leaner not better"
            out.append(Claim(cid, "EXP2", text, NOT_MEASURED, f"{measured} [proxy: {direction}]",
                             f"judge backend `{e2.judge_backend}` gives proxy metrics, not LLM judgements",
                             numbers=_numbers(iv, fr, metric=metric)))
            continue
        verdict, why = decide(iv)
        out.append(Claim(cid, "EXP2", text, verdict, measured, why, scale_text(fr), _numbers(iv, fr, metric=metric)))
    return out


def exp3_scale(e3: Exp3Result) -> dict[str, float | None]:
    return scale_fractions("EXP3", e3.tokens_per_run, e3.max_steps, e3.non_embedding_params)


def claims_exp3(e3: Exp3Result | None, cfg: ReportConfig, problem: str | None = None) -> list[Claim]:
    """The study: the ``lmloss`` curriculum reaches the baseline's loss with ~20% fewer steps **and** data.
    Two measurements, each over seeds (paired by seed, Student t): the step reduction ``1 - steps/steps_b``
    and the data reduction ``1 - data/data_b`` (unique pool tokens by the target step). A run that never
    reached the target counts as reaching it at the end of its budget (an upper bound on its reduction), so
    such a claim can be contradicted or inconclusive but not reproduced."""
    s, claimed = STUDY_EXP3_CLAIM
    specs = [("exp3_lmloss_fewer_steps", f"`{s}` reaches the baseline's loss with ~{claimed:.0%} fewer steps"),
             ("exp3_lmloss_less_data", f"`{s}` reaches the baseline's loss with ~{claimed:.0%} less data "
                                        "(unique training tokens)")]
    if e3 is None:
        return _not_run(specs, "EXP3", problem or "no EXP3 result")
    b = e3.target_from
    runs_s, runs_b = e3.runs_of(s), e3.runs_of(b)
    if not runs_s or not runs_b:
        return _not_run(specs, "EXP3", f"strategies {s!r} and {b!r} needed; have {sorted(e3.strategies)}")
    fr = exp3_scale(e3)
    end = {"steps_to_target": lambda r: e3.max_steps,
           "data_to_target": lambda r: r.data_at_end if r.data_at_end is not None
           else round(r.pool_fraction * e3.pool_tokens)}
    out = []
    for (cid, text), fld in zip(specs, ("steps_to_target", "data_to_target")):
        reds, censored = [], 0
        for seed, rs in sorted(runs_s.items()):
            rb = runs_b.get(seed)
            vb = getattr(rb, fld) if rb is not None else None
            if not vb:
                continue
            vs = getattr(rs, fld)
            if vs is None:
                censored += 1
                vs = end[fld](rs)
            reds.append(1 - vs / vb)
        iv = t_interval(reds, cfg.confidence, "seeds")
        if iv is None:
            out.append(Claim(cid, "EXP3", text, NOT_RUN, "-", f"no seed where `{b}` reached the target"))
            continue
        verdict, why = decide(iv, cfg.exp3_min_reduction, can_reproduce=not censored)
        note = (f" (an upper bound: {s} never reached the target in {censored} of {len(reds)} runs, counted at "
                "the end of its budget)") if censored else ""
        out.append(Claim(cid, "EXP3", text, verdict,
                         f"reduction vs `{b}` {'at most' if censored else '='} {iv.text('+.1%')} over {iv.n} "
                         f"seed(s){note}", why,
                         scale_text(fr), _numbers(iv, fr, not_reached=censored)))
    return out
