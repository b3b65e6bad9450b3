"""Baselines that tune base weights directly, as zero-initialised additive deltas (so adapted == base at 0).

* `full`: every weight and bias (full fine-tuning).
* `last_layers`: the last `n_layers` layers fully ("final layers tuning", `method flt` in the LoRA paper's code).
* `bias_only`: every bias only (BitFit-style; the rank-0 reference of the LoRA paper's runs).
Layer l computes h (W_l + ΔW_l) + (b_l + Δb_l); `delta_weight(l)` returns (ΔW_l, Δb_l).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ftcore.adapters.base import Adapter
from ftcore.config import check
from ftcore.registry import ADAPTERS


class DeltaAdapter(Adapter):
    """Trainable zero deltas on the weights of `weight_layers()` and the biases of `bias_layers()`."""

    def weight_layers(self) -> list[int]:
        raise NotImplementedError

    def bias_layers(self) -> list[int]:
        return self.weight_layers()

    def __init__(self, cfgs, base, in_dim, out_dim, gens):
        super().__init__(cfgs, base, in_dim, out_dim, gens)
        self.dW, self.db = nn.ParameterDict(), nn.ParameterDict()
        for l in self.weight_layers():
            self.dW[str(l)] = nn.Parameter(torch.zeros_like(base.weights[l]))        # (E, in, out)
        for l in self.bias_layers():
            if base.biases is not None:
                self.db[str(l)] = nn.Parameter(torch.zeros_like(base.biases[l]))     # (E, out)

    def linear(self, l, h):
        return self.base.linear(l, h, dW=self.dW[str(l)] if str(l) in self.dW else None,
                                db=self.db[str(l)] if str(l) in self.db else None)

    def delta_weight(self, l):
        return (self.dW[str(l)] if str(l) in self.dW else None, self.db[str(l)] if str(l) in self.db else None)

    def n_trainable(self):
        n = sum(p[0].numel() for p in self.parameters() if p.requires_grad)
        return [n] * self.E


@dataclass
class FullConfig:
    name: str = "full"
    per_member = ()


SEQUENCE_MODELS = ("transformer", "looped_transformer", "mamba", "hybrid", "mambaformer")


@ADAPTERS.register("full")
class Full(DeltaAdapter):
    """Full fine-tuning. On `mlp` a per-layer delta (mergeable). On the sequence models, which have no
    per-layer hook, every base parameter p gets a zero delta Δ and the forward is
    `torch.func.functional_call(base, {name: p + Δ})`: the same function and gradients as training p itself
    (weight decay pulls Δ, not p, to zero) — so an untrained base trained with `full` is a model trained
    from its initialisation, as the in-context-learning papers do (papers.md §0.1, §4–§5)."""
    Config = FullConfig
    models = ("mlp",) + SEQUENCE_MODELS + ("embeddings",)

    def __init__(self, cfgs, base, in_dim, out_dim, gens):
        self.generic = not hasattr(base, "linear")
        if not self.generic:
            super().__init__(cfgs, base, in_dim, out_dim, gens)
            return
        Adapter.__init__(self, cfgs, base, in_dim, out_dim, gens)
        self.deltas = nn.ParameterDict({_key(n): nn.Parameter(torch.zeros_like(p))       # (E, ...) each
                                        for n, p in base.named_parameters()})

    def weight_layers(self):
        return list(range(self.base.depth))

    def forward(self, x, **kw):
        """kw (e.g. the looped model's n_loops / keep_last, from `train_kwargs`) go to the base's forward."""
        if not self.generic:
            return super().forward(x, **kw)
        params = {n: p + self.deltas[_key(n)] for n, p in self.base.named_parameters()}
        return torch.func.functional_call(self.base, params, (x,), kw)

    def delta_weight(self, l):
        return None if self.generic else super().delta_weight(l)


def _key(name: str) -> str:
    """ParameterDict keys cannot contain dots."""
    return name.replace(".", "__")


@dataclass
class LastLayersConfig:
    name: str = "last_layers"
    n_layers: int = 1
    per_member = ()

    def __post_init__(self):
        check(self.n_layers >= 1, "adapter.n_layers", ">= 1", self.n_layers)


@ADAPTERS.register("last_layers")
class LastLayers(DeltaAdapter):
    Config = LastLayersConfig

    @staticmethod
    def check_compatible(cfg, model_cfg, io_dims):
        check(cfg.n_layers <= model_cfg.depth, "adapter.n_layers", f"<= model.depth={model_cfg.depth}", cfg.n_layers)

    def weight_layers(self):
        L = self.base.depth
        return list(range(L - self.cfgs[0].n_layers, L))


@dataclass
class BiasOnlyConfig:
    name: str = "bias_only"
    per_member = ()


@ADAPTERS.register("bias_only")
class BiasOnly(DeltaAdapter):
    Config = BiasOnlyConfig

    @staticmethod
    def check_compatible(cfg, model_cfg, io_dims):
        check(model_cfg.bias, "adapter.name", "an adapter other than bias_only when model.bias is false", cfg.name)

    def weight_layers(self):
        return []

    def bias_layers(self):
        return list(range(self.base.depth))
