"""Dual operating modes of ICL: mixture-of-Gaussian-tasks prior and its Bayes predictor
(Lin & Lee, "Dual Operating Modes of In-Context Learning", ICML 2024; papers.md §7).

Pretraining prior [code: setting.py `PriorProcesser.draw_sequences`, mydataloader.py `Prior`]:

    β ~ π  (M groups),   μ ~ N(μ_β, σ_μ² I),   w ~ N(w_β, σ_w² I)        (one task per prompt)
    x_i ~ N(μ, σ² I),    y_i = wᵀ x_i + ε_i,   ε_i ~ N(0, τ²)            (i = 1 … k+1; k+1 = query)
    δ_μ = (σ_μ/σ)²,      δ_w = (σ_w/τ)²

Closed-form Bayes (MMSE) predictor [code: setting.py `predict`], with S_x = Σ_{i≤k+1} x_i (the query x
counts: task *retrieval* also reads the input distribution), A = I + δ_w Σ_{i≤k} x_i x_iᵀ,
b_β = w_β + δ_w Σ_{i≤k} y_i x_i:

    w̃_β = A⁻¹ b_β
    a_β = [‖μ_β‖² − ‖μ_β + δ_μ S_x‖² / (1 + δ_μ (k+1))] / (2σ_μ²) + [‖w_β‖² − b_βᵀ A⁻¹ b_β] / (2σ_w²)
    π̃_β ∝ π_β exp(−a_β),        ŷ = Σ_β π̃_β w̃_βᵀ x_{k+1}

(the β-independent normalisers cancel in π̃). Early ascent (§7c): when the prompt's inputs look like
one group but its labels follow another, a few examples make the posterior retrieve the wrong group,
so the Bayes risk first rises with k and only falls once task learning (A⁻¹ b → w*) dominates.
Appendix B: the reference `draw_sequences` trains on the *noisy* ys; we return both noisy `ys` and
noiseless `zs` so callers choose explicitly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

__all__ = [
    "MixturePrior",
    "Prompts",
    "bayes_posterior",
    "bayes_predict",
    "bayes_prefix_predict",
    "bayes_risk_curve",
    "early_ascent_prior",
    "early_ascent_task",
    "prior_normalizer",
    "regular4_prior",
    "regular4_task",
    "sample_prompts",
    "sample_task_prompts",
]


@dataclass
class MixturePrior:
    """M Gaussian task groups. `mu_centres`, `w_centres`: (M, d); `weights`: (M,) (uniform if None)."""

    mu_centres: torch.Tensor        # (M, d)
    w_centres: torch.Tensor         # (M, d)
    weights: torch.Tensor | None = None  # (M,)
    sigma: float = 1.0              # x std around the task mean μ
    tau: float = 1.0                # label-noise std
    sigma_mu: float = 0.25          # spread of μ around μ_β
    sigma_w: float = 0.25           # spread of w around w_β

    def __post_init__(self) -> None:
        self.mu_centres = torch.as_tensor(self.mu_centres, dtype=torch.float64)
        self.w_centres = torch.as_tensor(self.w_centres, dtype=torch.float64)
        if self.mu_centres.ndim != 2 or self.mu_centres.shape != self.w_centres.shape:
            raise ValueError("mu_centres and w_centres must both be (M, d) with the same shape, got "
                             f"{tuple(self.mu_centres.shape)} and {tuple(self.w_centres.shape)}")
        m = self.mu_centres.shape[0]
        w = torch.full((m,), 1.0 / m, dtype=torch.float64) if self.weights is None else \
            torch.as_tensor(self.weights, dtype=torch.float64)
        if w.shape != (m,) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"weights must be ({m},) non-negative with positive sum")
        self.weights = w / w.sum()
        for name in ("sigma", "tau", "sigma_mu", "sigma_w"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def d(self) -> int:
        return int(self.mu_centres.shape[1])

    @property
    def m(self) -> int:
        return int(self.mu_centres.shape[0])

    @property
    def delta_mu(self) -> float:
        return (self.sigma_mu / self.sigma) ** 2

    @property
    def delta_w(self) -> float:
        return (self.sigma_w / self.tau) ** 2


class Prompts(NamedTuple):
    xs: torch.Tensor        # (P, k, d) in-context inputs
    ys: torch.Tensor        # (P, k)    noisy labels  wᵀx + ε (what the reference trains on)
    zs: torch.Tensor        # (P, k)    noiseless labels wᵀx
    x_query: torch.Tensor   # (P, d)
    y_query: torch.Tensor   # (P,)      noisy query label
    z_query: torch.Tensor   # (P,)      noiseless query label
    task_ids: torch.Tensor  # (P,) int64 group β (−1 for a fixed in-context task)
    mus: torch.Tensor       # (P, d)    task input mean μ
    ws: torch.Tensor        # (P, d)    task weights w


def _draw_xy(gen: torch.Generator, mus: torch.Tensor, ws: torch.Tensor, k: int, sigma: float,
             tau: float) -> tuple[torch.Tensor, ...]:
    p, d = mus.shape
    xall = mus[:, None, :] + sigma * torch.randn(p, k + 1, d, generator=gen, dtype=torch.float64)
    zall = torch.einsum("pkd,pd->pk", xall, ws)                       # (P, k+1)
    yall = zall + tau * torch.randn(p, k + 1, generator=gen, dtype=torch.float64)
    return xall, yall, zall


def sample_prompts(gen: torch.Generator, n_prompts: int, k: int, prior: MixturePrior) -> Prompts:
    """Draw `n_prompts` prompts of k examples + 1 query from the mixture prior (equations above)."""
    d = prior.d
    ids = torch.multinomial(prior.weights, n_prompts, replacement=True, generator=gen)   # (P,)
    mus = prior.mu_centres[ids] + prior.sigma_mu * torch.randn(n_prompts, d, generator=gen,
                                                                dtype=torch.float64)
    ws = prior.w_centres[ids] + prior.sigma_w * torch.randn(n_prompts, d, generator=gen,
                                                            dtype=torch.float64)
    xall, yall, zall = _draw_xy(gen, mus, ws, k, prior.sigma, prior.tau)
    return Prompts(xall[:, :k], yall[:, :k], zall[:, :k], xall[:, k], yall[:, k], zall[:, k], ids, mus, ws)


def sample_task_prompts(gen: torch.Generator, n_prompts: int, k: int, mu: torch.Tensor, w: torch.Tensor,
                        sigma: float = 1.0, tau: float = 0.0) -> Prompts:
    """Prompts from one fixed in-context task (μ*, w*), e.g. §7(a)'s early-ascent task (tau=0: noiseless)."""
    mu = torch.as_tensor(mu, dtype=torch.float64).reshape(1, -1).expand(n_prompts, -1)
    w = torch.as_tensor(w, dtype=torch.float64).reshape(1, -1).expand(n_prompts, -1)
    xall, yall, zall = _draw_xy(gen, mu, w, k, sigma, tau)
    ids = torch.full((n_prompts,), -1, dtype=torch.int64)
    return Prompts(xall[:, :k], yall[:, :k], zall[:, :k], xall[:, k], yall[:, k], zall[:, k], ids,
                   mu.clone(), w.clone())


def _posterior_from_stats(sx: torch.Tensor, n_x: int | torch.Tensor, xtx: torch.Tensor, xty: torch.Tensor,
                          prior: MixturePrior) -> tuple[torch.Tensor, torch.Tensor]:
    """Group posterior π̃ (P, M) and per-group posterior means w̃ (P, M, d) from sufficient statistics.

    sx = Σ_{i≤k+1} x_i (P, d); n_x = k+1 (an int, or a (P, 1) tensor when k varies by row); xtx = Σ_{i≤k} x_i x_iᵀ
    (P, d, d); xty = Σ_{i≤k} y_i x_i (P, d).
    """
    dm, dw = prior.delta_mu, prior.delta_w
    mu_c, w_c = prior.mu_centres, prior.w_centres                              # (M, d)
    d = prior.d
    a_mu_vec = mu_c[None] + dm * sx[:, None, :]                                # (P, M, d)
    a_mu = ((mu_c ** 2).sum(-1)[None] - (a_mu_vec ** 2).sum(-1) / (1.0 + dm * n_x)) / (2 * prior.sigma_mu ** 2)
    amat = torch.eye(d, dtype=torch.float64) + dw * xtx                        # (P, d, d)
    b = w_c[None] + dw * xty[:, None, :]                                       # (P, M, d)
    w_post = torch.linalg.solve(amat, b.transpose(1, 2)).transpose(1, 2)      # (P, M, d) = A⁻¹ b_β
    a_w = ((w_c ** 2).sum(-1)[None] - (b * w_post).sum(-1)) / (2 * prior.sigma_w ** 2)
    logits = torch.log(prior.weights)[None] - a_mu - a_w                       # (P, M)
    return torch.softmax(logits, dim=-1), w_post


def bayes_posterior(xs: torch.Tensor, ys: torch.Tensor, x_query: torch.Tensor,
                    prior: MixturePrior) -> tuple[torch.Tensor, torch.Tensor]:
    """(π̃ (P, M), w̃ (P, M, d)) for prompts xs (P, k, d), ys (P, k), x_query (P, d); k may be 0."""
    xs = xs.to(torch.float64)
    ys = ys.to(torch.float64)
    xq = x_query.to(torch.float64)
    sx = xs.sum(1) + xq                                                        # (P, d)
    xtx = torch.einsum("pki,pkj->pij", xs, xs)                                 # (P, d, d)
    xty = torch.einsum("pki,pk->pi", xs, ys)                                   # (P, d)
    return _posterior_from_stats(sx, xs.shape[1] + 1, xtx, xty, prior)


def bayes_predict(xs: torch.Tensor, ys: torch.Tensor, x_query: torch.Tensor,
                  prior: MixturePrior) -> torch.Tensor:
    """Bayes-optimal (posterior-mean) prediction ŷ = Σ_β π̃_β w̃_βᵀ x_{k+1}, shape (P,), float64."""
    post, w_post = bayes_posterior(xs, ys, x_query, prior)
    per_group = torch.einsum("pmd,pd->pm", w_post, x_query.to(torch.float64))  # (P, M)
    return (post * per_group).sum(-1)


def bayes_prefix_predict(xs: torch.Tensor, ys: torch.Tensor,
                         prior: MixturePrior) -> tuple[torch.Tensor, torch.Tensor]:
    """Bayes prediction at every position of Garg-style prompts xs (P, K, d), ys (P, K): ŷ_k uses the k
    pairs before position k and x_k as the query (k = 0 … K−1), as the model sees them. Returns
    (ŷ (P, K), group posterior π̃ (P, K, M)), float64; equal to `bayes_predict` on each prefix."""
    xs = xs.to(torch.float64)
    ys = ys.to(torch.float64)
    p, K, d = xs.shape
    outer = xs[..., :, None] * xs[..., None, :]                                # (P, K, d, d)
    xtx = torch.cumsum(outer, 1) - outer                                       # Σ_{i<k} x_i x_iᵀ
    xy = xs * ys[..., None]                                                    # (P, K, d)
    xty = torch.cumsum(xy, 1) - xy                                             # Σ_{i<k} y_i x_i
    sx = torch.cumsum(xs, 1)                                                   # Σ_{i≤k} x_i (query included)
    n_x = torch.arange(1, K + 1, dtype=torch.float64).repeat(p)[:, None]      # (P·K, 1) = k + 1
    post, w_post = _posterior_from_stats(sx.reshape(-1, d), n_x, xtx.reshape(-1, d, d), xty.reshape(-1, d),
                                         prior)                                # (P·K, M), (P·K, M, d)
    pred = (post * torch.einsum("nmd,nd->nm", w_post, xs.reshape(-1, d))).sum(-1)
    return pred.reshape(p, K), post.reshape(p, K, -1)


def prior_normalizer(prior: MixturePrior) -> float:
    """N_π = E[(wᵀx)²] over the prior (exact): given β, μ and w are independent, x ~ N(μ, σ²I), so

        E[(wᵀx)² | β] = σ² E‖w‖² + tr(E[wwᵀ] E[μμᵀ]),  E[wwᵀ] = w_βw_βᵀ + σ_w²I,  E[μμᵀ] = μ_βμ_βᵀ + σ_μ²I,

    averaged over β ~ π. Predicting 0 on prompts from the prior scores nse 1 with this N (the Garg
    convention, used for the on-prior curves `nse_prior/*` of `dual_modes_task`)."""
    eye = torch.eye(prior.d, dtype=torch.float64)
    total = 0.0
    for pi, mu, w in zip(prior.weights, prior.mu_centres, prior.w_centres):
        eww = torch.outer(w, w) + prior.sigma_w ** 2 * eye                    # (d, d)
        emm = torch.outer(mu, mu) + prior.sigma_mu ** 2 * eye                 # (d, d)
        total += float(pi) * (prior.sigma ** 2 * float(torch.trace(eww)) + float(torch.trace(eww @ emm)))
    return total


def bayes_risk_curve(gen: torch.Generator, prior: MixturePrior, ks: list[int], n_prompts: int,
                     task: tuple[torch.Tensor, torch.Tensor] | None = None, task_sigma: float = 1.0,
                     task_tau: float = 0.0, target: str = "noiseless") -> dict[str, torch.Tensor]:
    """Monte-Carlo Bayes risk E[(ŷ_k − y_{query})²] for each k in `ks` (§7c, the early-ascent curve).

    Prompts come from the fixed in-context `task` = (μ*, w*) (with x ~ N(μ*, task_sigma² I), label
    noise task_tau) if given, else from the prior. One prompt of max(ks) examples is drawn per Monte-Carlo
    sample and its prefixes are scored (common random numbers: each k's estimate is still unbiased, and
    the differences across k are much less noisy). `target`: "noiseless" (wᵀx_q) or "noisy".
    Returns {"k": (K,), "risk": (K,), "risk_se": (K,), "posterior": (K, M) mean group posterior}.
    """
    if target not in ("noiseless", "noisy"):
        raise ValueError(f"target must be 'noiseless' or 'noisy', got {target!r}")
    kmax = max(ks)
    if task is None:
        pr = sample_prompts(gen, n_prompts, kmax, prior)
    else:
        pr = sample_task_prompts(gen, n_prompts, kmax, task[0], task[1], task_sigma, task_tau)
    xq = pr.x_query                                                            # (P, d)
    yq = pr.z_query if target == "noiseless" else pr.y_query                   # (P,)
    n_p, d = xq.shape
    sx = torch.zeros(n_p, d, dtype=torch.float64)                              # Σ_{i≤k} x_i
    sxy = torch.zeros(n_p, d, dtype=torch.float64)                             # Σ_{i≤k} y_i x_i
    xtx = torch.zeros(n_p, d, d, dtype=torch.float64)                          # Σ_{i≤k} x_i x_iᵀ
    done = 0
    by_k = {}
    for k in sorted(set(ks)):                  # running sums: each example is touched once
        xk, yk = pr.xs[:, done:k], pr.ys[:, done:k]
        sx += xk.sum(1)
        sxy += torch.einsum("pki,pk->pi", xk, yk)
        xtx += torch.einsum("pki,pkj->pij", xk, xk)
        done = k
        post, w_post = _posterior_from_stats(sx + xq, k + 1, xtx, sxy, prior)
        pred = (post * torch.einsum("pmd,pd->pm", w_post, xq)).sum(-1)         # (P,)
        err = (pred - yq) ** 2
        by_k[k] = (err.mean(), err.std() / math.sqrt(n_prompts), post.mean(0))
    risks, ses, posts = (list(t) for t in zip(*(by_k[k] for k in ks)))
    return {"k": torch.tensor(ks), "risk": torch.stack(risks), "risk_se": torch.stack(ses),
            "posterior": torch.stack(posts)}


def regular4_prior(delta: float = 1 / 16) -> MixturePrior:
    """`Regular4` (Fig. 9): d = 3, M = 4 unit tetrahedron vertices, μ_β = w_β, σ = τ = 1, δ_μ = δ_w = δ."""
    v = torch.tensor([[1., 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64) / math.sqrt(3)
    s = math.sqrt(delta)
    return MixturePrior(v, v.clone(), None, 1.0, 1.0, s, s)


def early_ascent_prior(d: int, mu_scale: float = 1.0, w_scale: float = 1.0, tau: float = 2.0,
                       sigma_mu: float = 0.05, sigma_w: float = 0.05,
                       wrong_weight: float | None = None) -> MixturePrior:
    """Fig. 6 prior [code: EarlyAscent_Preprocess.py]: d = 1: M = 2, μ = ±1, w = ∓1; d ≥ 2: M = 3,
    unit-normalised μ = (1…1), (−1…−1), (1,−1…−1); w = (−1…−1), (1…1), (−1,1…1); σ = 1, τ = 2,
    σ_μ = σ_w = 0.05 (the defaults). Generalisation (ours, for `dual_modes_task`): the μ and w centres are
    scaled by `mu_scale`, `w_scale`, and group 0 (the one whose inputs match the early-ascent task) gets prior
    weight `wrong_weight`, the others share the rest equally (None = uniform, as in the paper)."""
    one = torch.ones(d, dtype=torch.float64)
    if d == 1:
        mu, w = torch.stack([one, -one]), torch.stack([-one, one])
    else:
        alt = -one.clone()
        alt[0] = 1.0
        mu = torch.stack([one, -one, alt])
        w = torch.stack([-one, one, -alt])
    n, m = math.sqrt(d), mu.shape[0]
    weights = None
    if wrong_weight is not None:
        if not 0 < wrong_weight < 1:
            raise ValueError(f"wrong_weight must be in (0, 1), got {wrong_weight}")
        weights = torch.full((m,), (1 - wrong_weight) / (m - 1), dtype=torch.float64)
        weights[0] = wrong_weight
    return MixturePrior(mu * mu_scale / n, w * w_scale / n, weights, 1.0, tau, sigma_mu, sigma_w)


def early_ascent_task(d: int, mu_scale: float = 1.0, w_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """In-context task of Fig. 6: μ* = w* = (1…1)/√d (inputs like group 1, labels like group 2), centres
    scaled like `early_ascent_prior`'s."""
    v = torch.ones(d, dtype=torch.float64) / math.sqrt(d)
    return v * mu_scale, v * w_scale


def regular4_task() -> tuple[torch.Tensor, torch.Tensor]:
    """Fig. 9's demo task for `regular4_prior`: μ* = w* = normalize(2c_0 + c_1 + 0.2c_2) (papers.md §7a).
    Its closed-form Bayes risk falls monotonically for every δ = 4^{-a}, a = 0…4 (no early ascent: the
    inputs and labels point to the same groups); the paper uses it to compare a Transformer with Bayes."""
    c = regular4_prior().mu_centres
    v = 2 * c[0] + c[1] + 0.2 * c[2]
    v = v / v.norm()
    return v, v.clone()
