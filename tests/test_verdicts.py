"""The pre-registered verdict rules (tinyhelen.report.verdicts): a table of hand-made intervals, each with the
verdict the rules give, then the intervals themselves (bootstrap bounds, the exact sign-flip test on
hand-computed examples and against a brute-force inversion)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tinyhelen.report import verdicts as V

IV = V.Interval


def iv(effect: float, lo: float | None, hi: float | None, n: int = 5, censored: int = 0) -> V.Interval:
    return IV(effect, lo, hi, n, "hand-made", censored)


# (name, interval, decide keywords, verdict, text the why must hold)
EXP3 = {"stated_size": 0.20, "seeds": 5, "fmt": "+.0%"}
CASES = [
    ("above the stated size", iv(0.68, 0.41, 0.88), EXP3, V.SIZE_DIFFERS,
     "effect +68% [+41%, +88%], larger than the stated 20% by 48 points"),
    ("contains the stated size", iv(0.22, 0.12, 0.30), EXP3, V.REPRODUCED, "contains the stated 20%"),
    ("stated size at the interval's end", iv(0.15, 0.10, 0.20), EXP3, V.REPRODUCED, "contains the stated 20%"),
    ("below the stated size, above zero", iv(0.08, 0.03, 0.12), EXP3, V.SIZE_DIFFERS,
     "smaller than the stated 20% by 12 points"),
    ("straddles zero", iv(0.05, -0.02, 0.12), EXP3, V.INCONCLUSIVE, "contains zero"),
    ("lower end at zero", iv(0.05, 0.0, 0.12), EXP3, V.INCONCLUSIVE, "contains zero"),
    ("opposite direction", iv(-0.10, -0.20, -0.03), EXP3, V.CONTRADICTED, "excludes zero in the other direction"),
    ("no measurement", None, EXP3, V.INCONCLUSIVE, "no measurement"),
    ("a single value", iv(0.30, None, None, n=1), {"fmt": "+.0%"}, V.INCONCLUSIVE, "no interval"),
    ("4 seeds, clear effect", iv(0.22, 0.12, 0.30, n=4), {**EXP3, "seeds": 4}, V.INCONCLUSIVE,
     "from 4 distinct seed(s): a verdict needs at least 5"),
    ("4 seeds, clearly opposite", iv(-0.22, -0.30, -0.12, n=4), {**EXP3, "seeds": 4}, V.INCONCLUSIVE,
     "at least 5"),
    ("5 seeds, clear effect", iv(0.22, 0.12, 0.30), EXP3, V.REPRODUCED, "excludes zero"),
    ("fewer seeds than a lower minimum", iv(0.22, 0.12, 0.30, n=3), {**EXP3, "seeds": 3, "min_seeds": 3},
     V.REPRODUCED, "contains the stated 20%"),
    ("not over training seeds: no minimum", iv(0.05, 0.01, 0.09, n=4), {}, V.REPRODUCED,
     "excludes zero in the study's direction"),
    ("direction only, other direction", iv(-0.05, -0.09, -0.01), {"seeds": 5}, V.CONTRADICTED, "other direction"),
    ("claimed decrease, measured decrease", iv(-0.05, -0.09, -0.01), {"direction": -1}, V.REPRODUCED,
     "study's direction"),
    ("claimed decrease, measured increase", iv(0.05, 0.01, 0.09), {"direction": -1}, V.CONTRADICTED,
     "other direction"),
    ("claimed decrease of 0.2, twice as large", iv(-0.5, -0.6, -0.4), {"direction": -1, "stated_size": -0.2},
     V.SIZE_DIFFERS, "larger than the stated 0.2 by 0.3"),
    ("censored, in the study's direction", iv(0.40, 0.30, 0.50, censored=2), EXP3, V.INCONCLUSIVE,
     "2 of 5 runs never reached the target"),
    ("censored, opposite direction", iv(-0.40, -0.50, -0.30, censored=5), EXP3, V.CONTRADICTED, "other direction"),
    ("not measured", iv(0.5, 0.4, 0.6), {"measurable": False, "reason": "proxy judge"}, V.NOT_MEASURED,
     "proxy judge"),
    ("not run", None, {"ran": False, "reason": "exp3.json absent"}, V.NOT_RUN, "exp3.json absent"),
    ("not run wins over everything", iv(0.5, 0.4, 0.6), {"ran": False, "measurable": False}, V.NOT_RUN,
     "no result"),
]


@pytest.mark.parametrize("name, interval, kw, verdict, why", CASES, ids=[c[0] for c in CASES])
def test_decide(name, interval, kw, verdict, why):
    got, text = V.decide(interval, **kw)
    assert got == verdict, text
    assert why in text


def test_decide_rejects_a_stated_size_against_the_direction():
    with pytest.raises(ValueError, match="not in the direction"):
        V.decide(iv(0.1, 0.0, 0.2), stated_size=-0.2)
    with pytest.raises(ValueError, match="direction"):
        V.decide(iv(0.1, 0.0, 0.2), direction=0)


def test_the_six_verdicts_in_order_and_their_metrics_keys():
    assert V.VERDICTS == ("reproduced", "direction reproduced, size differs", "inconclusive", "contradicted",
                          "not measured", "not run")
    assert [V.verdict_key(v) for v in V.VERDICTS] == ["reproduced", "direction_reproduced_size_differs",
                                                      "inconclusive", "contradicted", "not_measured", "not_run"]


# ------------------------------------------------------------------------------------ several definitions
def test_definitions_that_agree_give_their_verdict():
    got, why = V.decide_definitions({"first": iv(0.22, 0.12, 0.30), "best": iv(0.18, 0.10, 0.25)}, **EXP3)
    assert got == V.REPRODUCED and why.startswith("2 definitions agree: first: effect +22%")


def test_definitions_that_disagree_are_inconclusive_and_show_the_spread():
    ivs = {"first": iv(0.22, 0.12, 0.30), "smoothed": iv(0.08, 0.03, 0.12), "last": iv(0.05, -0.02, 0.12)}
    got, why = V.decide_definitions(ivs, **EXP3)
    assert got == V.INCONCLUSIVE
    assert why == ("the definitions disagree (first: reproduced, +22% [+12%, +30%]; smoothed: direction reproduced, "
                   "size differs, +8% [+3%, +12%]; last: inconclusive, +5% [-2%, +12%])")
    assert V.decide_definitions({"a": iv(0.22, 0.12, 0.30), "b": None}, **EXP3)[0] == V.INCONCLUSIVE
    with pytest.raises(ValueError, match="no definition"):
        V.decide_definitions({})


# ------------------------------------------------------------------------------------ bootstrap intervals
def test_bootstrap_reduction_never_exceeds_100_percent_for_non_negative_values():
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(2, 8))
        b = rng.uniform(1, 100, n)
        a = rng.uniform(0, 1, n) * b * rng.choice([0.0, 0.05, 1.0, 3.0], n)  # zeros, tiny, spread, larger
        r = V.reduction_interval(a, b, n_boot=500, seed=int(rng.integers(1000)))
        assert r.lo <= r.effect <= r.hi <= 1.0
    # a wide spread of reductions near 100%: a symmetric interval would pass 100%, the bootstrap cannot
    a, b = [2.0, 40.0, 5.0], [100.0, 100.0, 100.0]
    r = V.reduction_interval(a, b)
    mean, sd = np.mean(1 - np.array(a) / b), np.std(1 - np.array(a) / b, ddof=1)
    assert mean + 4.30 * sd / 3 ** 0.5 > 1.0 and r.hi <= 1.0
    assert V.reduction_interval([0.0, 0.0], [3.0, 5.0]).hi == 1.0


def test_bootstrap_on_a_hand_computed_example():
    """Two seeds with differences 0 and 1: resamples {0,0}, {0,1}, {1,0}, {1,1} (1/4 each) give means 0, 0.5,
    0.5, 1, so the 2.5% and 97.5% percentiles are 0 and 1."""
    r = V.mean_difference_interval([[0.0], [1.0]])
    assert (r.effect, r.lo, r.hi, r.n) == (0.5, 0.0, 1.0, 2)
    # the statistic pools the cells of the resampled seeds: (1 + 2 + 4) / 3, not the mean of seed means
    assert V.mean_difference_interval([[1.0, 2.0], [4.0]]).effect == pytest.approx(7 / 3)
    assert V.mean_difference_interval([[0.3]]) == IV(0.3, None, None, 1, "bootstrap over seeds")
    assert V.mean_difference_interval([]) is None


def test_bootstrap_is_deterministic_and_pairs_by_seed():
    a, b = [80.0, 95.0, 70.0, 90.0, 85.0], [100.0, 120.0, 90.0, 100.0, 110.0]
    assert V.reduction_interval(a, b) == V.reduction_interval(a, b)
    assert V.reduction_interval(a, b, n_boot=300, seed=1) != V.reduction_interval(a, b, n_boot=300, seed=2)
    # paired: a always ~20% below its own seed's b, so every resample gives ~20% despite b's spread
    b = [50.0, 200.0, 100.0, 400.0, 80.0]
    r = V.reduction_interval([0.8 * x for x in b], b)
    assert r.lo == pytest.approx(0.2) and r.hi == pytest.approx(0.2)
    with pytest.raises(ValueError, match="pair them by seed"):
        V.reduction_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        V.reduction_interval([1.0, 2.0], [1.0, 0.0])


# ------------------------------------------------------------------------------------ exact sign-flip
def test_sign_flip_on_hand_computed_examples():
    """d = (1, 2, 3): of the 8 flips only (+,+,+) reaches the observed sum 6, so p = 2 x 1/8. The 7 subset
    means are 1, 1.5, 2, 2, 2, 2.5, 3; at 75% k = floor(0.125 x 8) = 1 gives [1, 3], at 50% k = 2 gives
    [1.5, 2.5]. d = (-1, 2, 3): the flip sums 4, 6, 0, -2, 2, 0, -6, -4: two reach 4, p = 2 x 2/8."""
    s = V.sign_flip([1.0, 2.0, 3.0], 0.75)
    assert s.p == 0.25 and (s.interval.effect, s.interval.lo, s.interval.hi) == (2.0, 1.0, 3.0)
    s = V.sign_flip([1.0, 2.0, 3.0], 0.5)
    assert (s.interval.lo, s.interval.hi) == (1.5, 2.5)
    s = V.sign_flip([-1.0, 2.0, 3.0], 0.5)
    assert s.p == 0.5 and (s.interval.lo, s.interval.hi) == (0.5, 2.5)
    # 5 seeds all in one direction: the smallest p, 2/32, above 5%: no 95% interval from 5 values
    s = V.sign_flip([0.1, 0.2, 0.3, 0.4, 0.5])
    assert s.p == 0.0625 and (s.interval.lo, s.interval.hi) == (-math.inf, math.inf)
    assert V.decide(s.interval)[0] == V.INCONCLUSIVE
    s = V.sign_flip([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])  # 6: p = 2/64, k = 1: [smallest, largest] value
    assert s.p == 0.03125 and (s.interval.lo, s.interval.hi) == (0.1, 0.6)
    for bad in ([], [1.0] * 17, [1.0, math.nan]):
        with pytest.raises(ValueError, match="finite differences"):
            V.sign_flip(bad)


def _p_brute(d: np.ndarray) -> float:
    """The two-sided sign-flip p-value by explicit loops over the 2^n flips."""
    n, obs, up, down = len(d), float(d.sum()), 0, 0
    for m in range(2 ** n):
        t = sum(-x if m >> i & 1 else x for i, x in enumerate(d))
        up += t >= obs - 1e-9
        down += t <= obs + 1e-9
    return min(1.0, 2 * min(up, down) / 2 ** n)


def test_sign_flip_interval_inverts_its_test():
    """The interval holds exactly the means mu whose test (on d - mu) does not reject at 1 - confidence,
    checked between and beyond every subset mean; and it excludes zero exactly when p <= 1 - confidence."""
    rng = np.random.default_rng(3)
    for n, conf in ((3, 0.75), (4, 0.8), (6, 0.95), (7, 0.9)):
        d = np.round(rng.normal(0.3, 1.0, n), 3)
        s = V.sign_flip(d, conf)
        assert s.p == pytest.approx(_p_brute(d))
        assert (s.p <= 1 - conf) == (s.interval.lo > 0 or s.interval.hi < 0)
        means = sorted({float(np.mean(d[[i for i in range(n) if m >> i & 1]])) for m in range(1, 2 ** n)})
        probes = [means[0] - 1] + [(x + y) / 2 for x, y in zip(means, means[1:])] + [means[-1] + 1]
        for mu in probes:
            kept = V.sign_flip(d - mu, conf).p > 1 - conf
            assert kept == (s.interval.lo <= mu <= s.interval.hi), (n, conf, mu)
