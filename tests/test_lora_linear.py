"""The linear case of Zeng & Lee (ICLR 2024): `lora_construction.eckart_young_tail` against a numpy SVD oracle,
the linear construction exact from R* = ⌈D/L⌉ and on the tail below it, and the task's metrics
(`test/target_var`, `test/mse_rel`, `test/ey_tail`)."""
import numpy as np
import pytest
import torch

import ftcore
from ftcore.tasks.lora_construction import construct, eckart_young_tail

DT = torch.float64


def _weights(seed, E, D, n):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(E, D, D, generator=g, dtype=DT) * 2 - 1) / D ** 0.5 for _ in range(n)]


def _oracle(W, Wt, k):
    """numpy: Σ_{i>k} σ_i(∏W̄ − ∏W)² / D, member by member."""
    out = []
    for e in range(W[0].shape[0]):
        P = np.linalg.multi_dot([w[e].numpy() for w in W]) if len(W) > 1 else W[0][e].numpy()
        Pt = np.linalg.multi_dot([w[e].numpy() for w in Wt]) if len(Wt) > 1 else Wt[0][e].numpy()
        s = np.linalg.svd(Pt - P, compute_uv=False)
        ke = int(np.broadcast_to(k, (W[0].shape[0],))[e])
        out.append((s[ke:] ** 2).sum() / P.shape[0])
    return np.array(out)


@pytest.mark.parametrize("D,L,Lb", [(8, 2, 1), (16, 4, 1), (6, 3, 2)])
def test_tail_matches_numpy_svd(D, L, Lb):
    W, Wt = _weights(D + L, 3, D, L), _weights(100 + D, 3, D, Lb)
    for k in (0, 1, L, D - 1, D, D + 3):
        np.testing.assert_allclose(eckart_young_tail(W, Wt, k).numpy(), _oracle(W, Wt, k), rtol=1e-10, atol=1e-14)
    ks = np.array([0, L, 2 * L])                                          # one k per member
    np.testing.assert_allclose(eckart_young_tail(W, Wt, torch.tensor(ks)).numpy(), _oracle(W, Wt, ks), rtol=1e-10)


@pytest.mark.parametrize("D,L", [(8, 2), (8, 4), (12, 4)])
def test_linear_construction_exact_from_r_star_and_on_the_tail_below(D, L):
    """Identity, no bias, L̄ = 1: the residual ‖∏W' − W̄‖²_F / D is the tail at L·R < D and 0 from R* = ⌈D/L⌉."""
    E = 3
    W, Wt = _weights(7 * D + L, E, D, L), _weights(3 * D + L, E, D, 1)
    r_star = -(-D // L)
    for R in range(0, D + 1):
        downs, ups, _ = construct(W, None, Wt, None, R, "identity", False, None)
        P = W[0] + downs[0] @ ups[0]
        for l in range(1, L):
            P = P @ (W[l] + downs[l] @ ups[l])
        resid = ((P - Wt[0]) ** 2).sum((1, 2)) / D
        tail = eckart_young_tail(W, Wt, L * R)
        if R >= r_star:
            assert float(resid.max()) < 1e-16 and float(tail.max()) == 0.0, (R, resid)
        else:
            torch.testing.assert_close(resid, tail, rtol=1e-8, atol=1e-14)
            assert float(tail.min()) > 0


def _member(method, rank, seed, activation="identity", bias=False):
    return ftcore.member_from_dict({
        "model": {"name": "mlp", "width": 6, "depth": 2, "activation": activation, "bias": bias, "last_activation": False},
        "adapter": {"name": "lora", "rank": rank, "tune_bias": bias},
        "task": {"name": "lora_teacher", "target_depth": 1, "batch_size": 32, "n_val": 64, "n_test": 4000},
        "train": {"method": method, "steps": 0 if method == "construction" else 5, "lr": 1e-2, "eval_every": 5},
        "seed": seed})


def test_task_metrics_relative_to_target_variance_and_the_tail():
    ranks = [1, 2, 3]                                                      # D = 6, L = 2: R* = 3
    res = ftcore.fit([_member("construction", r, seed=4) for r in ranks])
    for r, out in zip(ranks, res):
        m = out.metrics
        assert m["test/mse_rel"] == pytest.approx(m["test/mse"] / m["test/target_var"], rel=1e-6)
        assert 0 < m["test/target_var"] and m["test/mse_base"] > 0
        if r < 3:                                                          # the construction attains the bound
            assert m["test/ey_tail"] > 0
            assert m["test/mse"] == pytest.approx(m["test/ey_tail"], rel=0.1)
            assert m["test/ey_tail_rel"] == pytest.approx(m["test/ey_tail"] / m["test/target_var"], rel=1e-6)
        else:
            assert m["test/ey_tail"] == 0 and m["test/mse_rel"] < 1e-12
    relu = ftcore.fit([_member("adam", 2, seed=4, activation="relu", bias=True)])[0].metrics
    assert "test/ey_tail" not in relu and "test/target_var" in relu          # the bound is for linear networks only
