"""analysis.verdict: intervals checked against scipy's own tests, and claims that reach both verdicts."""
import math

import numpy as np
import pytest
from scipy import stats

from analysis.verdict import NOT, SHOWS, all_show, claim, difference, mean_effect, ratio


def test_welch_interval_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 7), rng.normal(0.0, 2.0, 5)
    e = difference(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert e.estimate == pytest.approx(a.mean() - b.mean())
    assert (e.lo, e.hi) == pytest.approx((ci.low, ci.high))


def test_paired_and_mean_match_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, 6)
    b = a + rng.normal(0.5, 0.1, 6)
    ci = stats.ttest_rel(b, a).confidence_interval(0.95)
    e = difference(b, a, paired=True)
    assert (e.lo, e.hi) == pytest.approx((ci.low, ci.high))
    m = mean_effect(a)
    ci1 = stats.ttest_1samp(a, 0).confidence_interval(0.95)
    assert (m.lo, m.hi) == pytest.approx((ci1.low, ci1.high))


def test_ratio_is_geometric_and_positive_only():
    e = ratio([4.0, 4.0, 4.0], [1.0, 1.0, 1.0])
    assert (e.estimate, e.lo, e.hi) == pytest.approx((4.0, 4.0, 4.0))      # no spread: the point
    e = ratio([0.0, 2.0, 8.0], [1.0, 1.0, 2.0])                             # 0 dropped: log undefined
    assert e.n == (2, 3) and e.estimate == pytest.approx(4.0 / 2 ** (1 / 3))


@pytest.mark.parametrize("effect,verdict", [(1.0, SHOWS), (0.0, NOT), (-1.0, NOT)])
def test_claim_reaches_both_verdicts(effect, verdict):
    rng = np.random.default_rng(2)
    control = rng.normal(0.0, 0.1, 5)
    treated = control + effect + rng.normal(0, 0.1, 5)
    c = claim("treated above control", difference(treated, control), "control", above=0)
    assert c.verdict == verdict
    assert c.record(panel="p")["verdict"] == verdict and c.record()["ci_low"] == c.effect.lo


def test_single_seed_never_shows():
    c = claim("x", difference([5.0], [0.0]), "control", above=0)
    assert math.isnan(c.effect.lo) and c.verdict == NOT
    assert all_show("all", [c]) == NOT and all_show("none", []) == NOT


def test_within_and_rule_required():
    e = difference([1.0, 1.1, 0.9], [1.0, 1.05, 0.95])
    assert claim("equal", e, "c", within=(-1, 1)).shows
    assert not claim("equal", e, "c", within=(-0.01, 0.01)).shows
    with pytest.raises(ValueError):
        claim("no rule", e, "c")
