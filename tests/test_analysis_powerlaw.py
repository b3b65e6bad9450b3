"""analysis.powerlaw: recovering known exponents, interval coverage and width, degenerate inputs."""
import math

import numpy as np
import pytest

from analysis.powerlaw import bootstrap_slopes, fit_powerlaw
from analysis.synthetic import capacity_runs
from analysis.thresholds import capacity_thresholds

X = np.array([8, 16, 32, 64, 128, 256], float)


@pytest.mark.parametrize("b", [1.0, 0.5])
def test_exact_power_law(b):
    fit = fit_powerlaw(X, 3.0 * X ** b)
    assert fit.ok and fit.n_points == 6
    assert fit.exponent == pytest.approx(b, abs=1e-12)
    assert fit.prefactor == pytest.approx(3.0)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.ci_high - fit.ci_low < 1e-9


@pytest.mark.parametrize("b", [1.0, 0.5])
def test_coverage_and_width_with_multiplicative_noise(b):
    """50 seeded data sets y = 2 x^b exp(0.2 eps): the 95% interval holds b in >= 85% of them, excludes
    a slope 0.25 away in most, and is narrow (< 0.05 wide) at noise 0.005."""
    rng = np.random.default_rng(123)
    fits = [fit_powerlaw(X, 2.0 * X ** b * np.exp(0.2 * rng.standard_normal(X.size))) for _ in range(50)]
    coverage = np.mean([f.contains(b) for f in fits])
    assert coverage >= 0.85, coverage
    assert np.mean([f.contains(b + 0.25) for f in fits]) <= 0.25  # the interval can fail, i.e. it means something
    assert abs(np.mean([f.exponent for f in fits]) - b) < 0.05
    quiet = [fit_powerlaw(X, 2.0 * X ** b * np.exp(0.005 * rng.standard_normal(X.size))) for _ in range(20)]
    assert max(f.ci_high - f.ci_low for f in quiet) < 0.05


@pytest.mark.parametrize("b", [1.0, 0.5])
def test_end_to_end_coverage_from_capacity_sweeps(b):
    """Thresholds from adaptive capacity searches (m*_s = c N^b exp(0.15 eps_s), 4 seeds, integer probes),
    fitted with the union interval: coverage >= 0.85 over 50 seeded sweeps."""
    c = 4.0 if b == 1.0 else 8.0
    hits, widths = [], []
    for rep in range(50):
        runs = capacity_runs(ns=(16, 32, 64, 128, 256), curves={2: (c, b)}, sigma=0.15, seeds=4, quorum=0.5, rng=rep)
        table, reps = capacity_thresholds(runs, param="adapter.width", success="fit/success", quorum=0.5,
                                          x="task.n", curve_by=["adapter.depth"], n_boot=200, seed=rep)
        fit = fit_powerlaw(table["x"], table["threshold"], replicates=reps)
        assert fit.ok and "bootstrap" in fit.method and fit.n_boot_used >= 100
        assert fit.ci_low <= min(fit.t_ci[0], fit.boot_ci[0]) + 1e-12 and fit.ci_high >= max(fit.t_ci[1], fit.boot_ci[1]) - 1e-12
        hits.append(fit.contains(b))
        widths.append(fit.ci_high - fit.ci_low)
    assert np.mean(hits) >= 0.85, np.mean(hits)
    assert np.median(widths) < 0.35


def test_bootstrap_replicates_widen_the_interval():
    y = 2.0 * X
    reps = y[:, None] * np.exp(0.3 * np.random.default_rng(0).standard_normal((X.size, 300)))
    plain, boot = fit_powerlaw(X, y), fit_powerlaw(X, y, replicates=reps)
    assert plain.ci_high - plain.ci_low < 1e-9
    assert boot.exponent == plain.exponent and boot.ci_high - boot.ci_low > 0.1
    assert boot.boot_ci[0] < 1.0 < boot.boot_ci[1]


def test_bootstrap_slopes_skip_censored_replicates():
    reps = np.tile((2.0 * X)[:, None], (1, 4))
    reps[:4, 1] = np.nan          # only 2 points left: skipped
    reps[0, 2] = np.nan           # 5 points left: used
    slopes = bootstrap_slopes(X, reps)
    assert slopes.size == 3 and np.allclose(slopes, 1.0)


@pytest.mark.parametrize("x,y,why", [
    ([8, 16], [1, 2], ">= 3"),
    ([8, 16, 32], [1, np.nan, 4], ">= 3"),
    ([8, 16, 32], [1, 0, 4], ">= 3"),
    ([8, 8, 8], [1, 2, 3], "equal"),
])
def test_degenerate_inputs_give_nan_and_reason(x, y, why):
    fit = fit_powerlaw(x, y)
    assert not fit.ok and why in fit.reason
    assert math.isnan(fit.exponent) and math.isnan(fit.ci_low) and math.isnan(fit.ci_high)


def test_replicates_shape_is_checked():
    with pytest.raises(ValueError, match="replicates"):
        fit_powerlaw(X, X, replicates=np.ones((3, 10)))


# -- fit_censored_powerlaw: the capacity reports' fit (Tobit, censored points as bounds, one Wald t-interval) ----

from analysis.powerlaw import fit_censored_powerlaw, upper_half  # noqa: E402


def test_censored_fit_without_censoring_is_ols_with_its_t_interval():
    rng = np.random.default_rng(5)
    y = 2.0 * X * np.exp(0.1 * rng.standard_normal(X.size))
    a, b = fit_censored_powerlaw(X, y), fit_powerlaw(X, y)
    assert a.exponent == pytest.approx(b.exponent, abs=1e-12) and a.intercept == pytest.approx(b.intercept, abs=1e-12)
    assert (a.ci_low, a.ci_high) == pytest.approx(b.t_ci, abs=1e-12) and "Tobit" in a.method
    exact = fit_censored_powerlaw(X, 3.0 * X ** 0.5)
    assert exact.exponent == pytest.approx(0.5, abs=1e-12) and exact.ci_high - exact.ci_low < 1e-9


@pytest.mark.parametrize("b", [1.0, 0.5])
def test_censored_points_kept_as_bounds_recover_the_exponent(b):
    """y = 2 x^b exp(0.3 eps) over 8 sizes, every y above a cap C recorded as 'y > C' (the search range's top).
    Dropping those points biases the slope low (the kept top points are the low draws); the Tobit fit,
    keeping them as bounds, recovers b and its interval covers b in >= 85% of 60 data sets."""
    x = 2.0 ** np.arange(3, 11)
    rng = np.random.default_rng(11)
    cap = 2.0 * x[3] ** b                             # about half of the points end up censored
    tobit, dropped, hits = [], [], []
    for _ in range(60):
        y = 2.0 * x ** b * np.exp(0.3 * rng.standard_normal(x.size))
        cen = (y > cap).astype(int)
        fit = fit_censored_powerlaw(x, np.where(cen > 0, cap, y), cen)
        assert fit.ok and fit.n_points == 8
        tobit.append(fit.exponent)
        hits.append(fit.contains(b))
        dropped.append(fit_powerlaw(x[cen == 0], y[cen == 0]).exponent)
    assert abs(np.mean(tobit) - b) < 0.04, np.mean(tobit)
    assert np.nanmean(dropped) < b - 0.06, np.nanmean(dropped)   # (NaN: < 3 points left after dropping)
    assert np.mean(hits) >= 0.85, np.mean(hits)


def test_left_censored_bound_and_degenerate_censoring():
    x = np.array([4, 8, 16, 32, 64.0])
    y = 2.0 * x                                       # the smallest cell: m* <= 8 only (the first probe passed)
    fit = fit_censored_powerlaw(x, np.r_[8.0, y[1:]], [-1, 0, 0, 0, 0])
    assert fit.exponent == pytest.approx(1.0, abs=0.02) and fit.n_points == 5
    lo = fit_censored_powerlaw(x, np.r_[30.0, y[1:]], [-1, 0, 0, 0, 0])   # a loose bound: no pull on the slope
    assert lo.exponent == pytest.approx(1.0, abs=0.02)
    assert "2 distinct" in fit_censored_powerlaw(x, y, [0, 1, 1, 1, 1]).reason
    assert ">= 3" in fit_censored_powerlaw(x[:2], y[:2]).reason
    with pytest.raises(ValueError, match="censored"):
        fit_censored_powerlaw(x, y, [0, 1])


def test_curvature_whole_range_vs_upper_half():
    """A broken power law (slope 0.5 below N = 64, 1 above): the whole range mixes the two, the upper
    half of the x values recovers 1 with an interval that excludes the whole-range estimate."""
    x = np.array([16, 24, 32, 48, 64, 96, 128, 192, 256.0])
    y = np.where(x < 64, 8.0 * np.sqrt(x), x) * np.exp(0.02 * np.random.default_rng(0).standard_normal(x.size))
    up = upper_half(x)
    assert x[up].tolist() == [64, 96, 128, 192, 256]
    whole, upper = fit_censored_powerlaw(x, y), fit_censored_powerlaw(x[up], y[up])
    assert upper.exponent == pytest.approx(1.0, abs=0.05) and whole.exponent < 0.9
    assert not upper.contains(whole.exponent) and not whole.contains(upper.exponent)
    assert upper_half([1, 2, 3, 4]).tolist() == [False, False, True, True]
