"""analysis.thresholds: exact thresholds on noiseless data, quorum, censoring, monotonicity, bootstrap."""
import math

import numpy as np
import pandas as pd
import pytest

from analysis.synthetic import capacity_runs
from analysis.thresholds import capacity_thresholds, cell_threshold

CURVES = {2: (1.5, 1.0), 3: (3.0, 0.5)}
NS = (8, 16, 32, 64, 128)


def thresholds(runs, quorum=0.67, **kw):
    return capacity_thresholds(runs, param="adapter.width", success="fit/success", quorum=quorum, x="task.n",
                               curve_by=["adapter.depth"], **kw)


def test_exact_on_noiseless_data():
    table, reps = thresholds(capacity_runs(ns=NS, curves=CURVES, sigma=0.0), n_boot=50)
    assert len(table) == 10 and reps.shape == (10, 50)
    for _, r in table.iterrows():
        c, b = CURVES[r["adapter.depth"]]
        assert r["threshold"] == max(1, math.ceil(c * r["x"] ** b)), r.to_dict()
        assert r["curve"] == f"adapter.depth={r['adapter.depth']}"
        assert r["n_seeds"] == 3 and r["monotone"] and not r["censored"] and not r["lower_censored"]
        # no seed noise: every bootstrap replicate finds the same threshold, a zero-width interval
        assert r["ci_low"] == r["ci_high"] == r["threshold"] and r["boot_censored_frac"] == 0
    np.testing.assert_array_equal(reps, np.repeat(table["threshold"].to_numpy()[:, None], 50, axis=1))


def test_quorum_rule_and_failures():
    # probes 4, 8, 16 with 3 seeds: passes 1/3, 2/3, 3/3
    c = np.repeat([4, 8, 16], 3)
    s = np.tile([0, 1, 2], 3)
    z = np.array([1, 0, 0, 1, 1, 0, 1, 1, 1], bool)
    assert cell_threshold(c, s, z, 0.6, n_boot=0)[0]["threshold"] == 8
    assert cell_threshold(c, s, z, 2 / 3, n_boot=0)[0]["threshold"] == 8   # 2/3 >= 0.666... exactly
    assert cell_threshold(c, s, z, 0.67, n_boot=0)[0]["threshold"] == 8    # 0.67 is read as 2/3 (0.01 tolerance)
    assert cell_threshold(c, s, z, 0.7, n_boot=0)[0]["threshold"] == 16    # 2/3 < 0.7: all seeds needed
    assert cell_threshold(c, s, z, 0.3, n_boot=0)[0]["lower_censored"]


def test_diverged_runs_count_as_failures():
    runs = capacity_runs(ns=(16,), curves={2: (1.5, 1.0)}, seeds=2)  # m* = 24; probes ... 16, 32, 24, 20, 22, 23
    runs["fit/success"] = runs["fit/success"].astype(object)  # as read back when a part holds nulls
    assert thresholds(runs, quorum=1.0, n_boot=0)[0]["threshold"].iloc[0] == 24
    runs.loc[(runs["adapter.width"] == 24) & (runs["seed"] == 1), "status"] = "failed"  # success True, status failed
    assert thresholds(runs, quorum=1.0, n_boot=0)[0]["threshold"].iloc[0] == 32
    i = (runs["adapter.width"] == 32) & (runs["seed"] == 0)
    runs.loc[i, ["status", "fit/success", "fit/max_err"]] = ["diverged", None, np.nan]
    r = thresholds(runs, quorum=1.0, n_boot=0)[0].iloc[0]
    assert r["censored"] and math.isnan(r["threshold"]) and r["probes"].endswith("32:1/2")


def test_censored_and_non_monotone():
    runs = capacity_runs(ns=(8, 128), curves={2: (1.5, 1.0)}, hi=64)
    table, reps = thresholds(runs, n_boot=20)
    cen = table[table["x"] == 128].iloc[0]
    assert cen["censored"] and math.isnan(cen["threshold"]) and math.isnan(cen["ci_low"])
    assert cen["max_probe"] == 64 and np.isnan(reps[table["x"] == 128]).all()
    # a larger probe that fails after a smaller one passed: still the smallest passing value, flagged
    big = runs[(runs["task.n"] == 8)]["adapter.width"].max()
    runs.loc[(runs["task.n"] == 8) & (runs["adapter.width"] == big), "fit/success"] = False
    r = thresholds(runs, n_boot=0)[0].query("x == 8").iloc[0]
    assert r["threshold"] == 12 and not r["monotone"]


def test_bootstrap_interval_with_seed_noise():
    runs = capacity_runs(ns=NS, curves=CURVES, sigma=0.3, seeds=8, rng=3)
    table, reps = thresholds(runs, quorum=0.5, n_boot=400, seed=1)
    assert reps.shape == (len(table), 400)
    assert (table["ci_low"] <= table["threshold"]).all() and (table["threshold"] <= table["ci_high"]).all()
    assert (table["ci_high"] > table["ci_low"]).mean() >= 0.8  # seed noise gives intervals of real width
    for i, r in table.iterrows():
        good = reps[i][np.isfinite(reps[i])]
        assert np.isin(good, [float(p.split(":")[0]) for p in r["probes"].split()]).all()  # replicates are probes
        assert np.percentile(good, 2.5) == r["ci_low"]
    # seeded: same seed, same intervals; another seed, other replicates
    again, reps2 = thresholds(runs, quorum=0.5, n_boot=400, seed=1)
    pd.testing.assert_frame_equal(table, again)
    np.testing.assert_array_equal(reps, reps2)
    assert not np.array_equal(reps, thresholds(runs, quorum=0.5, n_boot=400, seed=2)[1])


def test_interval_shrinks_with_more_seeds():
    def mean_rel_width(seeds):
        t, _ = thresholds(capacity_runs(ns=NS, curves={2: (4.0, 1.0)}, sigma=0.3, seeds=seeds, rng=5),
                          quorum=0.5, n_boot=300)
        return float(((t["ci_high"] - t["ci_low"]) / t["threshold"]).mean())
    assert mean_rel_width(40) < 0.6 * mean_rel_width(4)


def test_missing_columns_are_named():
    runs = capacity_runs(ns=(8,))
    with pytest.raises(ValueError, match="fit/acc"):
        capacity_thresholds(runs, param="adapter.width", success="fit/acc", quorum=0.5, x="task.n")
    with pytest.raises(ValueError, match="adapter.rank"):
        capacity_thresholds(runs, param="adapter.rank", success="fit/success", quorum=0.5, x="task.n")


def test_censoring_codes_for_the_censored_fit():
    """Exact (0), right-censored at the largest probe (+1), left-censored at a smallest probe > 1 (−1)."""
    from analysis.thresholds import censoring
    tab = pd.DataFrame({"threshold": [12.0, np.nan, 2.0, 1.0], "censored": [False, True, False, False],
                        "lower_censored": [False, False, True, True], "min_probe": [1.0, 1.0, 2.0, 1.0],
                        "max_probe": [16.0, 64.0, 8.0, 8.0]})
    y, code = censoring(tab)
    assert y.tolist() == [12.0, 64.0, 2.0, 1.0] and code.tolist() == [0, 1, -1, 0]
