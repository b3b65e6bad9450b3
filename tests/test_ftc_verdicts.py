"""FTC verdicts on synthetic capacity records (analysis.synthetic.capacity_runs), both ways: the K-slope claim
"m* does not grow with K" and the N-slope claim "m* grows like N^t", read from the upper half of x; the
curvature flag when the whole range and the upper half disagree; a wide interval never shows."""
import pandas as pd
import pytest

from analysis.capacity_report import capacity_section
from analysis.meta import SweepMeta
from analysis.synthetic import capacity_runs

KS = (32, 48, 64, 96, 128, 192, 256, 384, 512)
NS = (16, 24, 32, 48, 64, 96, 128, 192, 256)


def k_runs(c, b, *, sigma=0.05, seeds=3, rng=0) -> pd.DataFrame:
    """An ftc_k-shaped sweep: x = task.k at N = 32, m*_s = c K^b exp(sigma eps_s), theory slope 0."""
    r = capacity_runs(sweep="syn_k", ns=KS, curves={2: (c, b)}, sigma=sigma, seeds=seeds, quorum=0.5,
                      theory={"adapter.depth=2": 0.0}, rng=rng)
    return r.assign(**{"task.k": r["task.n"], "task.n": 32, "report.x": "task.k"})


def section(runs, tmp_path):
    return capacity_section(runs, SweepMeta.from_runs(runs), tmp_path, n_boot=20)


def verdicts(sec) -> list[str]:
    return [c["verdict"] for c in sec.claims]


def test_k_slope_flat_shows(tmp_path):
    sec = section(k_runs(60.0, 0.0), tmp_path)
    assert verdicts(sec) == ["shows"]
    up = [f for f in sec.fits if f["range"] == "upper"][0]
    assert up["x"] == "task.k" and (up["x_min"], up["x_max"]) == (128, 512) and up["ci_high"] < 0.25
    assert "**shows** — `adapter.depth=2`, upper half of task.k (128..512): m* does not grow with task.k" in sec.markdown


@pytest.mark.parametrize("b", [0.5, 1.0])
def test_k_slope_growing_does_not_show(tmp_path, b):
    sec = section(k_runs(2.0, b), tmp_path)
    assert verdicts(sec) == ["does not show"]
    assert [f for f in sec.fits if f["range"] == "upper"][0]["ci_low"] > 0.25


def test_wide_interval_does_not_show(tmp_path):
    """Flat on average but very noisy with 2 seeds: the interval is wide, so the claim cannot pass."""
    sec = section(k_runs(60.0, 0.0, sigma=0.8, seeds=2, rng=3), tmp_path)
    up = [f for f in sec.fits if f["range"] == "upper"][0]
    assert up["ci_high"] - up["ci_low"] > 0.5 and verdicts(sec) == ["does not show"]


def test_n_slope_both_ways(tmp_path):
    good = capacity_runs(ns=NS, curves={2: (1.0, 1.0), 3: (4.0, 0.5)}, sigma=0.05, quorum=0.5, lo=2, hi=512)
    assert verdicts(section(good, tmp_path / "a")) == ["shows", "shows"]
    bad = capacity_runs(ns=NS, curves={2: (6.0, 0.5), 3: (1.0, 1.0)}, sigma=0.05, quorum=0.5, lo=2, hi=512,
                        theory={"adapter.depth=2": 1.0, "adapter.depth=3": 0.5})
    assert verdicts(section(bad, tmp_path / "b")) == ["does not show", "does not show"]


def test_curvature_flag_and_verdict_from_the_upper_half(tmp_path):
    """Slope 0.5 below N = 64 and 1 from there (small-N thresholds bend the curve, as issue 14 measured at
    another dim): the whole range excludes 1, the upper half shows it, and the report flags curvature."""
    one = {"adapter.depth=2": 1.0}
    low = capacity_runs(ns=NS[:4], curves={2: (8.0, 0.5)}, quorum=0.5, lo=2, hi=512, theory=one)
    high = capacity_runs(ns=NS[4:], curves={2: (1.0, 1.0)}, quorum=0.5, lo=2, hi=512, theory=one)
    sec = section(pd.concat([low, high], ignore_index=True), tmp_path)
    whole, upper = sorted(sec.fits, key=lambda f: f["range"])
    assert whole["range"] == "all" and whole["consistent_with_theory"] is False and whole["exponent"] < 0.9
    assert upper["exponent"] == pytest.approx(1.0, abs=0.02)
    assert verdicts(sec) == ["shows"]
    assert "⚠ curvature: `adapter.depth=2`: whole-range slope" in sec.markdown


def test_censored_cells_stay_in_the_fit(tmp_path):
    """m* = 2N with the search capped at 256: N = 192, 256 censored, kept as bounds (n_points counts them)."""
    runs = capacity_runs(ns=NS, curves={2: (2.0, 1.0)}, quorum=0.5, lo=2, hi=256, theory={"adapter.depth=2": 1.0})
    sec = section(runs, tmp_path)
    whole = [f for f in sec.fits if f["range"] == "all"][0]
    assert whole["n_points"] == 9 and whole["n_censored"] == 2 and whole["exponent"] == pytest.approx(1.0, abs=0.03)
    assert "kept in the fit as the bound m* > 256" in sec.markdown


@pytest.mark.parametrize("b16,flagged", [(1.0, False), (0.4, True)])
def test_dimension_check(tmp_path, b16, flagged):
    """Two task.dim values in one sweep (a hidden axis, so separate curves): the report flags verdicts that
    differ across the dimension, and only then."""
    frames = []
    for dim, (c, b) in ((8, (1.0, 1.0)), (16, (2.0, b16))):
        f = capacity_runs(ns=NS, curves={2: (c, b)}, sigma=0.05, quorum=0.5, lo=2, hi=512,
                          theory={"adapter.depth=2": 1.0}, rng=dim)
        frames.append(f.assign(**{"task.dim": dim, "group": f["group"] + f",task.dim={dim}",
                                  "run_id": f["run_id"] + f"-{dim}"}))
    sec = section(pd.concat(frames, ignore_index=True), tmp_path)
    assert verdicts(sec) == ["shows", "does not show" if flagged else "shows"]
    assert ("verdicts differ across task.dim for `adapter.depth=2`" in sec.markdown) == flagged
