"""`contrastive`: the synthetic problem of "Mini-Batch Optimization of Contrastive Loss" (Cho, Sreenivasan,
Lee, …, Papailiopoulos, Lee; TMLR 2024; papers.md §3; reference krafton-ai/mini-batch-cl `synthetic.py`).

N positive pairs of free embeddings (u_i, v_i) on the unit sphere of R^d (the model `embeddings`: tables
U, V drawn N(0, I), normalised in every forward pass). With z_ij = u_iᵀv_j (temperature 1), a batch S is
trained on the symmetric InfoNCE L_S (ftcore.batching.symmetric_infonce); the full-batch loss is L_[N].
The data are only the sample ids: x is their one-hot codes, so the batch-selection strategy
(`train.batch_selection`, ftcore.batching) is the whole experiment — which B-subsets of [N] each SGD step
sees. `batch_selection: task` (the default) is shuffled SGD from the same "batching" stream as `shuffle`.

Known optima of L_[N] (`optimum`; reference `get_solution`), as the matrix Z* = (u_iᵀv_j):
* simplex ETF, d ≥ N−1:  u_i = v_i,  Z*_ii = 1,  Z*_ij = −1/(N−1)
      L* = 2 [−1 + log(e + (N−1) e^{−1/(N−1)})]          (N = 8: 2.3464)
* cross-polytope, d = N/2 (N even):  u_i = v_i, antipodal partners,  Z*_ii = 1, Z*_{i,p(i)} = −1, else 0
      L* = 2 [−1 + log(e + e^{−1} + N − 2)]               (N = 8: 2.4135)
Both are invariant to a common rotation of U, V, so the distance to the optimum is measured on Z:
`opt/dist` = ‖Z − Z*‖_F for the ETF (Z* does not depend on the labelling); for the cross-polytope the
partner of i is taken as p(i) = argmin_{j≠i} z_ij, row by row — exact whenever those partners form a
matching (always near the optimum), a lower bound of the best matching's distance otherwise.

Batches: `batch(step)` / `batch_of(idx)` give x (E, M, B, N) one-hot codes of M batches of B ids, y (E, M, B)
the ids (float; the positive of row b is column b, so the loss does not read y), w (E, M) = 1/M.
Metrics: `full/loss` L_[N]; when an optimum is known `opt/gap` = L_[N] − L*, `opt/dist`, `opt/optimum` = L*;
`cost/forwards`, `cost/batch_losses`: the compute spent so far (ftcore.batching.cost).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ftcore.batching import symmetric_infonce
from ftcore.batching.partition import Shuffle
from ftcore.fields import check
from ftcore.models.mlp import build_model
from ftcore.registry import TASKS
from ftcore.seeding import generators
from ftcore.tasks.selection import SelectionTask


@dataclass
class ContrastiveConfig:
    name: str = "contrastive"
    n: int = 8              # N pairs
    dim: int = 16           # d
    batch_size: int = 2     # B

    per_member = ()

    def __post_init__(self):
        check(self.n >= 2, "task.n", ">= 2", self.n)
        check(self.dim >= 1, "task.dim", ">= 1", self.dim)
        check(1 <= self.batch_size <= self.n, "task.batch_size", f"in [1, task.n={self.n}]", self.batch_size)


def optimum(n: int, d: int) -> tuple[str, torch.Tensor, float] | None:
    """(kind, Z* (N, N) float64, L*) of the known optima of the full-batch loss, or None when unknown."""
    if d >= n - 1:
        z = torch.full((n, n), -1.0 / (n - 1), dtype=torch.float64)
        z.fill_diagonal_(1.0)
        return "etf", z, 2 * (-1 + math.log(math.e + (n - 1) * math.exp(-1 / (n - 1))))
    if n % 2 == 0 and d == n // 2:
        z = torch.eye(n, dtype=torch.float64)
        i = torch.arange(n)
        z[i, i ^ 1] = -1.0                                                        # partners (0,1), (2,3), …
        return "cross_polytope", z, 2 * (-1 + math.log(math.e + math.exp(-1) + n - 2))
    return None


def distance_to_optimum(z: torch.Tensor, kind: str, z_star: torch.Tensor) -> torch.Tensor:
    """z (E, N, N) -> (E,): ‖Z − Z*‖_F, Z* relabelled for the cross-polytope (module docstring)."""
    if kind == "etf":
        return (z - z_star.to(z)).flatten(1).norm(dim=1)
    n = z.shape[-1]
    eye = torch.eye(n, dtype=z.dtype, device=z.device)
    partner = (z + 2 * eye).argmin(-1)                                            # (E, N): j ≠ i minimising z_ij
    target = eye - torch.nn.functional.one_hot(partner, n).to(z)                  # (E, N, N)
    return (z - target).flatten(1).norm(dim=1)


@TASKS.register("contrastive")
class Contrastive(SelectionTask):
    Config = ContrastiveConfig
    per_member = ContrastiveConfig.per_member
    models = ("embeddings",)

    @staticmethod
    def io_dims(cfg, model_cfg):
        return cfg.n, cfg.dim

    def build_base(self):
        c0 = self.cfgs[0]
        self.n, self.d, self.b = c0.n, c0.dim, c0.batch_size
        self.own = Shuffle(self.n, self.b, 0, generators(self.seeds, "batching"))   # `batch_selection: task`
        self.opt = optimum(self.n, self.d)
        return build_model(self.model_cfg, self.n, self.d, generators(self.seeds, "base"))

    def batch_of(self, idx: torch.Tensor):
        """idx (E, M, B) sample ids -> x (E, M, B, N) one-hot, y (E, M, B) ids, w (E, M) = 1/M."""
        idx = idx.to(self.device)
        x = torch.nn.functional.one_hot(idx, self.n).to(self.dtype)
        w = torch.full(idx.shape[:2], 1.0 / idx.shape[1], dtype=self.dtype, device=self.device)
        return x, idx.to(self.dtype), w

    def batch(self, step):
        return self.own_batch(step)

    def loss(self, pred, y, w):
        """pred (E, M, B, 2, d) unit pairs -> Σ_m w_m L_{S_m}  (E,)."""
        logits = pred[..., 0, :] @ pred[..., 1, :].transpose(-1, -2)              # (E, M, B, B): z_ij = u_iᵀv_j
        return (w * symmetric_infonce(logits)).sum(-1)

    def pair_logits(self, model) -> torch.Tensor:
        """Z (E, N, N) of every pair at the current parameters (no grad)."""
        with torch.no_grad():
            eye = torch.eye(self.n, dtype=self.dtype, device=self.device).expand(self.E, self.n, self.n)
            pair = model(eye)                                                     # (E, N, 2, d)
            return pair[..., 0, :] @ pair[..., 1, :].transpose(-1, -2)

    @torch.no_grad()
    def evaluate(self, model):
        z = self.pair_logits(model)                                               # (E, N, N)
        loss = symmetric_infonce(z)                                               # (E,)
        out = {"full/loss": loss, **self.cost_metrics(loss)}
        if self.opt is not None:
            kind, z_star, l_star = self.opt
            out["opt/gap"] = loss - l_star
            out["opt/dist"] = distance_to_optimum(z, kind, z_star)
            out["opt/optimum"] = torch.full_like(loss, l_star)
        return out
