"""FTC constructive references (ftcore.tasks.ftc_construction): exact fits without an optimizer, widths that
do not grow with K, and `train.method: construction` on ftc_relabel through the packed `fit`."""
import numpy as np
import pytest

import ftcore
from ftcore.fit import fit
from ftcore.tasks.ftc_construction import depth2, depth3, g_numpy, needed, width_needed

TOL = 0.1


def problem(n, k, seed=0):
    rng = np.random.default_rng(seed)
    t, res = rng.standard_normal(k), np.zeros(k)
    res[rng.permutation(k)[:n]] = rng.standard_normal(n)
    return t, res


@pytest.mark.parametrize("n,k", [(16, 16), (16, 64), (48, 96), (24, 24 * 16)])
def test_constructions_fit_exactly_at_their_width_and_not_below(n, k):
    t, res = problem(n, k)
    need = needed(res, TOL)
    w2 = depth2(t, res, 3 * len(need), TOL)
    assert np.abs(g_numpy(t, w2, 2) - res)[need].max() < 1e-9          # the needed points: exact
    assert np.abs(g_numpy(t, w2, 2) - res).max() < TOL                   # the others: |r| < tol kept
    short = depth2(t, res, 3 * len(need) - 1, TOL)
    assert np.abs(g_numpy(t, short, 2) - res).max() >= TOL
    m3 = width_needed(t, res, TOL, 3)
    assert np.abs(g_numpy(t, depth3(t, res, m3, TOL), 3) - res)[need].max() < 1e-7
    assert depth3(t, res, m3 - 1, TOL) is None


def test_widths_do_not_grow_with_k_and_depth3_is_sqrt_n():
    n = 32
    w2, w3 = [], []
    for k in (32, 64, 128, 256, 512):                     # K/N from 1 to 16
        t, res = problem(n, k, seed=1)
        res[res != 0] = np.sign(res[res != 0])            # |r| = 1: every relabelled point is needed
        w2.append(width_needed(t, res, TOL, 2))
        w3.append(width_needed(t, res, TOL, 3))
    assert w2 == [3 * n] * 5
    assert max(w3) - min(w3) <= 4 and max(w3) <= 5 * np.sqrt(n) + 4
    big = width_needed(*problem(4 * n, 8 * n, seed=2), TOL, 3)
    assert big / np.mean(w3) < 2.6                         # 4x N: about 2x width (sqrt), far below 4x


def test_construction_through_fit():
    """f + g scored by the task's own metrics after `train.method: construction` (float64, no steps)."""
    def member(depth, width, seed):
        return ftcore.member_from_dict({
            "model": {"name": "mlp", "width": 6, "depth": 2}, "adapter": {"name": "additive_relu", "depth": depth,
                                                                          "width": width},
            "task": {"name": "ftc_relabel", "dim": 3, "n": 12, "k": 48, "labels": "rademacher"},
            "train": {"method": "construction"}, "seed": seed})
    res = fit([member(2, 36, 0), member(2, 35, 1)]) + fit([member(3, 40, 0), member(3, 6, 1)])
    assert [r.metrics["fit/success"] for r in res] == [1.0, 0.0, 1.0, 0.0]
    assert res[0].metrics["fit/max_err"] < 1e-6 and res[2].metrics["fit/max_err"] < 1e-6   # float64 run
    assert all(r.steps == 0 and r.status == "ok" for r in res)


def test_construction_needs_additive_relu():
    with pytest.raises(ValueError, match="additive_relu"):
        ftcore.member_from_dict({"model": {"name": "mlp", "width": 6, "depth": 2},
                                 "adapter": {"name": "lora", "rank": 1},
                                 "task": {"name": "ftc_relabel", "dim": 3, "n": 4}, "train": {"method": "construction"}})
