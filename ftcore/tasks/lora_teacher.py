"""`lora_teacher`: The Expressive Power of Low-Rank Adaptation (Zeng & Lee, ICLR 2024; papers.md §2;
code UW-Madison-Lee-Lab/Expressive_Power_of_LoRA `run_exp.py` approx_fnn).

A frozen FNN f of width D and depth L (`model.*`, random, or "pretrained" on the target until its MSE falls
below initial/`pretrain_level`, the code's `pretrained_level = 3`) is adapted with LoRA to match a random
target FNN f̄ of depth L̄ (`task.target_depth`, same width and init). Inputs x ~ N(0, I_D), a fresh batch
every step (infinite data). Metrics on fixed held-out sets drawn from the member's own generator:
`val/mse` (n_val inputs, for hyper-parameter selection), `test/mse` (n_test = 5000 inputs, `nn.MSELoss`,
i.e. averaged over the D outputs — the number the paper reports), `test/mse_base` (the unadapted frozen
model: rank 0, nothing tuned), `test/target_var` (the target's output variance over the test inputs, averaged
over the D outputs = the test MSE of the best constant predictor, the target's mean) and

    test/mse_rel = test/mse / test/target_var      (fraction of the target's variance left unexplained).

The paper reports raw MSE, whose scale is the target's output variance (small with a ReLU after the output);
dividing by it makes a tolerance ε mean the same for every (D, L, L̄) and for random and pretrained frozen
models (the unadapted model's error, the old denominator, moves with pretraining). For identity activations
the task also writes the linear case's Eckart–Young bound `test/ey_tail` = Σ_{i > L·R} σ_i(Ē)²/D of the needed
update Ē = ∏W̄ − ∏W (`lora_construction.eckart_young_tail`, the paper's normalisation) and `test/ey_tail_rel`
= test/ey_tail / test/target_var: no rank-R LoRA has a lower expected test MSE.

Theory [paper]: exact representation iff R ≥ ⌈D·L̄/L⌉ (L̄ | L; otherwise the frozen layers are grouped
⌊L/L̄⌋ per group, the last taking the rest, and the threshold is ⌈D/⌊L/L̄⌋⌉). `train.method: construction`
applies the paper's SVD construction (ftcore.tasks.lora_construction) in float64 instead of training.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ftcore.fields import check
from ftcore.models.mlp import build_model
from ftcore.optim import PackedAdamW
from ftcore.registry import TASKS
from ftcore.seeding import generators
from ftcore.tasks import lora_construction
from ftcore.tasks.base import Task


@dataclass
class LoraTeacherConfig:
    name: str = "lora_teacher"
    target_depth: int = 1          # L̄
    pretrained: bool = False
    pretrain_level: float = 3.0
    pretrain_lr: float = 1e-3
    pretrain_max_steps: int = 3000
    batch_size: int = 256
    n_val: int = 1000
    n_test: int = 5000

    per_member = ()

    def __post_init__(self):
        check(self.target_depth >= 1, "task.target_depth", ">= 1", self.target_depth)
        check(self.pretrain_level > 1, "task.pretrain_level", "> 1", self.pretrain_level)
        check(self.pretrain_lr > 0, "task.pretrain_lr", "> 0", self.pretrain_lr)
        check(self.pretrain_max_steps >= 0, "task.pretrain_max_steps", ">= 0", self.pretrain_max_steps)
        for f in ("batch_size", "n_val", "n_test"):
            check(getattr(self, f) >= 1, f"task.{f}", ">= 1", getattr(self, f))


def fresh(gens, n: int, dim: int) -> torch.Tensor:
    """(E, n, dim) standard normal inputs, member e from its own generator."""
    return torch.stack([torch.randn(n, dim, generator=g) for g in gens])


@TASKS.register("lora_teacher")
class LoraTeacher(Task):
    Config = LoraTeacherConfig
    has_construction = True

    @staticmethod
    def io_dims(cfg, model_cfg):
        return model_cfg.width, model_cfg.width

    @staticmethod
    def check_compatible(cfg, model_cfg, adapter_cfg, train_cfg):
        check(cfg.target_depth <= model_cfg.depth, "task.target_depth", f"<= model.depth={model_cfg.depth}", cfg.target_depth)
        if train_cfg.method != "construction":
            return
        check(adapter_cfg.name == "lora", "adapter.name", "lora for train.method=construction", adapter_cfg.name)
        check(not adapter_cfg.layers, "adapter.layers", "[] (every layer) for train.method=construction", adapter_cfg.layers)
        check(adapter_cfg.alpha is None, "adapter.alpha", "null for train.method=construction", adapter_cfg.alpha)
        if model_cfg.activation == "relu":
            check(model_cfg.bias, "model.bias",
                  "true for train.method=construction with relu (the construction sets biases)", model_cfg.bias)
        if model_cfg.bias:
            check(adapter_cfg.tune_bias, "adapter.tune_bias",
                  "true for train.method=construction when model.bias is true", adapter_cfg.tune_bias)

    @classmethod
    def rows(cls, cfg):
        return cfg.batch_size

    def build_base(self):
        c0, D = self.cfgs[0], self.model_cfg.width
        f = build_model(self.model_cfg, D, D, generators(self.seeds, "base"))
        tcfg = dataclasses.replace(self.model_cfg, depth=c0.target_depth)
        self.target = build_model(tcfg, D, D, generators(self.seeds, "target")).freeze()
        self.batch_gens = generators(self.seeds, "batches")
        held_out = generators(self.seeds, "heldout")
        self.x_val, self.x_test = fresh(held_out, c0.n_val, D), fresh(held_out, c0.n_test, D)
        self._label_held_out()
        if c0.pretrained:
            self._pretrain(f)
        self.base = f.freeze()
        self._label_held_out()
        return f

    def use_base(self, base) -> None:
        self.base = base
        self._label_held_out()

    @torch.no_grad()
    def _label_held_out(self) -> None:
        """Targets and the unadapted error on the held-out sets, in the task's current dtype."""
        self.y_val, self.y_test = self.target(self.x_val), self.target(self.x_test)
        self.target_var = self.y_test.var(1, unbiased=False).mean(1)                                # (E,)
        if hasattr(self, "base"):
            self.base_mse = (self.base(self.x_test) - self.y_test).pow(2).mean((1, 2))                # (E,)

    def _pretrain(self, f) -> None:
        """Adam on the target until each member's MSE < initial / pretrain_level (the code's pretrained_level)."""
        c0 = self.cfgs[0]
        opt = PackedAdamW(list(f.parameters()), lr=[c0.pretrain_lr] * self.E, weight_decay=[0.0] * self.E)
        gens = generators(self.seeds, "pretrain")
        with torch.no_grad():
            goal = (f(self.x_val) - self.y_val).pow(2).mean((1, 2)) / c0.pretrain_level
        for _ in range(c0.pretrain_max_steps):
            with torch.no_grad():
                active = (f(self.x_val) - self.y_val).pow(2).mean((1, 2)) >= goal
            if not active.any():
                break
            x = fresh(gens, c0.batch_size, self.model_cfg.width)
            opt.zero_grad()
            (f(x) - self.target(x)).pow(2).mean((1, 2)).sum().backward()
            opt.step(active)

    def to(self, dtype, device=None):
        """Cast, then relabel the held-out sets in `dtype` (float64 for the construction: exact to 1e-30)."""
        super().to(dtype, device)
        self._label_held_out()
        return self

    def batch(self, step):
        x = fresh(self.batch_gens, self.cfgs[0].batch_size, self.model_cfg.width).to(self.device, self.dtype)  # (E, B, D)
        with torch.no_grad():
            y = self.target(x)
        w = torch.full(x.shape[:2], 1.0 / x.shape[1], dtype=self.dtype, device=self.device)
        return x, y, w

    @torch.no_grad()
    def evaluate(self, model):
        test = (model(self.x_test) - self.y_test).pow(2).mean((1, 2))
        out = {"val/mse": (model(self.x_val) - self.y_val).pow(2).mean((1, 2)), "test/mse": test,
               "test/mse_base": self.base_mse, "test/target_var": self.target_var,
               "test/mse_rel": test / self.target_var}
        if self.model_cfg.activation == "identity" and hasattr(model, "ranks"):
            tail = self.eckart_young_tail(model)
            out.update({"test/ey_tail": tail, "test/ey_tail_rel": tail / self.target_var})
        return out

    def eckart_young_tail(self, model) -> torch.Tensor:
        """(E,) the bound Σ_{i > n·R} σ_i(∏W̄ − ∏W)²/D, n = the number of adapted layers (identity activation)."""
        n = len(getattr(model, "layers", None) or range(self.base.depth))
        k = torch.tensor([n * r for r in model.ranks])
        tail = lora_construction.eckart_young_tail(list(self.base.weights), list(self.target.weights), k)
        return tail.to(self.dtype).to(self.target_var.device)

    @torch.no_grad()
    def construct(self, model) -> None:
        """Write the paper's construction into the LoRA factors and bias deltas, member by member rank."""
        base = model.base
        W = list(base.weights)
        b = list(base.biases) if base.biases is not None else None
        Wt = list(self.target.weights)
        bt = list(self.target.biases) if self.target.biases is not None else None
        for r in sorted(set(model.ranks)):
            idx = torch.tensor([e for e, re in enumerate(model.ranks) if re == r])

            def sub(ts, idx=idx):
                return None if ts is None else [t[idx] for t in ts]

            downs, ups, new_b = lora_construction.construct(
                sub(W), sub(b), sub(Wt), sub(bt), r, self.model_cfg.activation,
                self.model_cfg.last_activation, self.x_val[idx])
            for l in range(base.depth):
                model.down[str(l)][idx, :, :r] = downs[l].to(self.dtype)
                model.up[str(l)][idx, :r, :] = ups[l].to(self.dtype)
                if new_b is not None:
                    model.db[str(l)][idx] = new_b[l].to(self.dtype) - b[l][idx]
