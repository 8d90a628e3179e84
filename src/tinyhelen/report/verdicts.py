"""The pre-registered verdict rules of the report card (docs/report.md, "Verdicts and decision rules").

One decision function, ``decide``, turns an interval of an effect into one of six verdicts (``VERDICTS``):

* ``reproduced``: the interval excludes zero in the study's direction and, where the study states a size,
  contains it;
* ``direction reproduced, size differs``: it excludes zero in the study's direction and excludes the stated
  size (the why says larger or smaller, and by how much);
* ``inconclusive``: it contains zero, there is no interval, fewer distinct training seeds than
  ``MIN_SEEDS`` (claims over training seeds), or only a bound in the claim's favour (censored runs);
* ``contradicted``: it excludes zero in the other direction;
* ``not measured``: the inputs exist but cannot measure the claim;
* ``not run``: no result.

``decide_definitions`` decides a claim measured under several definitions (they must agree). Intervals
(each an ``Interval``): ``bootstrap_interval`` (paired percentile bootstrap over seeds, resampling seeds
with replacement; it never leaves the statistic's range, so a reduction ``1 - mean(a)/mean(b)`` of
non-negative values never exceeds 100%), with ``mean_difference_interval`` and ``reduction_interval`` on
top; ``sign_flip`` (exact sign-flip permutation test and interval of a mean paired difference, every one of
the 2^n sign flips for n <= 16); ``normal_interval`` (an estimate with a standard error). Pure Python and
numpy: no torch.
"""
from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

REPRODUCED = "reproduced"
SIZE_DIFFERS = "direction reproduced, size differs"
INCONCLUSIVE = "inconclusive"
CONTRADICTED = "contradicted"
NOT_MEASURED = "not measured"
NOT_RUN = "not run"
VERDICTS: tuple[str, ...] = (REPRODUCED, SIZE_DIFFERS, INCONCLUSIVE, CONTRADICTED, NOT_MEASURED, NOT_RUN)

MIN_SEEDS = 5  # the study ran 5 seeds: a claim over training seeds gets a verdict from no fewer
N_BOOT = 10_000  # bootstrap resamples
BOOT_SEED = 0  # the bootstrap's fixed RNG seed: the same values give the same interval
MAX_EXACT = 16  # sign_flip enumerates all 2^n sign flips up to this n


def verdict_key(verdict: str) -> str:
    """The verdict as a metrics key: spaces and commas become one underscore
    ("direction reproduced, size differs" -> "direction_reproduced_size_differs")."""
    return re.sub(r"[ ,]+", "_", verdict)


# ------------------------------------------------------------------------------------ intervals
@dataclass(frozen=True)
class Interval:
    """An effect with its interval. ``lo``/``hi`` are None when there is no spread to build one from (a
    single value); they may be infinite (``sign_flip`` with too few values for its level). ``n``: the
    resampled units (seeds, answers, ...). ``censored``: units whose value is only a bound in the claim's
    favour (a run that never reached its target, counted at the end of its budget): the true effect is no
    more favourable than measured, so such an interval can contradict the claim but never support it."""

    effect: float
    lo: float | None
    hi: float | None
    n: int
    method: str
    censored: int = 0

    def text(self, fmt: str = "+.4f") -> str:
        if self.lo is None or self.hi is None:
            return f"{self.effect:{fmt}} (n={self.n}, no interval)"
        return f"{self.effect:{fmt}} [{self.lo:{fmt}}, {self.hi:{fmt}}]"


def bootstrap_interval(statistic: Callable[[np.ndarray], np.ndarray | float], n: int, *, confidence: float = 0.95,
                       n_boot: int = N_BOOT, seed: int = BOOT_SEED, method: str = "bootstrap over seeds",
                       censored: int = 0) -> Interval | None:
    """Paired percentile bootstrap over ``n`` units (seeds). ``statistic(idx)`` computes the statistic from
    the units at the integer indices ``idx`` (shape ``(..., n)``), vectorised over the leading axes (one
    value per row); the effect is ``statistic(arange(n))``. Resampling units with replacement keeps the
    pairing (every value of a unit travels with it) and the percentile interval lies within the range of
    the resampled statistics. None for no unit; no interval (lo = hi = None) for one."""
    if n < 1:
        return None
    effect = float(statistic(np.arange(n)))
    if n == 1:
        return Interval(effect, None, None, 1, method, censored)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boots = np.asarray(statistic(idx), dtype=float)
    lo, hi = np.quantile(boots, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(effect, float(lo), float(hi), n, method, censored)


def mean_difference_interval(groups: Sequence[Sequence[float]], **kw) -> Interval | None:
    """Mean of paired differences, grouped by seed (``groups[i]``: every difference of seed i, e.g. one per
    (architecture, task) cell); the bootstrap resamples seeds and the statistic is the mean over all the
    differences of the resampled seeds. ``kw``: ``bootstrap_interval``'s keywords."""
    groups = [[float(x) for x in g] for g in groups]
    if any(not g or not all(math.isfinite(x) for x in g) for g in groups):
        raise ValueError("mean_difference_interval: every group needs finite values")
    sums = np.array([sum(g) for g in groups])
    counts = np.array([len(g) for g in groups], dtype=float)
    return bootstrap_interval(lambda idx: sums[idx].sum(-1) / counts[idx].sum(-1), len(groups), **kw)


def reduction_interval(a: Sequence[float], b: Sequence[float], **kw) -> Interval | None:
    """Reduction ``1 - mean(a)/mean(b)`` over seeds paired by position (``a[i]``, ``b[i]``: seed i), e.g.
    steps to a target of a strategy (a) and of its baseline (b). With ``a >= 0`` every resampled reduction,
    hence the interval, is at most 1 (100%). ``kw``: ``bootstrap_interval``'s keywords."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape != xb.shape or xa.ndim != 1:
        raise ValueError(f"reduction_interval: {xa.shape} vs {xb.shape} values: pair them by seed")
    if not (np.isfinite(xa).all() and np.isfinite(xb).all() and (xb > 0).all()):
        raise ValueError("reduction_interval: values must be finite and the baseline's positive")
    return bootstrap_interval(lambda idx: 1 - xa[idx].mean(-1) / xb[idx].mean(-1), len(xa), **kw)


@dataclass(frozen=True)
class SignFlip:
    """Exact sign-flip test of a zero mean paired difference: two-sided ``p`` and the interval of the
    means it does not reject (``interval.lo``/``hi`` infinite when the level needs more values)."""

    p: float
    interval: Interval


def sign_flip(diffs: Sequence[float], confidence: float = 0.95, method: str = "exact sign-flip") -> SignFlip:
    """Exact sign-flip permutation test for the mean of paired differences ``d`` (valid when each
    difference is symmetric about the true mean), enumerating all 2^n sign flips (n <= ``MAX_EXACT``).

    ``p`` = min(1, 2 min(p+, p-)), p+ = #{flips s: sum(s d) >= sum(d)} / 2^n (p- with <=). The interval
    inverts the two one-sided tests at (1 - confidence)/2 each: with the 2^n - 1 means of the non-empty
    subsets of ``d`` sorted as M_1 <= ... <= M_(2^n - 1) and k = floor((1 - confidence)/2 * 2^n), it is
    [M_k, M_(2^n - k)] (Hartigan 1969), infinite when k = 0. It excludes zero exactly when p <= 1 -
    confidence. With n = 5 the smallest p is 2/32 = 0.0625: no 95% interval excludes zero."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if not 1 <= n <= MAX_EXACT or not np.isfinite(d).all():
        raise ValueError(f"sign_flip: needs 1 to {MAX_EXACT} finite differences, got {n}")
    signs = np.array(list(product((1.0, -1.0), repeat=n)))  # 2^n x n, the first row all +1
    sums, observed = signs @ d, float(d.sum())
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    p_up, p_down = np.mean(sums >= observed - tol), np.mean(sums <= observed + tol)
    members = signs[1:] < 0  # the non-empty subsets (the flipped positions of every other flip)
    means = np.sort((members @ d) / members.sum(1))
    k = math.floor((1 - confidence) / 2 * 2 ** n + 1e-9)
    lo, hi = (-math.inf, math.inf) if k == 0 else (float(means[k - 1]), float(means[-k]))
    return SignFlip(min(1.0, 2 * float(min(p_up, p_down))), Interval(float(d.mean()), lo, hi, n, method))


def normal_interval(effect: float, se: float | None, confidence: float, n: int, method: str) -> Interval:
    """``effect`` +- z se (no interval when there is no standard error)."""
    if se is None:
        return Interval(effect, None, None, n, method)
    half = statistics.NormalDist().inv_cdf(0.5 + confidence / 2) * se
    return Interval(effect, effect - half, effect + half, n, method)


# ------------------------------------------------------------------------------------ decisions
def _points(x: float, fmt: str) -> str:
    """A size gap as the card writes it: percentage points (at ``fmt``'s precision) for percentages, else in
    ``fmt``."""
    pct = re.search(r"\.(\d+)%$", fmt)
    return f"{abs(x) * 100:.{pct.group(1)}f} points" if pct else format(abs(x), fmt.lstrip("+"))


def decide(iv: Interval | None, *, direction: int = +1, stated_size: float | None = None, seeds: int | None = None,
           min_seeds: int = MIN_SEEDS, measurable: bool = True, ran: bool = True, reason: str = "",
           fmt: str = "+.4g") -> tuple[str, str]:
    """The one decision rule: (verdict, why).

    ``iv``: the effect and its interval; ``direction``: the sign of the effect the study claims (+1 or -1);
    ``stated_size``: the effect the study states, in the units of ``iv`` (sign = ``direction``), None for a
    direction only; ``seeds``: the number of distinct training seeds the interval is over, for claims
    measured over training seeds (None: not over training seeds, no minimum); ``ran``/``measurable``: False
    gives ``not run``/``not measured`` with ``reason`` as the why; ``fmt``: how the why writes values."""
    if direction not in (1, -1):
        raise ValueError(f"decide: direction must be +1 or -1, got {direction}")
    if stated_size is not None and stated_size * direction <= 0:
        raise ValueError(f"decide: stated size {stated_size} is not in the direction {direction:+d}")
    if not ran:
        return NOT_RUN, reason or "no result"
    if not measurable:
        return NOT_MEASURED, reason or "the inputs cannot measure the claim"
    if iv is None:
        return INCONCLUSIVE, "no measurement"
    effect = f"effect {iv.text(fmt)}"
    if seeds is not None and seeds < min_seeds:
        return INCONCLUSIVE, f"{effect} from {seeds} distinct seed(s): a verdict needs at least {min_seeds}"
    if iv.lo is None or iv.hi is None:
        return INCONCLUSIVE, f"{effect}: a single value, no interval"
    lo, hi = sorted((direction * iv.lo, direction * iv.hi))  # oriented: > 0 is the study's direction
    if hi < 0:
        return CONTRADICTED, f"{effect} excludes zero in the other direction"
    if lo <= 0:
        return INCONCLUSIVE, f"{effect} contains zero"
    if iv.censored:
        return INCONCLUSIVE, (f"{effect} excludes zero, but {iv.censored} of {iv.n} runs never reached the "
                              "target: the effect is only a bound in the claim's favour")
    if stated_size is None:
        return REPRODUCED, f"{effect} excludes zero in the study's direction"
    size = format(abs(stated_size), fmt.lstrip("+"))
    if lo <= direction * stated_size <= hi:
        return REPRODUCED, f"{effect} excludes zero and contains the stated {size}"
    gap = direction * (iv.effect - stated_size)
    word = "larger" if gap > 0 else "smaller"
    return SIZE_DIFFERS, f"{effect}, {word} than the stated {size} by {_points(gap, fmt)}"


def decide_definitions(intervals: Mapping[str, Interval | None], **rules) -> tuple[str, str]:
    """A claim measured under several definitions (e.g. steps to target under several target definitions):
    ``decide`` each with the same ``rules`` (its keywords; ``seeds`` may map each definition to its own number
    of seeds). The same verdict under every definition is the verdict; otherwise ``inconclusive``, and the why
    shows each definition's verdict, effect and interval."""
    if not intervals:
        raise ValueError("decide_definitions: no definition")
    fmt = rules.get("fmt", "+.4g")
    seeds = rules.get("seeds")
    decided = {name: decide(iv, **{**rules, "seeds": seeds.get(name) if isinstance(seeds, Mapping) else seeds})
               for name, iv in intervals.items()}
    verdicts = {v for v, _ in decided.values()}
    if len(verdicts) == 1:
        (verdict,) = verdicts
        return verdict, f"{len(decided)} definitions agree: " + "; ".join(f"{k}: {w}" for k, (_, w) in decided.items())
    spread = "; ".join(f"{k}: {v}, {'no measurement' if intervals[k] is None else intervals[k].text(fmt)}"
                       for k, (v, _) in decided.items())
    return INCONCLUSIVE, f"the definitions disagree ({spread})"
