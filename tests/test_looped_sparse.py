"""Looped vs standard on sparse linear regression (Yang et al. 2024, papers.md §4): the Lasso baseline against an
oracle (it recovers a sparse w from fewer points than d), its α rule, and the looped model read at b and b' > b."""
import torch

import ftcore
from ftcore.fit import build_pack, fit
from ftcore.tasks.icl_baselines import lasso, least_squares
from ftcore.tasks.icl_functions import normalized_sq_error, sample_sparse_linear
from ftcore.tasks.icl_regression import LASSO_ALPHAS, IclRegressionConfig, lasso_alpha, position_keys

LOOPED = {"name": "looped_transformer", "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 42,
          "n_loops": 3, "loss_last": 2, "loop_interval": 0, "eval_loops": 6}
TASK = {"name": "icl_regression", "function": "sparse_linear", "dim": 10, "sparsity": 3, "n_points": 21,
        "batch_size": 8, "n_eval": 64}


def members(model, seeds=(0, 1), steps=2, **task):
    return [ftcore.member_from_dict({"model": model, "adapter": {"name": "full"}, "task": {**TASK, **task},
                                     "train": {"method": "adam", "steps": steps, "lr": 1e-3, "eval_every": steps},
                                     "seed": s}) for s in seeds]


def test_lasso_recovers_sparse_w_below_d_points():
    """d = 10, s = 3: with k = 8 < d points the minimum-norm least squares cannot identify w, Lasso (α = 0.01, the
    α rule's pick here) nearly recovers it: the oracle is the true w, whose prediction error is 0."""
    g = torch.Generator().manual_seed(5)
    xs, ys = sample_sparse_linear(g, 300, 21, 10, sparsity=3)
    e_lasso = normalized_sq_error(lasso(xs, ys, alpha=1e-2), ys, 3).mean(0)                     # (K,)
    e_ls = normalized_sq_error(least_squares(xs, ys), ys, 3).mean(0)
    assert e_lasso[8] < 0.25 * e_ls[8] and e_ls[8] > 0.1                 # below d: sparsity is what helps
    assert e_lasso[15] < 1e-3 and e_lasso[20] < 1e-3                     # recovered
    assert e_lasso[0] > 0.5                                              # no context, no recovery


def test_lasso_alpha_rule_is_a_grid_point_and_seed_free():
    cfg = IclRegressionConfig(function="sparse_linear", dim=10, sparsity=3, n_points=21, n_eval=64)
    a = lasso_alpha(cfg)
    assert a in LASSO_ALPHAS and lasso_alpha(cfg) == a
    task, _ = build_pack(members(LOOPED, seeds=(3, 4)), torch.float32)
    ev = task.evaluate(lambda x, **kw: torch.zeros(*x.shape[:-1], 1))
    assert torch.equal(ev["lasso/alpha"], torch.full((2,), a))
    assert all(k in ev for k in position_keys("nse/lasso", 21))
    dense, _ = build_pack(members(LOOPED, function="linear"), torch.float32)
    assert "nse/lasso/k05" not in dense.evaluate(lambda x, **kw: torch.zeros(*x.shape[:-1], 1))


def test_looped_is_scored_at_b_and_at_b_prime():
    task, model = build_pack(members(LOOPED), torch.float32)
    ev = task.evaluate(model)
    with torch.no_grad():
        at = {n: model(task.eval_tokens, n_loops=n)[..., ::2, 0] for n in (3, 6)}
    for who, n in (("model_b", 3), ("model", 6)):
        want = (at[n] - task.eval_ys).pow(2).mean(1) / 3                 # (E, K), normaliser s = 3
        got = torch.stack([ev[k] for k in position_keys(f"nse/{who}", 21)], -1)
        torch.testing.assert_close(got, want)
    plain, _ = build_pack(members({**LOOPED, "eval_loops": 0}), torch.float32)
    assert "nse/model_b/k00" not in plain.evaluate(model)


def test_tiny_fit_reports_both_loop_counts():
    res = fit(members(LOOPED, steps=3))
    assert all(r.status == "ok" and "nse/model_b/k20" in r.metrics and "nse/lasso/k20" in r.metrics for r in res)
