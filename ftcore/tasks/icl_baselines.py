"""Classical in-context baselines on Garg-style prompts (papers.md §0.1 "Baselines"; dtsip/in-context-learning
`src/models.py` `LeastSquaresModel`, `NNModel`, `AveragingModel`, `LassoModel`, used by `src/eval.py`).

Every baseline maps xs (P, K, d), ys (P, K) → preds (P, K): for each prefix length k = 0..K−1 it predicts
y_k from the first k pairs (x_0, y_0), …, (x_{k−1}, y_{k−1}) and the query x_k; the prediction at k = 0 is 0.
All are vectorised over prompts and computed in float64 (least squares must reach ≈1e-9 at k = d).

    least_squares   ŵ = X_k⁺ y_k  (Moore–Penrose, so the minimum-norm interpolant when k < d)
    ridge           ŵ = (X_kᵀX_k + λI)⁻¹ X_kᵀ y_k               (not in the reference; → least squares as λ → 0)
    lasso           ŵ = argmin (1/2k)‖y_k − X_k w‖² + α‖w‖₁     (sklearn `Lasso(fit_intercept=False)` objective,
                    solved here by cyclic coordinate descent in torch — sklearn is not installed)
    knn             mean of y over the n_neighbors (3, uniform) context points nearest to x_k (Euclidean)
    averaging       ŵ = (1/k) Σ_i y_i x_i                       (`AveragingModel`)
and ŷ_k = x_kᵀ ŵ for the linear ones.
"""
from __future__ import annotations

import torch


def _prefix_gram(xs: torch.Tensor, ys: torch.Tensor):
    """Exclusive prefix sums G_k = Σ_{i<k} x_i x_iᵀ (P, K, d, d) and c_k = Σ_{i<k} y_i x_i (P, K, d)."""
    outer = xs[..., :, None] * xs[..., None, :]                            # (P, K, d, d)
    G = torch.cumsum(outer, dim=1) - outer                                 # exclusive: excludes x_k itself
    xy = xs * ys[..., None]                                                # (P, K, d)
    c = torch.cumsum(xy, dim=1) - xy
    return G, c


def least_squares(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares on each prefix (`LeastSquaresModel`; pinv instead of `lstsq(driver)`)."""
    xs64, ys64 = xs.double(), ys.double()
    P, K = xs.shape[:2]
    preds = torch.zeros(P, K, dtype=torch.float64)
    for k in range(1, K):
        w = torch.linalg.pinv(xs64[:, :k]) @ ys64[:, :k, None]             # (P, d, 1)
        preds[:, k] = (xs64[:, k:k + 1] @ w)[:, 0, 0]
    return preds.to(xs.dtype)


def ridge(xs: torch.Tensor, ys: torch.Tensor, lam: float = 1e-2) -> torch.Tensor:
    """Ridge regression on each prefix, ŵ = (X_kᵀX_k + λI)⁻¹ X_kᵀ y_k (λ > 0 keeps k < d well-posed)."""
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    G, c = _prefix_gram(xs.double(), ys.double())                          # (P, K, d, d), (P, K, d)
    eye = torch.eye(xs.shape[-1], dtype=torch.float64)
    w = torch.linalg.solve(G + lam * eye, c[..., None])[..., 0]            # (P, K, d); 0 at k = 0 (c = 0)
    return (xs.double() * w).sum(-1).to(xs.dtype)


def lasso(xs: torch.Tensor, ys: torch.Tensor, alpha: float = 1e-2, n_iter: int = 300) -> torch.Tensor:
    """Lasso on each prefix by cyclic coordinate descent on the Gram form, all prompts and prefixes at once.

    With G = X_kᵀX_k / k and c = X_kᵀy_k / k the update of coordinate j is
        w_j ← S(c_j − Σ_{l≠j} G_jl w_l, α) / G_jj,   S(z, α) = sign(z) · max(|z| − α, 0),
    and w_j = 0 when G_jj = 0 (an all-zero column, e.g. a curriculum-truncated coordinate).
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    xs64 = xs.double()
    G, c = _prefix_gram(xs64, ys.double())
    P, K, d = xs.shape
    n = torch.arange(K, dtype=torch.float64).clamp(min=1)[None, :, None]   # (1, K, 1) rows in prefix k
    G, c = G / n[..., None], c / n
    diag = torch.diagonal(G, dim1=-2, dim2=-1)                             # (P, K, d)
    safe = torch.where(diag > 0, diag, torch.ones_like(diag))
    w = torch.zeros(P, K, d, dtype=torch.float64)
    for _ in range(n_iter):
        for j in range(d):
            rho = c[..., j] - (G[..., j, :] * w).sum(-1) + diag[..., j] * w[..., j]      # (P, K)
            wj = torch.sign(rho) * torch.clamp(rho.abs() - alpha, min=0) / safe[..., j]
            w[..., j] = torch.where(diag[..., j] > 0, wj, torch.zeros_like(wj))
    return (xs64 * w).sum(-1).to(xs.dtype)


def knn(xs: torch.Tensor, ys: torch.Tensor, n_neighbors: int = 3) -> torch.Tensor:
    """Uniform k-nearest-neighbours (`NNModel(n_neighbors=3, weights="uniform")`); uses min(k, n_neighbors)."""
    P, K = xs.shape[:2]
    preds = torch.zeros(P, K, dtype=xs.dtype)
    for k in range(1, K):
        dist = (xs[:, :k] - xs[:, k:k + 1]).square().sum(-1)               # (P, k)
        m = min(k, n_neighbors)
        idx = dist.argsort(dim=1, stable=True)[:, :m]                      # (P, m)
        preds[:, k] = ys[:, :k].gather(1, idx).mean(1)
    return preds


def averaging(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Averaging estimator ŷ_k = x_kᵀ (1/k) Σ_{i<k} y_i x_i (`AveragingModel`)."""
    xy = xs.double() * ys.double()[..., None]                               # (P, K, d)
    c = torch.cumsum(xy, dim=1) - xy                                        # (P, K, d) exclusive prefix sum
    n = torch.arange(xs.shape[1], dtype=torch.float64).clamp(min=1)[None, :, None]
    return (xs.double() * c / n).sum(-1).to(xs.dtype)


BASELINES = {
    "least_squares": least_squares,
    "ridge": ridge,
    "lasso": lasso,
    "knn": knn,
    "averaging": averaging,
}
