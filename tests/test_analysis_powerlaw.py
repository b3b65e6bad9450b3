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
