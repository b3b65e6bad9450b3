"""`ftc_relabel`: Fine-Tuning Capacity (Sohn, Kwon, An, Lee, "Memorization Capacity for Additive
Fine-Tuning with Small ReLU Networks", UAI 2024, arXiv 2408.00359; papers.md §1).

A frozen network f: R^d -> R and K samples x_j ~ N(0, I_d) with pre-training labels y_j = f(x_j). N of
the K samples (chosen uniformly) get new labels y'_j = f(x_j) + r_j with r_j ~ N(0, 1) (or ±1); the other
K − N keep y'_j = f(x_j). The adapter (f + g) must fit all K points:

    success  ⇔  max_j |(f + g)(x_j) − y'_j| < tol        (metrics `fit/max_err`, `fit/success`)

Only the residual r matters, so f's architecture is irrelevant to the capacity question; f is still a
real frozen `mlp` (R^d -> R) so the full model f + g is what is trained and measured. Training is
full-batch (all K points every step), the protocol of the calibration in papers.md §1(c).
K is `task.k`, or ⌈k_per_n · N⌉ when `k: 0` (gradient-trained capacity grows with K, so the shipped sweep
ties K to N; the constructive bound does not depend on K).

`train.method: construction` (adapter `additive_relu`) writes g down without an optimizer
(`ftcore.tasks.ftc_construction`: hats along a random projection, 3 units per relabelled point for depth 2,
Θ(√N) units for depth 3), in float64, and scores it with the same metrics: the constructive reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ftcore.fields import check
from ftcore.models.mlp import build_model
from ftcore.registry import TASKS
from ftcore.seeding import generators
from ftcore.tasks import ftc_construction
from ftcore.tasks.base import Task, pad_rows

LABELS = ("gaussian", "rademacher")


@dataclass
class FtcConfig:
    name: str = "ftc_relabel"
    dim: int = 8            # d
    n: int = 16             # N relabelled samples
    k: int = 0              # K samples in all; 0 = ceil(k_per_n * n), resolved at construction
    k_per_n: float = 2.0
    tol: float = 0.1        # success threshold on the max error over all K points
    labels: str = "gaussian"

    per_member = ("n", "k")

    def __post_init__(self):
        check(self.dim >= 1, "task.dim", ">= 1", self.dim)
        check(self.n >= 1, "task.n", ">= 1", self.n)
        check(self.k >= 0, "task.k", ">= 0 (0 = k_per_n * n)", self.k)
        check(self.k_per_n >= 1, "task.k_per_n", ">= 1", self.k_per_n)
        if self.k == 0:
            self.k = math.ceil(self.k_per_n * self.n)
        check(self.n <= self.k, "task.n", f"<= task.k={self.k} (N of the K samples are relabelled)", self.n)
        check(self.tol > 0, "task.tol", "> 0", self.tol)
        check(self.labels in LABELS, "task.labels", f"one of {', '.join(LABELS)}", self.labels)


@TASKS.register("ftc_relabel")
class FtcRelabel(Task):
    Config = FtcConfig
    per_member = FtcConfig.per_member
    success_metric = "fit/success"
    static_batch = True
    has_construction = True

    @staticmethod
    def check_compatible(cfg, model_cfg, adapter_cfg, train_cfg):
        if train_cfg.method == "construction":
            check(adapter_cfg.name == "additive_relu", "adapter.name", "additive_relu for train.method=construction",
                  adapter_cfg.name)

    @staticmethod
    def io_dims(cfg, model_cfg):
        return cfg.dim, 1

    @classmethod
    def rows(cls, cfg):
        return cfg.k

    def build_base(self):
        c0 = self.cfgs[0]
        f = build_model(self.model_cfg, c0.dim, 1, generators(self.seeds, "base")).freeze()
        xs, ys = [], []
        for cfg, g in zip(self.cfgs, generators(self.seeds, "data")):
            x = torch.randn(cfg.k, cfg.dim, generator=g)                              # (K, d)
            idx = torch.randperm(cfg.k, generator=g)[: cfg.n]
            r = torch.randn(cfg.n, generator=g) if cfg.labels == "gaussian" else \
                torch.randint(0, 2, (cfg.n,), generator=g).float() * 2 - 1
            res = torch.zeros(cfg.k)
            res[idx] = r
            xs.append(x)
            ys.append(res.unsqueeze(-1))
        self.x, self.w = pad_rows(xs)                                                  # (E, K, d), (E, K)
        self.residual, _ = pad_rows(ys)                                                # (E, K, 1)
        self.use_base(f)
        self.valid = self.w > 0
        self.tol = torch.tensor([c.tol for c in self.cfgs])
        return f

    @torch.no_grad()
    def use_base(self, base):
        self.y = base(self.x) + self.residual                                          # y' = f(x) + r

    def batch(self, step):
        return self.x, self.y, self.w

    @torch.no_grad()
    def evaluate(self, model):
        err = (model(self.x) - self.y).abs().squeeze(-1)                                # (E, K)
        max_err = torch.where(self.valid, err, torch.zeros_like(err)).amax(-1)
        max_err = torch.where(err.isfinite().all(-1), max_err, torch.full_like(max_err, float("nan")))
        return {"fit/max_err": max_err, "fit/success": (max_err < self.tol.to(max_err)).to(max_err),
                "train/loss": (self.w * err.pow(2)).sum(-1)}

    @torch.no_grad()
    def construct(self, model) -> None:
        """Write the constructive g (ftc_construction) of each member's width into the additive ReLU adapter."""
        res = (self.y - model.base(self.x)).squeeze(-1)                                 # (E, K) r = y' − f(x)
        depth = len(model.Ws)
        for e, (cfg, gen) in enumerate(zip(self.cfgs, generators(self.seeds, "construction"))):
            v = torch.randn(cfg.dim, generator=gen, dtype=torch.float64)
            v = (v / v.norm()).to(self.x)                                                # (d,) unit direction
            t = (self.x[e, : cfg.k] @ v).cpu().double().numpy()                           # (K,) projections
            r = res[e, : cfg.k].cpu().double().numpy()
            m = sum(model.sizes[e])
            for p in list(model.Ws) + list(model.bs):
                p[e].zero_()
            if depth == 2:
                c, a = ftc_construction.depth2(t, r, m, cfg.tol)
                h = len(c)
                model.Ws[0][e, :, :h] = v[:, None].expand(-1, h)
                model.bs[0][e, :h] = -torch.as_tensor(c).to(v)
                model.Ws[1][e, :h, 0] = torch.as_tensor(a).to(v)
                continue
            w = ftc_construction.depth3(t, r, m, cfg.tol)
            if w is None:                                                                # too narrow: g = 0
                continue
            c1, W2, b2, out = (torch.as_tensor(z).to(v) for z in w)
            h1, h2 = W2.shape
            model.Ws[0][e, :, :h1] = v[:, None].expand(-1, h1)
            model.bs[0][e, :h1] = -c1
            model.Ws[1][e, :h1, :h2] = W2
            model.bs[1][e, :h2] = b2
            model.Ws[2][e, :h2, 0] = out
