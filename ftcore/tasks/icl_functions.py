"""In-context function classes of Garg et al. ("What Can Transformers Learn In-Context? A Case Study of
Simple Function Classes", NeurIPS 2022; code dtsip/in-context-learning `src/tasks.py`, `src/samplers.py`,
`src/curriculum.py`), as pure generators (papers.md §0.1; also used by the looped transformer, §4).

Each prompt p draws its own function f_p and K points x_i ~ N(0, I_d) (`GaussianSampler.sample_xs`); the
labels are y_i = f_p(x_i):

    linear          y = wᵀx,                         w ~ N(0, I_d)
    noisy_linear    y = wᵀx + ε,                     ε ~ N(0, σ²)   (σ = 0.1 in the looped code, §4a)
    sparse_linear   y = wᵀx,  w ~ N(0, I_d) with all but s = 3 random coordinates zeroed
    quadratic       y = (x∘x)ᵀw / √3                 (E[x_j⁴] = 3, so Var y = d like the linear task)
    relu_2nn        y = √(2/h) · W2ᵀ ReLU(W1ᵀx),     W1 ∈ R^{d×h}, W2 ∈ R^{h×1}, entries N(0, 1), h = 100
    decision_tree   full binary tree of depth 4 in an array (node j → children 2j+1, 2j+2); each node holds a
                    coordinate c_j ~ U{0..d−1}; at node j go to 2j+1+[x_{c_j} > 0]; leaf values ~ N(0, 1)

Curriculum (`src/curriculum.py`): only the first d_eff = `n_dims_truncated` coordinates of x are nonzero
(the rest are set to 0, as `sample_xs` does), and the number of points K grows; `Curriculum` holds both
schedules. `interleave` is Garg's `_combine`: tokens x_1, ỹ_1, x_2, ỹ_2, … with ỹ_i = [y_i, 0, …, 0] ∈ R^d.
The metric is the papers' normalised squared error (pred − y)² / d (Leiay/looped_transformer
`aggregate_metrics`). All randomness comes from an explicit torch.Generator (DESIGN.md §5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def sample_xs(gen: torch.Generator, n_prompts: int, n_points: int, d: int,
              n_dims_truncated: int | None = None) -> torch.Tensor:
    """x_i ~ N(0, I_d) with coordinates ≥ n_dims_truncated zeroed (Garg `GaussianSampler.sample_xs`)."""
    xs = torch.randn(n_prompts, n_points, d, generator=gen)               # (P, K, d)
    if n_dims_truncated is not None:
        if not 0 < n_dims_truncated <= d:
            raise ValueError(f"n_dims_truncated must be in 1..{d}, got {n_dims_truncated}")
        xs[:, :, n_dims_truncated:] = 0
    return xs


def _gaussian_w(gen, n_prompts, d):
    return torch.randn(n_prompts, d, 1, generator=gen)                    # (P, d, 1)


def sample_linear(gen: torch.Generator, n_prompts: int, n_points: int, d: int,
                  n_dims_truncated: int | None = None, scale: float = 1.0):
    """Linear regression y = scale · wᵀx, w ~ N(0, I_d) (`LinearRegression.evaluate`)."""
    xs = sample_xs(gen, n_prompts, n_points, d, n_dims_truncated)         # (P, K, d)
    w = _gaussian_w(gen, n_prompts, d)                                    # (P, d, 1)
    return xs, scale * (xs @ w)[..., 0]                                   # (P, K)


def sample_noisy_linear(gen: torch.Generator, n_prompts: int, n_points: int, d: int,
                        n_dims_truncated: int | None = None, scale: float = 1.0,
                        noise_std: float = 0.1, renormalize_ys: bool = False):
    """Noisy LR y = scale · wᵀx + ε, ε ~ N(0, σ²) (`NoisyLinearRegression`). `renormalize_ys` rescales the
    whole batch to std √d, as the reference's option of the same name does."""
    xs, ys = sample_linear(gen, n_prompts, n_points, d, n_dims_truncated, scale)
    ys = ys + noise_std * torch.randn(ys.shape, generator=gen)            # (P, K)
    if renormalize_ys:
        ys = ys * math.sqrt(d) / ys.std()
    return xs, ys


def sample_sparse_linear(gen: torch.Generator, n_prompts: int, n_points: int, d: int,
                         n_dims_truncated: int | None = None, scale: float = 1.0, sparsity: int = 3,
                         support_from_truncated: bool = True):
    """Sparse LR: w ~ N(0, I_d), all but `sparsity` coordinates zeroed (`SparseLinearRegression`).

    The support is drawn from the first `valid_coords` coordinates: Garg's train.py passes
    valid_coords = n_dims_truncated (`support_from_truncated=True`); the looped code draws from all d
    (papers.md §4a, App. B) — pass False for that.
    """
    xs = sample_xs(gen, n_prompts, n_points, d, n_dims_truncated)         # (P, K, d)
    w = _gaussian_w(gen, n_prompts, d)                                    # (P, d, 1)
    valid = n_dims_truncated if (support_from_truncated and n_dims_truncated is not None) else d
    if not 0 < sparsity <= valid:
        raise ValueError(f"sparsity must be in 1..{valid}, got {sparsity}")
    # a random permutation per prompt: argsort of uniform keys; keep its first `sparsity` entries
    perm = torch.rand(n_prompts, valid, generator=gen).argsort(dim=1)     # (P, valid)
    mask = torch.zeros(n_prompts, d, dtype=torch.bool)
    mask.scatter_(1, perm[:, :sparsity], True)                            # (P, d)
    w = w * mask[..., None]
    return xs, scale * (xs @ w)[..., 0]


def sample_quadratic(gen: torch.Generator, n_prompts: int, n_points: int, d: int,
                     n_dims_truncated: int | None = None, scale: float = 1.0):
    """Quadratic regression y = scale · (x∘x)ᵀw / √3 (`QuadraticRegression`)."""
    xs = sample_xs(gen, n_prompts, n_points, d, n_dims_truncated)         # (P, K, d)
    w = _gaussian_w(gen, n_prompts, d)                                    # (P, d, 1)
    return xs, scale * ((xs ** 2) @ w)[..., 0] / math.sqrt(3)


def sample_relu_2nn(gen: torch.Generator, n_prompts: int, n_points: int, d: int,
                    n_dims_truncated: int | None = None, scale: float = 1.0, hidden_layer_size: int = 100):
    """ReLU 2-layer net y = scale · √(2/h) · W2ᵀ ReLU(W1ᵀx) (`Relu2nnRegression`)."""
    xs = sample_xs(gen, n_prompts, n_points, d, n_dims_truncated)         # (P, K, d)
    w1 = torch.randn(n_prompts, d, hidden_layer_size, generator=gen)      # (P, d, h)
    w2 = torch.randn(n_prompts, hidden_layer_size, 1, generator=gen)      # (P, h, 1)
    ys = (torch.relu(xs @ w1) @ w2)[..., 0]                               # (P, K)
    return xs, scale * math.sqrt(2 / hidden_layer_size) * ys


def sample_decision_tree(gen: torch.Generator, n_prompts: int, n_points: int, d: int,
                         n_dims_truncated: int | None = None, depth: int = 4):
    """Depth-`depth` decision tree (`DecisionTree`). As in the reference, the node coordinates are drawn from
    all d coordinates even under truncation (a zeroed coordinate always sends x left, 0 > 0 being false)."""
    xs = sample_xs(gen, n_prompts, n_points, d, n_dims_truncated)         # (P, K, d)
    n_nodes = 2 ** (depth + 1) - 1
    coords = torch.randint(0, d, (n_prompts, n_nodes), generator=gen)     # (P, nodes) used at internal nodes
    leaves = torch.randn(n_prompts, n_nodes, generator=gen)               # (P, nodes) used at leaf nodes
    node = torch.zeros(n_prompts, n_points, dtype=torch.long)             # (P, K) current node per point
    for _ in range(depth):
        c = coords.gather(1, node)                                        # (P, K)
        go_right = xs.gather(2, c[..., None])[..., 0] > 0                 # (P, K)
        node = 2 * node + 1 + go_right.long()
    return xs, leaves.gather(1, node)                                     # (P, K)


FUNCTION_CLASSES = {
    "linear": sample_linear,
    "sparse_linear": sample_sparse_linear,
    "noisy_linear": sample_noisy_linear,
    "quadratic": sample_quadratic,
    "relu_2nn": sample_relu_2nn,
    "decision_tree": sample_decision_tree,
}


def get_function_class(name: str):
    """Look up a sampler by short name; an unknown name lists the valid ones (DESIGN.md §5)."""
    if name not in FUNCTION_CLASSES:
        raise ValueError(f"unknown function class {name!r}; valid: {sorted(FUNCTION_CLASSES)}")
    return FUNCTION_CLASSES[name]


def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Garg's `_combine`: (P, K, d), (P, K) → (P, 2K, d) tokens x_1, ỹ_1, …, x_K, ỹ_K, ỹ_i = [y_i, 0, …, 0].
    The model's prediction for y_i is read at the x_i token (even positions 0, 2, …)."""
    P, K, d = xs.shape
    ys_tok = torch.zeros_like(xs)                                         # (P, K, d)
    ys_tok[..., 0] = ys
    return torch.stack([xs, ys_tok], dim=2).reshape(P, 2 * K, d)


def normalized_sq_error(pred: torch.Tensor, ys: torch.Tensor, d: int) -> torch.Tensor:
    """The papers' normalised squared error (pred − y)² / d, per prompt and position: (P, K).

    Pass `d = error_normalizer(name, d, ...)` to reproduce the plotted curves of every task (see there)."""
    return (pred - ys) ** 2 / d


def error_normalizer(name: str, d: int, sparsity: int = 3) -> int:
    """The divisor the reference plots use (dtsip `src/plot_utils.py` `collect_results`): d, except sparsity
    for sparse LR (Var y = s there, so the zero predictor scores 1) and 1 for the decision tree."""
    get_function_class(name)
    return {"sparse_linear": sparsity, "decision_tree": 1}.get(name, d)


@dataclass
class Schedule:
    """One curriculum variable (Garg conf `curriculum.dims` / `curriculum.points`)."""
    start: int
    end: int
    inc: int
    interval: int

    def __post_init__(self):
        if self.interval <= 0:
            raise ValueError(f"interval must be > 0, got {self.interval}")
        if self.inc < 0 or self.start > self.end:
            raise ValueError(f"need inc >= 0 and start <= end, got start={self.start} end={self.end} inc={self.inc}")


@dataclass
class Curriculum:
    """Garg's `Curriculum`: every `interval` calls to `update()` a variable grows by `inc`, capped at `end`.

    Defaults are `src/conf/base.yaml` / `linear_regression.yaml`: dims 5 → 20 (+1 / 2000 steps), points
    11 → 41 (+2 / 2000 steps); DT and ReLU-2NN use points 26 → 101 (+5); the looped code uses interval 5000.
    """
    dims: Schedule = field(default_factory=lambda: Schedule(5, 20, 1, 2000))
    points: Schedule = field(default_factory=lambda: Schedule(11, 41, 2, 2000))
    step_count: int = field(default=0, init=False)
    n_dims_truncated: int = field(init=False)
    n_points: int = field(init=False)

    def __post_init__(self):
        self.n_dims_truncated, self.n_points = self.dims.start, self.points.start

    def update(self) -> None:
        self.step_count += 1
        self.n_dims_truncated = self._update_var(self.n_dims_truncated, self.dims)
        self.n_points = self._update_var(self.n_points, self.points)

    def _update_var(self, var: int, s: Schedule) -> int:
        if self.step_count % s.interval == 0:
            var += s.inc
        return min(var, s.end)
