"""Contracts for the Garg et al. in-context function classes and their classical baselines
(ftcore/tasks/icl_functions.py, ftcore/tasks/icl_baselines.py; papers.md §0.1, §4)."""
from __future__ import annotations

import math

import pytest
import torch

from ftcore.tasks.icl_baselines import (
    BASELINES,
    averaging,
    knn,
    lasso,
    least_squares,
    ridge,
)
from ftcore.tasks.icl_functions import (
    FUNCTION_CLASSES,
    Curriculum,
    Schedule,
    error_normalizer,
    get_function_class,
    interleave,
    normalized_sq_error,
    sample_decision_tree,
    sample_linear,
    sample_noisy_linear,
    sample_quadratic,
    sample_relu_2nn,
    sample_sparse_linear,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- every function class: shapes, determinism, truncation ---------------------------------------------
@pytest.mark.parametrize("name", sorted(FUNCTION_CLASSES))
def test_shapes_and_determinism(name):
    f = FUNCTION_CLASSES[name]
    xs, ys = f(gen(0), 7, 11, 5)
    assert xs.shape == (7, 11, 5) and ys.shape == (7, 11)
    assert torch.isfinite(ys).all() and ys.std() > 0
    xs2, ys2 = f(gen(0), 7, 11, 5)
    assert torch.equal(xs, xs2) and torch.equal(ys, ys2)
    xs3, ys3 = f(gen(1), 7, 11, 5)
    assert not torch.equal(xs, xs3) and not torch.equal(ys, ys3)
    # different prompts draw different functions (labels of equal inputs differ across prompts)
    assert not torch.allclose(ys[0], ys[1])


@pytest.mark.parametrize("name", sorted(FUNCTION_CLASSES))
def test_curriculum_truncation_zeroes_trailing_coords(name):
    xs, _ = FUNCTION_CLASSES[name](gen(3), 6, 9, 8, n_dims_truncated=3)
    assert (xs[..., 3:] == 0).all()
    assert (xs[..., :3] != 0).all()


def test_truncation_rejects_bad_values():
    with pytest.raises(ValueError):
        sample_linear(gen(0), 2, 3, 4, n_dims_truncated=5)
    with pytest.raises(ValueError, match="valid"):
        get_function_class("nope")


# ---- labels correct by construction --------------------------------------------------------------------
def test_linear_labels_are_exactly_linear():
    d, K = 6, 15
    xs, ys = sample_linear(gen(0), 4, K, d)
    w = torch.linalg.lstsq(xs.double(), ys.double()[..., None]).solution     # (P, d, 1)
    assert torch.allclose((xs.double() @ w)[..., 0], ys.double(), atol=1e-5)
    # w ~ N(0, I): labels have variance ≈ d
    _, ys_big = sample_linear(gen(1), 2000, 5, d)
    assert abs(ys_big.var().item() / d - 1) < 0.1


def test_truncated_linear_uses_only_first_coords():
    xs, ys = sample_linear(gen(0), 3, 12, 8, n_dims_truncated=4)
    w = torch.linalg.lstsq(xs[..., :4].double(), ys.double()[..., None]).solution
    assert torch.allclose((xs[..., :4].double() @ w)[..., 0], ys.double(), atol=1e-5)


@pytest.mark.parametrize("trunc,from_trunc", [(None, True), (5, True), (5, False)])
def test_sparse_linear_has_exactly_s_nonzero_weights(trunc, from_trunc):
    d, s, K = 10, 3, 30
    xs, ys = sample_sparse_linear(gen(2), 50, K, d, n_dims_truncated=trunc, sparsity=s,
                                  support_from_truncated=from_trunc)
    x_used = xs if trunc is None else xs[..., :trunc]
    w = torch.linalg.lstsq(x_used.double(), ys.double()[..., None]).solution[..., 0]   # (P, d_eff)
    nnz = (w.abs() > 1e-6).sum(1)
    if trunc is None or from_trunc:
        assert (nnz == s).all()
    else:  # support drawn from all d coordinates: some of it falls in the zeroed part
        assert (nnz <= s).all() and (nnz < s).any()


def test_noisy_linear_residual_variance():
    d, K, sigma = 4, 200, 0.3
    xs, ys = sample_noisy_linear(gen(0), 50, K, d, noise_std=sigma)
    w = torch.linalg.lstsq(xs.double(), ys.double()[..., None]).solution
    resid = ys.double() - (xs.double() @ w)[..., 0]
    var = (resid ** 2).sum() / (resid.numel() - 50 * d)        # unbiased: K − d dof per prompt
    assert abs(var.item() / sigma ** 2 - 1) < 0.05


def test_quadratic_labels_and_scaling():
    d = 5
    xs, ys = sample_quadratic(gen(0), 3, 20, d)
    w = torch.linalg.lstsq((xs ** 2).double(), ys.double()[..., None] * math.sqrt(3)).solution
    assert torch.allclose(((xs ** 2).double() @ w)[..., 0] / math.sqrt(3), ys.double(), atol=1e-5)
    # the 1/√3 makes E[y²] = Σ_j E[x_j⁴] / 3 = d, the same label scale as linear regression
    _, ys_big = sample_quadratic(gen(1), 4000, 4, d)
    assert abs((ys_big ** 2).mean().item() / d - 1) < 0.1


def test_relu_2nn_scaling_and_formula():
    d = 8
    _, ys = sample_relu_2nn(gen(0), 2000, 4, d)
    # √(2/h) keeps the label scale of linear regression: E[y²] = (2/h) · h · E[ReLU(w₁ᵀx)²] = 2 · d/2 = d
    assert abs((ys ** 2).mean().item() / d - 1) < 0.15
    # the labels are the reference formula applied to the sampler's own draws (xs, then W1, then W2)
    g = gen(5)
    xs, ys = sample_relu_2nn(g, 2, 3, d, hidden_layer_size=7)
    g = gen(5)
    xs_ref = torch.randn(2, 3, d, generator=g)
    w1 = torch.randn(2, d, 7, generator=g)
    w2 = torch.randn(2, 7, 1, generator=g)
    ref = (torch.relu(xs_ref @ w1) @ w2)[..., 0] * math.sqrt(2 / 7)
    assert torch.equal(xs, xs_ref) and torch.allclose(ys, ref)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_decision_tree_at_most_2_pow_depth_values(depth):
    _, ys = sample_decision_tree(gen(0), 20, 400, 50, depth=depth)
    counts = torch.tensor([len(torch.unique(y)) for y in ys])
    assert (counts <= 2 ** depth).all()
    assert (counts == 2 ** depth).any()        # with distinct coordinates on every path all leaves are hit


def test_decision_tree_depth1_follows_sign_of_root_coordinate():
    g = gen(9)
    xs, ys = sample_decision_tree(g, 5, 50, 4, depth=1)
    for p in range(5):
        for c in range(4):   # exactly one coordinate's sign must explain the two values
            right, left = ys[p][xs[p, :, c] > 0], ys[p][xs[p, :, c] <= 0]
            if len(torch.unique(right)) == 1 and len(torch.unique(left)) == 1 and right[0] != left[0]:
                break
        else:
            pytest.fail(f"prompt {p}: labels are not a sign split on one coordinate")


# ---- prompt encoding, metric, curriculum ---------------------------------------------------------------
def test_interleave_layout():
    xs, ys = sample_linear(gen(0), 2, 3, 4)
    z = interleave(xs, ys)
    assert z.shape == (2, 6, 4)
    assert torch.equal(z[:, 0::2], xs)
    assert torch.equal(z[:, 1::2, 0], ys)
    assert (z[:, 1::2, 1:] == 0).all()


def test_normalized_sq_error_and_normalizers():
    pred, ys = torch.zeros(2, 3), torch.full((2, 3), 2.0)
    assert torch.allclose(normalized_sq_error(pred, ys, 4), torch.ones(2, 3))
    assert error_normalizer("linear", 20) == 20
    assert error_normalizer("sparse_linear", 20, sparsity=3) == 3
    assert error_normalizer("decision_tree", 20) == 1


def test_curriculum_schedule():
    c = Curriculum(Schedule(5, 7, 1, 2), Schedule(11, 14, 2, 3))
    assert (c.n_dims_truncated, c.n_points) == (5, 11)
    seen = []
    for _ in range(8):
        c.update()
        seen.append((c.n_dims_truncated, c.n_points))
    assert seen == [(5, 11), (6, 11), (6, 13), (7, 13), (7, 13), (7, 14), (7, 14), (7, 14)]
    default = Curriculum()
    assert (default.dims.start, default.dims.end, default.points.end) == (5, 20, 41)
    with pytest.raises(ValueError):
        Schedule(5, 4, 1, 10)


# ---- baselines -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_shapes_and_zero_at_k0(name):
    xs, ys = sample_linear(gen(0), 5, 9, 3)
    preds = BASELINES[name](xs, ys)
    assert preds.shape == (5, 9) and preds.dtype == xs.dtype
    assert (preds[:, 0] == 0).all()
    # causal: changing later points must not change earlier predictions
    ys2 = ys.clone()
    ys2[:, 6:] += 10
    assert torch.allclose(BASELINES[name](xs, ys2)[:, :7], preds[:, :7])


def test_least_squares_exact_after_d_points_and_zero_shot_error_one():
    d, K = 8, 20
    xs, ys = sample_linear(gen(0), 1000, K, d)
    err = normalized_sq_error(least_squares(xs, ys), ys, d).mean(0)    # (K,)
    assert abs(err[0].item() - 1) < 0.1                 # predicting 0: Var y / d = 1
    assert err[d:].max() < 1e-8
    assert err[d // 2] > 0.2                            # underdetermined prefix is not exact
    # min-norm interpolant: error at k < d follows 1 − k/d
    assert abs(err[d // 2].item() - 0.5) < 0.1


def test_ridge_tends_to_least_squares():
    xs, ys = sample_linear(gen(1), 20, 12, 6)
    ls = least_squares(xs, ys)
    assert torch.allclose(ridge(xs, ys, lam=1e-7), ls, atol=1e-3)
    assert not torch.allclose(ridge(xs, ys, lam=10.0), ls, atol=1e-3)


def test_lasso_matches_least_squares_at_alpha0_and_recovers_sparse():
    d = 10
    xs, ys = sample_linear(gen(2), 10, 16, d)
    # α = 0 is least squares; coordinate descent converges slowly when k ≈ d, so check well past d
    assert torch.allclose(lasso(xs, ys, alpha=0.0, n_iter=1000)[:, d + 4:], ys[:, d + 4:], atol=1e-2)
    xs, ys = sample_sparse_linear(gen(3), 200, 16, d, sparsity=2)
    err_lasso = normalized_sq_error(lasso(xs, ys, alpha=0.01), ys, 2).mean(0)
    err_ls = normalized_sq_error(least_squares(xs, ys), ys, 2).mean(0)
    assert err_lasso[6] < 0.5 * err_ls[6]                # sparsity helps below k = d


def test_knn_exact_on_repeated_points():
    xs, ys = sample_linear(gen(4), 3, 8, 4)
    xs[:, 7] = xs[:, 2]                                # query repeats a context point
    assert torch.allclose(knn(xs, ys, n_neighbors=1)[:, 7], ys[:, 2])
    xs[:, 4] = xs[:, 2]
    xs[:, 5] = xs[:, 2]                                # three copies → 3-NN averages equal labels
    _, ys = sample_linear(gen(4), 3, 8, 4)
    ys[:, 4], ys[:, 5], ys[:, 7] = ys[:, 2], ys[:, 2], ys[:, 2]
    assert torch.allclose(knn(xs, ys)[:, 7], ys[:, 2])
    assert torch.allclose(knn(xs, ys)[:, 1], ys[:, 0])    # k = 1 < 3 neighbours: uses min(k, 3)


def test_averaging_estimator():
    xs, ys = sample_linear(gen(5), 4, 6, 3)
    k = 4
    w = (xs[:, :k] * ys[:, :k, None]).mean(1)           # (P, d)
    assert torch.allclose(averaging(xs, ys)[:, k], (xs[:, k] * w).sum(-1), atol=1e-5)
    # unbiased for w: with many points ŵ → w, so the error falls well below the zero predictor
    xs, ys = sample_linear(gen(6), 200, 400, 3)
    err = normalized_sq_error(averaging(xs, ys), ys, 3).mean(0)
    assert err[-1] < 0.1 and abs(err[0] - 1) < 0.2
