"""Dual operating modes (papers.md §7): closed-form Bayes vs brute-force grid integration, shapes,
determinism, and the early-ascent curve of §7(c)/(d)."""
from __future__ import annotations

import math

import pytest
import torch

from ftcore.tasks.dual_modes import (
    MixturePrior,
    _posterior_from_stats,
    bayes_posterior,
    bayes_predict,
    bayes_risk_curve,
    early_ascent_prior,
    early_ascent_task,
    prior_normalizer,
    regular4_prior,
    sample_prompts,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _grid(d: int, lo: float, hi: float, n: int) -> tuple[torch.Tensor, float]:
    axis = torch.linspace(lo, hi, n, dtype=torch.float64)
    pts = torch.cartesian_prod(*([axis] * d)).reshape(-1, d)                  # (G, d)
    return pts, float(axis[1] - axis[0]) ** d


def _brute_force(xs, ys, xq, prior: MixturePrior, n_grid: int) -> tuple[float, torch.Tensor]:
    """Posterior mean of wᵀx_q and group posterior by numerical integration over (μ, w) grids.

    p(β, μ, w | data) ∝ π_β N(μ; μ_β, σ_μ²) N(w; w_β, σ_w²) Π_{i≤k+1} N(x_i; μ, σ²) Π_{i≤k} N(y_i; wᵀx_i, τ²).
    μ and w are independent given β, so each integral is a d-dimensional grid sum.
    """
    d = prior.d
    grid, vol = _grid(d, -7.0, 7.0, n_grid)
    xall = torch.cat([xs, xq[None]])                                           # (k+1, d)
    ll_x = -((xall[None] - grid[:, None]) ** 2).sum((-1, -2)) / (2 * prior.sigma ** 2)    # (G,)
    ll_y = -((ys[None] - grid @ xs.T) ** 2).sum(-1) / (2 * prior.tau ** 2)              # (G,)
    log_terms, means = [], []
    for b in range(prior.m):
        lp_mu = -((grid - prior.mu_centres[b]) ** 2).sum(-1) / (2 * prior.sigma_mu ** 2)
        lp_w = -((grid - prior.w_centres[b]) ** 2).sum(-1) / (2 * prior.sigma_w ** 2)
        lz_mu = torch.logsumexp(lp_mu + ll_x, 0) + math.log(vol)
        lw = lp_w + ll_y
        lz_w = torch.logsumexp(lw, 0) + math.log(vol)
        # normalisers of the Gaussian priors are β-independent (same σ's), so they cancel
        log_terms.append(math.log(prior.weights[b]) + lz_mu + lz_w)
        post_w = torch.softmax(lw, 0)
        means.append(float((post_w * (grid @ xq)).sum()))
    post = torch.softmax(torch.stack(log_terms), 0)
    return float((post * torch.tensor(means, dtype=torch.float64)).sum()), post


@pytest.mark.parametrize("d,n_grid", [(1, 4001), (2, 561)])
def test_closed_form_matches_brute_force(d, n_grid):
    g = _gen(d)
    m = 3
    prior = MixturePrior(torch.randn(m, d, generator=g, dtype=torch.float64),
                         torch.randn(m, d, generator=g, dtype=torch.float64),
                         torch.tensor([0.5, 0.3, 0.2]), sigma=1.0, tau=0.8, sigma_mu=0.6, sigma_w=0.7)
    for k in (0, 1, 3, 6):
        pr = sample_prompts(g, 3, k, prior)
        pred = bayes_predict(pr.xs, pr.ys, pr.x_query, prior)
        post, _ = bayes_posterior(pr.xs, pr.ys, pr.x_query, prior)
        for p in range(3):
            ref, ref_post = _brute_force(pr.xs[p], pr.ys[p], pr.x_query[p], prior, n_grid)
            assert pred[p].item() == pytest.approx(ref, abs=1e-5, rel=1e-5), (d, k, p)
            torch.testing.assert_close(post[p], ref_post, atol=1e-5, rtol=1e-5)


def test_brute_force_detects_wrong_predictor():
    """The comparison has teeth: dropping the query from the μ-posterior (§7a note) changes the answer."""
    g = _gen(7)
    prior = MixturePrior(torch.tensor([[1.5], [-1.5]]), torch.tensor([[-1.0], [1.0]]),
                         sigma_mu=0.5, sigma_w=0.5)
    pr = sample_prompts(g, 1, 2, prior)
    ref, _ = _brute_force(pr.xs[0], pr.ys[0], pr.x_query[0], prior, 4001)
    right = bayes_predict(pr.xs, pr.ys, pr.x_query, prior).item()
    xs, ys = pr.xs, pr.ys
    xtx = torch.einsum("pki,pkj->pij", xs, xs)
    xty = torch.einsum("pki,pk->pi", xs, ys)
    post, w_post = _posterior_from_stats(xs.sum(1), 2, xtx, xty, prior)     # query x left out
    wrong = float((post * (w_post[..., 0] * pr.x_query[:, 0:1])).sum())
    assert right == pytest.approx(ref, abs=1e-6)
    assert abs(wrong - ref) > 1e-3


def test_shapes_and_determinism():
    prior = regular4_prior(1 / 16)
    a = sample_prompts(_gen(3), 5, 7, prior)
    b = sample_prompts(_gen(3), 5, 7, prior)
    c = sample_prompts(_gen(4), 5, 7, prior)
    assert a.xs.shape == (5, 7, 3) and a.ys.shape == (5, 7) and a.zs.shape == (5, 7)
    assert a.x_query.shape == (5, 3) and a.y_query.shape == (5,) and a.task_ids.shape == (5,)
    assert a.mus.shape == (5, 3) and a.ws.shape == (5, 3)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert not torch.equal(a.xs, c.xs)
    torch.testing.assert_close(a.zs, torch.einsum("pkd,pd->pk", a.xs, a.ws))
    assert bayes_predict(a.xs, a.ys, a.x_query, prior).shape == (5,)
    post, w_post = bayes_posterior(a.xs, a.ys, a.x_query, prior)
    assert post.shape == (5, 4) and w_post.shape == (5, 4, 3)
    torch.testing.assert_close(post.sum(-1), torch.ones(5, dtype=torch.float64))


def test_sampler_statistics():
    """Task ids follow π; x ~ N(μ, σ²); label noise has std τ."""
    prior = MixturePrior(torch.tensor([[2.0], [-2.0]]), torch.tensor([[1.0], [-1.0]]),
                         torch.tensor([0.8, 0.2]), sigma=1.0, tau=0.5, sigma_mu=0.1, sigma_w=0.1)
    pr = sample_prompts(_gen(0), 20000, 4, prior)
    assert (pr.task_ids == 0).double().mean().item() == pytest.approx(0.8, abs=0.02)
    assert (pr.ys - pr.zs).std().item() == pytest.approx(0.5, abs=0.01)
    assert (pr.xs - pr.mus[:, None]).std().item() == pytest.approx(1.0, abs=0.01)
    assert (pr.mus - prior.mu_centres[pr.task_ids]).std().item() == pytest.approx(0.1, abs=0.005)


def test_many_examples_learn_the_task():
    """Large k: the posterior mean approaches w*ᵀx_q (task-learning mode)."""
    prior = early_ascent_prior(2)
    mu, w = early_ascent_task(2)
    out = bayes_risk_curve(_gen(1), prior, [0, 8192], 500, task=(mu, w))
    assert out["risk"][1] < 0.2 < out["risk"][0]


@pytest.mark.parametrize("d", [1, 8])
def test_early_ascent(d):
    """§7(d)(i)-(iii): max_{k∈{2,4,8,16}} risk(k) − risk(0) > 0.3; risk(4096) < 0.4;
    risk(1024) < risk(256) < risk(64); posterior on group 1 (the wrongly retrieved one) > 0.95 at k = 32."""
    prior = early_ascent_prior(d)
    ks = [0, 2, 4, 8, 16, 32, 64, 256, 1024, 4096]
    out = bayes_risk_curve(_gen(10 + d), prior, ks, 3000, task=early_ascent_task(d))
    r = dict(zip(ks, out["risk"].tolist()))
    assert max(r[k] for k in (2, 4, 8, 16)) - r[0] > 0.3, r
    assert r[4096] < 0.4, r
    assert r[1024] < r[256] < r[64], r
    # group 0 (μ_1 = 1, w_1 = −1) matches the inputs: it is retrieved, and it is the wrong skill
    assert out["posterior"][ks.index(32), 0] > 0.95
    assert 6.0 < r[0] < 8.0, r            # calib: 6.97 (d=1), 7.10 (d=8); wrong group alone gives 8


def test_prior_validation():
    with pytest.raises(ValueError, match="sigma_w"):
        MixturePrior(torch.zeros(2, 1), torch.zeros(2, 1), sigma_w=0.0)
    with pytest.raises(ValueError, match="mu_centres"):
        MixturePrior(torch.zeros(2, 1), torch.zeros(3, 1))


@pytest.mark.parametrize("prior", [regular4_prior(1 / 16), early_ascent_prior(2, 0.75, 1.0, 2.0, 0.05, 0.3, 0.05),
                                   MixturePrior(torch.tensor([[2.0], [-1.0]]), torch.tensor([[1.0], [0.5]]),
                                                torch.tensor([0.3, 0.7]), sigma=1.5, tau=1.0, sigma_mu=0.4,
                                                sigma_w=0.6)])
def test_prior_normalizer_is_the_mean_square_label(prior):
    """N_π = E_prior[(wᵀx)²] in closed form equals the Monte-Carlo mean of z² over prompts from the prior."""
    pr = sample_prompts(_gen(5), 100000, 1, prior)
    mc = pr.zs.pow(2).mean().item()
    assert prior_normalizer(prior) == pytest.approx(mc, rel=0.02)
