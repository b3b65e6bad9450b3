"""The synthetic contrastive task (papers.md §3): the known optima and their loss values, the distance to the
optimum (zero there, invariant to rotations and relabelling, positive elsewhere), and that plain full-batch
descent from random starts lands on the formula's value (so the formula is the minimum, not just a value)."""
import math

import pytest
import torch

import ftcore
from ftcore.batching import symmetric_infonce
from ftcore.fit import build_pack
from ftcore.tasks.contrastive import distance_to_optimum, optimum


def simplex(n, d):
    """N unit vectors of the regular simplex in R^d (d ≥ N−1): centred basis vectors in an (N−1)-dim basis."""
    c = torch.eye(n, dtype=torch.float64) - 1.0 / n                              # (N, N), rank N−1
    q, _ = torch.linalg.qr(c.T)                                                   # basis of its row space
    x = c @ q[:, : n - 1]                                                         # (N, N−1)
    x = torch.nn.functional.pad(x, (0, d - (n - 1)))
    return x / x.norm(dim=1, keepdim=True)


def cross_polytope(n):
    """u_{2k} = e_k, u_{2k+1} = −e_k in R^{N/2}."""
    x = torch.zeros(n, n // 2, dtype=torch.float64)
    for k in range(n // 2):
        x[2 * k, k], x[2 * k + 1, k] = 1.0, -1.0
    return x


def random_rotation(d, seed):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_optimal_loss_values_match_the_calibration():
    """papers.md §3(c): ETF 2.3464 (N = 8, d = 16), cross-polytope 2.4135 (N = 8, d = 4)."""
    assert optimum(8, 16)[0] == "etf" and abs(optimum(8, 16)[2] - 2.3464) < 5e-5
    assert optimum(8, 4)[0] == "cross_polytope" and abs(optimum(8, 4)[2] - 2.4135) < 5e-5
    assert optimum(8, 7)[0] == "etf" and optimum(8, 5) is None and optimum(8, 3) is None


@pytest.mark.parametrize("n", [4, 6, 8, 12])
def test_optimum_matrices_are_realised_by_the_geometric_configurations(n):
    _, z_star, l_star = optimum(n, n - 1)
    u = simplex(n, n - 1)
    torch.testing.assert_close(u @ u.T, z_star)
    assert abs(float(symmetric_infonce(z_star)) - l_star) < 1e-12
    _, z_star, l_star = optimum(n, n // 2)
    u = cross_polytope(n)
    torch.testing.assert_close(u @ u.T, z_star)
    assert abs(float(symmetric_infonce(z_star)) - l_star) < 1e-12


@pytest.mark.parametrize("n,d", [(8, 16), (8, 4), (6, 3)])
def test_distance_is_zero_at_any_rotated_relabelled_optimum_and_positive_elsewhere(n, d):
    kind, z_star, _ = optimum(n, d)
    u = simplex(n, d) if kind == "etf" else cross_polytope(n)
    u = torch.nn.functional.pad(u, (0, d - u.shape[1])) @ random_rotation(d, n + d)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(d))
    z = (u[perm] @ u[perm].T).unsqueeze(0)
    assert float(distance_to_optimum(z, kind, z_star)) < 1e-10
    g = torch.Generator().manual_seed(0)
    w = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    assert float(distance_to_optimum((w @ w.T).unsqueeze(0), kind, z_star)) > 0.5


def members(n, d, steps, seeds=(0, 1, 2), selection="full"):
    return [ftcore.member_from_dict({"model": {"name": "embeddings"}, "adapter": {"name": "full"},
                                     "task": {"name": "contrastive", "n": n, "dim": d, "batch_size": 2},
                                     "train": {"method": "sgd", "lr": 0.5, "schedule": "constant", "steps": steps,
                                               "eval_every": max(steps, 1), "batch_selection": selection}, "seed": s})
            for s in seeds]


@pytest.mark.parametrize("n,d", [(4, 3), (4, 2), (6, 3)])
def test_full_batch_descent_reaches_the_formula_from_random_starts(n, d):
    res = ftcore.fit(members(n, d, 1500))
    for r in res:
        assert r.status == "ok"
        assert -1e-5 < r.metrics["opt/gap"] < 1e-3, r.metrics
        assert r.metrics["opt/dist"] < 0.1, r.metrics
        assert r.curve[0]["opt/gap"] > 0.05


def test_evaluate_at_a_planted_optimum():
    ms = members(8, 16, 0, seeds=(0,))
    task, model = build_pack(ms, torch.float32)
    u = simplex(8, 16).float().unsqueeze(0) * 3.0                                 # any scale: normalised
    with torch.no_grad():
        model.deltas["u"].copy_(u - model.base.u)
        model.deltas["v"].copy_(u - model.base.v)
    ev = task.evaluate(model)
    assert abs(float(ev["full/loss"][0]) - optimum(8, 16)[2]) < 1e-5
    assert abs(float(ev["opt/gap"][0])) < 1e-5 and float(ev["opt/dist"][0]) < 1e-5
    assert float(ev["opt/optimum"][0]) == pytest.approx(2 * (-1 + math.log(math.e + 7 * math.exp(-1 / 7))))


def test_loss_is_the_mean_over_the_step_batches():
    """batch_of(all C(N,B) batches): the task's loss is the average of the per-batch symmetric InfoNCE."""
    ms = members(6, 3, 0, seeds=(0, 1))
    task, model = build_pack(ms, torch.float32)
    combos = torch.combinations(torch.arange(6), 2)
    x, y, w = task.batch_of(combos.expand(2, *combos.shape))
    z = task.pair_logits(model)
    want = torch.stack([torch.stack([symmetric_infonce(z[e][c][:, c]) for c in combos]).mean() for e in range(2)])
    with torch.no_grad():
        torch.testing.assert_close(task.loss(model(x), y, w), want, rtol=1e-5, atol=1e-6)
