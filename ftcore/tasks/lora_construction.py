"""Exact LoRA construction of "The Expressive Power of Low-Rank Adaptation" (Zeng & Lee, ICLR 2024).

Task (papers.md §2): a frozen FNN f of depth L and width D is adapted with rank-R LoRA adapters (plus bias
tuning) so that it computes a target FNN f̄ of depth L̄ <= L and the same width.  The paper shows that the
adapted model represents f̄ *exactly* once R >= threshold_rank(D, L, L̄) (⌈D·L̄/L⌉ when L̄ | L), and that below
the threshold the construction's error on linear models is the singular-value tail of the discrepancy
matrix (the Eckart–Young optimum).  This module computes the construction in closed form (the authors'
`helper.our_construction` + `run_exp.approx_fnn.adapt_ours`), so that sweeps can compare gradient-trained
LoRA against the exact error-vs-rank curve.

Representation (ftcore convention): every tensor carries a leading member axis E (a pack of independent
runs).  Layer l maps h -> act(h @ W[l] + b[l]) with W[l] of shape (E, fan_in, fan_out) (x @ W orientation,
the transpose of nn.Linear's weight) and b[l] of shape (E, fan_out) or None.  A LoRA adapter on layer l
replaces W[l] by W[l] + down[l] @ up[l], down (E, D, R), up (E, R, D); bias tuning replaces b[l].

Construction
------------
* Grouping: the L frozen layers are split into L̄ consecutive groups of ⌊L/L̄⌋ layers, the last group taking
  the remainder (authors' code); group i implements target layer i.  The smallest group has ⌊L/L̄⌋ layers,
  whence the threshold ⌈D / ⌊L/L̄⌋⌉ (= ⌈D·L̄/L⌉ when L̄ | L).
* Linear part: for a group l_1..l_g with frozen product P = W_{l_1} @ ... @ W_{l_g} and target W̄, take the
  SVD of E_err = W̄ − P and split it into chunks of R singular directions, chunk j = directions
  j·R … (j+1)·R − 1 (capped at D).  Adapters are chosen sequentially,
      ΔW_j = A_{j-1}^{-1} · chunk_j · S_j^{-1},
  where A_{j-1} is the *adapted* prefix product (layers before j, already adapted) and S_j the *frozen*
  suffix product (layers after j).  Then A_j · S_j = A_{j-1} · S_{j-1} + chunk_j, so the adapted group
  product is P + (sum of the chunks used): exactly W̄ when g·R >= D, otherwise W̄ minus the SVD tail
  beyond the first g·R directions (optimal, Eckart–Young).  Each ΔW_j has rank <= R because chunk_j has;
  it is returned already factored (down = A^{-1} U_j sqrt(s_j), up = sqrt(s_j) V_jᵀ S_j^{-1}), zero-padded
  to exactly R columns/rows.  The frozen weights are assumed generic (the prefix/suffix products are
  invertible), as in the paper.
* Nonlinear part (ReLU): the intermediate layers of a group must act linearly.  Writing z_j(h) = h @ A_j for
  the group input h, layer j < g gets bias c_j − β_{j-1} @ W'_j, where β_{j-1} = c_{j-1} (β_0 = 0) is the
  constant carried in from the previous layer; its output is then relu(z_j + c_j) = z_j + c_j as long as
  c_j > |z_j|.  The group's last layer gets b̄_i − c_{g-1} @ W'_g, so its pre-activation is exactly
  h @ W̄_i + b̄_i, the target's pre-activation.  The group input is the previous group's (post-activation)
  output, which the construction reproduces, so the whole network matches layer for layer.
* Choice of c: c_j = (100 · M_j + 1) · 1, where M_j = max |z_j| over the calibration inputs x_calib propagated
  through the adapted model built so far (per member, over samples and coordinates).  Justification: z_j is
  a fixed linear function of the group input, which is a piecewise-linear, Lipschitz function of x; on
  Gaussian inputs the calibration maximum over n samples is already ≈ sqrt(2 ln n) standard deviations of
  z_j, so a fresh input violates c_j > |z_j| only if |z_j| exceeds ~100× its calibration maximum — hundreds
  of standard deviations, probability ≈ exp(−10⁴) — and inputs scaled by up to ~100× (e.g. the paper's
  shifted test set N(0, 25 I)) stay safe.  The "+1" keeps c_j > 0 when z_j vanishes on the batch.  The
  cost of a large c is only cancellation error ≈ eps·|c|·|W'|, ~1e-13 in float64.
* Identity activation: intermediate biases are left at their frozen values (any choice composes) and the
  group's last bias is b̄_i − β_{g-1} @ W'_g with β the propagated offset, so the affine maps compose
  exactly.  Without biases (b is None) everything stays None.
* last_activation=False: the final frozen layer is the final layer of the last group and the target's last
  layer is the last target layer; both lose their activation.  Since the construction matches the group's
  final *pre-activation* exactly and keeps the group's intermediate layers (which still carry the
  activation) in the linear regime, dropping the activation on both sides preserves equality: the
  construction is unchanged.
* rank 0 is allowed: no adapters (tensors with R = 0), bias-only construction.

Numerics: all computation is done in float64, batched over the member axis E.  The construction is exact
in exact arithmetic, but its adapted weights have norms ≈ ‖chunk‖ / (σ_min(prefix) σ_min(suffix)), and
evaluating the adapted network loses about eps · Π_j ‖W'_j‖ (× C_SCALE for ReLU, from the cancelled
biases).  With default-init (U(±1/√D)) frozen layers and groups of <= 3 layers the float64 forward error is
<= ~1e-8 relative; with groups of >= 4 layers (e.g. D = 16, L = 8, L̄ = 2) the products of frozen layers
have condition numbers ~1e6 and the float64 forward error of the *exact* construction reaches 1e-3..1 —
an intrinsic property of this construction (the authors' float32 runs see the same), not a residual of the
solve.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

__all__ = ["group_layers", "threshold_rank", "construct", "eckart_young_tail", "C_SCALE"]

#: multiplier on the calibration maximum |pre-activation| used for the ReLU-linearising biases.
C_SCALE = 100.0

_ACTIVATIONS = ("relu", "identity")


def group_layers(L: int, L_bar: int) -> list[list[int]]:
    """Partition frozen layers 0..L-1 into L_bar consecutive groups.

    Each group has ⌊L/L̄⌋ layers and the last group takes the rest (authors' `adapt_ours`).
    Group i implements target layer i.
    """
    L, L_bar = operator.index(L), operator.index(L_bar)
    if L_bar < 1 or L < 1:
        raise ValueError(f"need L >= 1 and L_bar >= 1, got L={L}, L_bar={L_bar}")
    if L_bar > L:
        raise ValueError(f"target depth L_bar={L_bar} exceeds frozen depth L={L}")
    per = L // L_bar
    groups = [list(range(i * per, (i + 1) * per)) for i in range(L_bar - 1)]
    groups.append(list(range((L_bar - 1) * per, L)))
    return groups


def threshold_rank(D: int, L: int, L_bar: int) -> int:
    """Smallest per-layer rank at which the construction is exact.

    ⌈D·L̄/L⌉ when L̄ divides L, else ⌈D / ⌊L/L̄⌋⌉ (the smallest group has ⌊L/L̄⌋ layers).
    """
    D, L, L_bar = operator.index(D), operator.index(L), operator.index(L_bar)
    if D < 1 or L < 1 or L_bar < 1:
        raise ValueError(f"need D, L, L_bar >= 1, got D={D}, L={L}, L_bar={L_bar}")
    if L_bar > L:
        raise ValueError(f"target depth L_bar={L_bar} exceeds frozen depth L={L}")
    if L % L_bar == 0:
        return -(-D * L_bar // L)
    return -(-D // (L // L_bar))


def eckart_young_tail(W: Sequence[torch.Tensor], W_tgt: Sequence[torch.Tensor], k) -> torch.Tensor:
    """The linear case's below-threshold bound (Zeng & Lee 2024, linear-network theorem): per member,

        tail_k = Σ_{i > k} σ_i(Ē)² / D,     Ē = W̄_1 ⋯ W̄_L̄ − W_1 ⋯ W_L  (x @ W orientation),

    with k = (number of adapted layers) · R.  For identity activations the adapted product is
    W_1⋯W_L + (a matrix of rank <= L·R) (telescoping: each term holds one rank-R factor), so by Eckart–Young
    no rank-R LoRA gets below tail_k, and the SVD construction (L̄ = 1) attains it.  The normalisation is the
    paper's test loss, `nn.MSELoss` on x ~ N(0, I_D): E‖x Ē'‖² / D = ‖Ē'‖_F² / D for the residual Ē'.
    Biases only add a non-negative term, so tail_k stays a lower bound with them.

    Args: W: L frozen weights (E, D, D); W_tgt: L̄ target weights (E, D, D); k: int or (E,) ints.
    Returns: (E,) float64.
    """
    P = _product([_f64(w) for w in W])
    P_tgt = _product([_f64(w) for w in W_tgt])
    s2 = torch.linalg.svdvals(P_tgt - P).pow(2)                               # (E, D), descending
    E, D = s2.shape
    k = torch.as_tensor(k, device=s2.device).reshape(-1).expand(E)
    keep = torch.arange(D, device=s2.device)[None, :] >= k[:, None]          # (E, D): directions beyond k
    return (s2 * keep).sum(1) / D


def _product(ws: list) -> torch.Tensor:
    """W_1 @ W_2 @ ... (E, D, D)."""
    out = ws[0]
    for w in ws[1:]:
        out = out @ w
    return out


def _f64(t) -> torch.Tensor:
    return torch.as_tensor(t).to(torch.float64)


def _vecmat(v: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """(E, D) @ (E, D, K) -> (E, K)."""
    return (v.unsqueeze(1) @ M).squeeze(1)


def construct(
    W: Sequence[torch.Tensor],
    b: Sequence[torch.Tensor] | None,
    W_tgt: Sequence[torch.Tensor],
    b_tgt: Sequence[torch.Tensor] | None,
    rank: int,
    activation: str,
    last_activation: bool,
    x_calib: torch.Tensor | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor] | None]:
    """Closed-form LoRA + bias adaptation of a frozen FNN towards a target FNN (Zeng & Lee 2024).

    Args:
        W: L frozen weights, each (E, D, D) (x @ W orientation); a stacked (L, E, D, D) tensor also works.
        b: L frozen biases, each (E, D), or None for a bias-free model.
        W_tgt: L̄ target weights, each (E, D, D).
        b_tgt: L̄ target biases, each (E, D), or None (treated as zero when the frozen model has biases).
        rank: per-layer LoRA rank R >= 0.
        activation: "relu" or "identity".
        last_activation: whether the activation follows the last layer (both models).
        x_calib: calibration inputs, (N, D) shared by all members or (E, N, D); required for "relu"
            (sets the ReLU-linearising biases, see module docstring), ignored (may be None) for "identity".

    Returns:
        downs: list of L float64 tensors (E, D, R); ups: list of L float64 tensors (E, R, D) — the adapted
        weight of layer l is W[l] + downs[l] @ ups[l]; new_biases: list of L float64 tensors (E, D) replacing
        b (None when b is None).
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: {_ACTIVATIONS}")
    R = operator.index(rank)
    if R < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    W = [_f64(w) for w in W]
    W_tgt = [_f64(w) for w in W_tgt]
    L, L_bar = len(W), len(W_tgt)
    groups = group_layers(L, L_bar)  # validates L_bar <= L
    E, D, D2 = W[0].shape
    if D != D2:
        raise ValueError(f"frozen weights must be square (E, D, D), got {tuple(W[0].shape)}")
    for name, ws in (("W", W), ("W_tgt", W_tgt)):
        for w in ws:
            if w.shape != (E, D, D):
                raise ValueError(f"{name} entries must all be (E, D, D) = {(E, D, D)}, got {tuple(w.shape)}")
    has_bias = b is not None
    if activation == "relu" and not has_bias:
        raise ValueError("the ReLU construction needs biases (b is None)")
    if has_bias:
        b = [_f64(v) for v in b]
        if len(b) != L or any(v.shape != (E, D) for v in b):
            raise ValueError(f"b must hold {L} tensors of shape {(E, D)}")
        if b_tgt is None:
            b_tgt = [torch.zeros(E, D, dtype=torch.float64, device=W[0].device) for _ in range(L_bar)]
        b_tgt = [_f64(v) for v in b_tgt]
        if len(b_tgt) != L_bar or any(v.shape != (E, D) for v in b_tgt):
            raise ValueError(f"b_tgt must hold {L_bar} tensors of shape {(E, D)}")
    elif b_tgt is not None:
        raise ValueError("target has biases but the frozen model has none: bias tuning impossible")

    dev = W[0].device
    h = None
    if activation == "relu":
        if x_calib is None:
            raise ValueError("x_calib is required for the ReLU construction")
        h = _f64(x_calib).to(dev)
        if h.dim() == 2:
            h = h.unsqueeze(0).expand(E, -1, -1)
        if h.dim() != 3 or h.shape[0] != E or h.shape[2] != D:
            raise ValueError(f"x_calib must be (N, D) or (E, N, D) with D={D}, got {tuple(x_calib.shape)}")

    eye = torch.eye(D, dtype=torch.float64, device=dev).expand(E, D, D)
    downs: list = [None] * L
    ups: list = [None] * L
    new_b: list | None = [None] * L if has_bias else None

    for i, grp in enumerate(groups):
        g = len(grp)
        Wg = [W[l] for l in grp]
        # frozen suffix products: suf[j] = W_{j+1} @ ... @ W_{g-1} (identity for the last layer)
        suf: list = [None] * g
        acc = eye
        for j in range(g - 1, -1, -1):
            suf[j] = acc
            acc = Wg[j] @ acc
        err = W_tgt[i] - acc  # acc = full frozen product of the group
        U, S, Vh = torch.linalg.svd(err)
        sq = S.clamp_min(0).sqrt()

        Wp: list = [None] * g  # adapted weights
        A = eye  # adapted prefix product
        prefixes: list = [None] * g  # prefixes[j] = W'_0 @ ... @ W'_j
        for j in range(g):
            lo, hi = min(j * R, D), min((j + 1) * R, D)
            k = hi - lo
            down = torch.zeros(E, D, R, dtype=torch.float64, device=dev)
            up = torch.zeros(E, R, D, dtype=torch.float64, device=dev)
            if k > 0:
                left = U[:, :, lo:hi] * sq[:, None, lo:hi]  # (E, D, k)
                right = sq[:, lo:hi, None] * Vh[:, lo:hi, :]  # (E, k, D)
                down[:, :, :k] = torch.linalg.solve(A, left)  # A^{-1} U s^{1/2}
                up[:, :k, :] = torch.linalg.solve(suf[j], right, left=False)  # s^{1/2} Vᵀ S^{-1}
            downs[grp[j]], ups[grp[j]] = down, up
            Wp[j] = Wg[j] + down @ up
            A = A @ Wp[j]
            prefixes[j] = A

        if has_bias:
            beta = torch.zeros(E, D, dtype=torch.float64, device=dev)  # offset carried into layer j
            for j in range(g):
                l = grp[j]
                carried = _vecmat(beta, Wp[j])
                if j == g - 1:
                    new_b[l] = b_tgt[i] - carried
                    break
                if activation == "relu":
                    z = h @ prefixes[j]  # linear part of the pre-activation on the calibration inputs
                    m = z.abs().amax(dim=(1, 2))  # per member
                    target = (C_SCALE * m + 1.0)[:, None].expand(E, D).clone()
                    new_b[l] = target - carried
                else:  # identity: keep the frozen bias, carry the offset forward
                    new_b[l] = b[l].clone()
                    target = carried + b[l]
                beta = target

        if h is not None:  # propagate the calibration inputs through the adapted group
            for j in range(g):
                l = grp[j]
                h = h @ Wp[j] + new_b[l].unsqueeze(1)
                if l < L - 1 or last_activation:
                    h = torch.relu(h)

    return downs, ups, new_b
