"""Constructive references for Fine-Tuning Capacity (papers.md §1): an additive ReLU net g written down
without an optimizer such that f + g fits the N relabelled points of `ftc_relabel` and keeps the other K − N.

Only the residual r_j = y'_j − f(x_j) matters (r_j = 0 on the K − N kept points). Every construction projects
on one random unit direction v, t_j = v·x_j (distinct with probability 1), sorts the K values and works on the
line. A point with |r_j| < tol needs nothing (g = 0 there already fits it within tol, the success rule); the
others are the n "needed" points.

Depth 2 (one hidden layer, m units): one *hat* per needed point i, with t_{i−1} < t_i < t_{i+1} its neighbours
among all K points (a virtual neighbour t_i ∓ 1 where none exists):

    h_i(t) = a relu(t − t_{i−1}) − (a + b) relu(t − t_i) + b relu(t − t_{i+1}),   a = r_i/(t_i − t_{i−1}),
                                                                                   b = r_i/(t_{i+1} − t_i)

h_i(t_i) = r_i and h_i = 0 at every other data point (slope 0 beyond t_{i+1}). Width 3n, whatever K is.
With m < 3n only the ⌊m/3⌋ largest |r_i| get a hat (the fit then fails).

Depth 3 (hidden sizes ⌈m/2⌉, ⌊m/2⌋, `additive_relu.hidden_sizes`): Θ(√n) units. The needed points are split
(in t order) into q contiguous groups; the group boundary s sits in the widest gap (a_s, b_s) between two
consecutive data points there. Layer 1 (2q − 1 units): z_0 = relu(t − t_min + 1) (= t − t_min + 1 on the
data) and, per boundary, relu(t − a_s), relu(t − b_s). On the data, any layer-2 pre-activation
φ(t) = w_0 z_0 + Σ_s (c_s^a relu(t − a_s) + c_s^b relu(t − b_s)) + β restricted to group s is an affine
function ℓ_s(t) = α_s t + β_s, and the (α_s, β_s) can be chosen freely per group:

    w_0 = α_1,  β = β_1 − α_1 (1 − t_min),  c_s^b = −(Δβ_s + Δα_s a_s)/(b_s − a_s),  c_s^a = Δα_s − c_s^b

(Δ = value in group s minus value in group s − 1). So one layer-2 unit j with output weight v_j = ±1 acts in
group s as v_j relu(ℓ_{j,s}(t)): a hat's three terms are three units (two of the sign of r_i, one of the other),
re-used by every group with that group's (α, β); unused units get ℓ = −1 (output 0). Layer 2 needs
P + Q units with P = max_s (positive terms in group s), Q = max_s (negative terms), about 3n/q, so
m ≈ 2q + 6n/q, minimal (≈ 4.9 √n) at q ≈ √(1.5 n), independent of K. If P + Q > ⌊m/2⌋, g = 0 (the fit fails).

This is our construction (the paper's Θ(√N) construction for depth 3 is different); both references are
upper bounds on the minimal width, exact in float64 (the run's dtype for `train.method: construction`).
"""
from __future__ import annotations

import numpy as np


def needed(res: np.ndarray, tol: float) -> np.ndarray:
    """Indices of the points whose residual g must produce: |r| >= tol."""
    return np.flatnonzero(np.abs(res) >= tol)


def hat_terms(t_sorted: np.ndarray, pos: int, r: float) -> list[tuple[float, float]]:
    """The hat of the point at sorted position `pos`: [(c, a)] for the terms a·relu(t − c)."""
    t = t_sorted[pos]
    left = t_sorted[pos - 1] if pos > 0 else t - 1.0
    right = t_sorted[pos + 1] if pos + 1 < len(t_sorted) else t + 1.0
    a, b = r / (t - left), r / (right - t)
    return [(left, a), (t, -(a + b)), (right, b)]


def _sorted_positions(t: np.ndarray):
    order = np.argsort(t, kind="stable")
    pos = np.empty_like(order)
    pos[order] = np.arange(len(t))
    return t[order], pos


def depth2(t: np.ndarray, res: np.ndarray, m: int, tol: float):
    """-> (c (m,), a (m,)) with g(t) = Σ_u a_u relu(t − c_u); unused units have a = 0."""
    ts, pos = _sorted_positions(t)
    idx = needed(res, tol)
    idx = idx[np.argsort(-np.abs(res[idx]), kind="stable")][: m // 3]     # largest |r| first
    c, a = np.zeros(m), np.zeros(m)
    for u, i in enumerate(idx):
        for k, (ck, ak) in enumerate(hat_terms(ts, pos[i], res[i])):
            c[3 * u + k], a[3 * u + k] = ck, ak
    return c, a


def width_needed(t: np.ndarray, res: np.ndarray, tol: float, depth: int) -> int:
    """The smallest m at which `depth2`/`depth3` fit every point (by search over m for depth 3)."""
    n = len(needed(res, tol))
    if depth == 2 or n == 0:
        return 3 * n if depth == 2 else 2
    m = 2
    while depth3(t, res, m, tol) is None:
        m += 1
    return m


def _groups(ts: np.ndarray, need_pos: np.ndarray, q: int):
    """Split the sorted needed positions into q chunks; boundary s in the widest data gap between chunks.
    -> (chunks, [(a_s, b_s)] for s = 2..q, group index of every sorted position)."""
    chunks = np.array_split(np.sort(need_pos), q)
    bounds, group = [], np.zeros(len(ts), dtype=int)
    for s in range(1, q):
        lo, hi = chunks[s - 1][-1], chunks[s][0]                         # sorted positions lo < hi
        gaps = np.diff(ts[lo: hi + 1])
        k = lo + int(np.argmax(gaps))                                    # boundary between k and k + 1
        bounds.append((ts[k], ts[k + 1]))
        group[k + 1:] = s
    return chunks, bounds, group


def depth3(t: np.ndarray, res: np.ndarray, m: int, tol: float):
    """-> (c1 (H1,), W2 (H1, H2), b2 (H2,), v (H2,)) with g(t) = Σ_j v_j relu(Σ_u W2[u, j] relu(t − c1_u) + b2_j),
    unit 0 of layer 1 being relu(t − c1_0) with c1_0 = t_min − 1; None when m is too small to fit every point."""
    h1, h2 = (m + 1) // 2, m // 2
    ts, pos = _sorted_positions(t)
    idx = needed(res, tol)
    if len(idx) == 0:
        return np.zeros(h1), np.zeros((h1, h2)), -np.ones(h2), np.zeros(h2)
    q = min((h1 + 1) // 2, len(idx))
    if q < 1 or h2 < 1:
        return None
    chunks, bounds, _ = _groups(ts, pos[idx], q)
    r_at = dict(zip(pos[idx].tolist(), res[idx].tolist()))               # sorted position -> residual
    terms = [[tm for p in ch for tm in hat_terms(ts, int(p), r_at[int(p)])] for ch in chunks]
    P = max(sum(a > 0 for _, a in g) for g in terms)
    Q = max(sum(a < 0 for _, a in g) for g in terms)
    if P + Q > h2:
        return None
    v = np.zeros(h2)
    v[:P], v[P:P + Q] = 1.0, -1.0
    alpha, beta = np.zeros((q, h2)), -np.ones((q, h2))                 # per group: ℓ_j = α t + β (idle: −1)
    for s, g in enumerate(terms):
        jp, jn = 0, P
        for ck, ak in g:                                                 # a relu(t − c) = ±relu(|a| (t − c))
            j = jp if ak > 0 else jn
            jp, jn = jp + (ak > 0), jn + (ak < 0)
            alpha[s, j], beta[s, j] = abs(ak), -abs(ak) * ck
    c1, W2 = np.zeros(h1), np.zeros((h1, h2))
    t_min = ts[0]
    c1[0] = t_min - 1.0
    W2[0] = alpha[0]
    b2 = beta[0] - alpha[0] * (1.0 - t_min)
    for s, (a_s, b_s) in enumerate(bounds, start=1):
        da, db = alpha[s] - alpha[s - 1], beta[s] - beta[s - 1]
        cb = -(db + da * a_s) / (b_s - a_s)
        c1[2 * s - 1], c1[2 * s] = a_s, b_s
        W2[2 * s - 1], W2[2 * s] = da - cb, cb
    return c1, W2, b2, v


def g_numpy(t: np.ndarray, weights, depth: int) -> np.ndarray:
    """Evaluate a construction on the projected points t (for tests and checks)."""
    relu = lambda z: np.maximum(z, 0.0)  # noqa: E731
    if depth == 2:
        c, a = weights
        return relu(t[:, None] - c[None, :]) @ a
    c1, W2, b2, v = weights
    return relu(relu(t[:, None] - c1[None, :]) @ W2 + b2) @ v
