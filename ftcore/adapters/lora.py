"""`lora`: low-rank adaptation W + ΔW with ΔW = down · up of rank r (Hu et al. 2021; Zeng & Lee, ICLR 2024).

Layer l computes  y = h W_l + b_l + s · (h · down_l) · up_l,  down_l (E, in, R), up_l (E, R, out), s = α/r
(α = None gives s = 1, the LoRA-expressivity paper's convention). `up` starts at zero so the adapted model
equals the base at step 0; `down` ~ N(0, init_std²) (the paper's std = 0.25). A member of rank r in a pack
padded to R uses the first r columns (rank mask): masked columns see zero gradient, so it is exactly a
rank-r LoRA. `tune_bias` adds a trainable bias delta per adapted layer ("bias tuned" in the paper's runs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from ftcore.adapters.base import Adapter, capacity_mask, pad_stack
from ftcore.config import check
from ftcore.registry import ADAPTERS
from kernels.lora_linear import grouped_lora_linear


@dataclass
class LoraConfig:
    name: str = "lora"
    rank: int = 4
    alpha: Optional[float] = None
    init_std: float = 0.25
    layers: list[int] = field(default_factory=list)   # empty = every layer
    tune_bias: bool = False

    per_member = ("rank",)

    def __post_init__(self):
        check(self.rank >= 0, "adapter.rank", ">= 0", self.rank)
        check(self.alpha is None or self.alpha > 0, "adapter.alpha", "> 0 or null", self.alpha)
        check(self.init_std >= 0, "adapter.init_std", ">= 0", self.init_std)
        check(all(l >= 0 for l in self.layers), "adapter.layers", "layer indices >= 0", self.layers)
        check(len(set(self.layers)) == len(self.layers), "adapter.layers", "distinct layer indices", self.layers)


@ADAPTERS.register("lora")
class LoRA(Adapter):
    Config = LoraConfig
    per_member = LoraConfig.per_member
    capacity_field = "rank"

    @staticmethod
    def check_compatible(cfg, model_cfg, io_dims):
        check(all(l < model_cfg.depth for l in cfg.layers), "adapter.layers", f"indices < model.depth={model_cfg.depth}", cfg.layers)
        check(cfg.rank <= model_cfg.width, "adapter.rank", f"<= model.width={model_cfg.width}", cfg.rank)

    def __init__(self, cfgs, base, in_dim, out_dim, gens):
        super().__init__(cfgs, base, in_dim, out_dim, gens)
        c0 = cfgs[0]
        self.layers = list(c0.layers) or list(range(base.depth))
        ranks = [c.rank for c in cfgs]
        R = max(ranks)
        self.ranks = ranks
        scale = [1.0 if c.alpha is None else c.alpha / max(c.rank, 1) for c in cfgs]
        self.register_buffer("scale", torch.tensor(scale))                          # (E,)
        self.register_buffer("rank_of", torch.tensor(ranks, dtype=torch.int32))     # (E,)
        self.register_buffer("mask", capacity_mask(ranks, R).unsqueeze(1))        # (E, 1, R)
        self.down, self.up = nn.ParameterDict(), nn.ParameterDict()
        self.db = nn.ParameterDict()
        for l in self.layers:
            fi, fo = base.dims[l], base.dims[l + 1]
            downs = [torch.randn(fi, r, generator=g) * c0.init_std for r, g in zip(ranks, gens)]
            self.down[str(l)] = nn.Parameter(pad_stack(downs, (fi, R)))             # (E, in, R)
            self.up[str(l)] = nn.Parameter(torch.zeros(self.E, R, fo))              # (E, R, out)
            if c0.tune_bias:
                self.db[str(l)] = nn.Parameter(torch.zeros(self.E, fo))             # (E, out)

    def linear(self, l, h):
        """h (E, B, in) -> (E, B, out): one fused grouped LoRA linear (kernels.lora_linear)."""
        db = self.db[str(l)] if str(l) in self.db else None
        if str(l) not in self.down:
            return self.base.linear(l, h, db=db)
        b = self.base.bias(l)
        b = db if b is None else (b if db is None else b + db)                     # (E, out) or None
        return grouped_lora_linear(h, self.base.weights[l], b, self.down[str(l)], self.up[str(l)],
                                   self.scale, self.rank_of)

    def delta_weight(self, l):
        if str(l) not in self.down:
            return None, None
        dW = torch.bmm(self.down[str(l)] * self.mask, self.up[str(l)]) * self.scale.view(-1, 1, 1)  # (E, in, out)
        return dW, (self.db[str(l)] if str(l) in self.db else None)

    def n_trainable(self):
        dims = self.base.dims
        per_rank = sum(dims[l] + dims[l + 1] for l in self.layers)
        bias = sum(dims[l + 1] for l in self.layers) if self.cfgs[0].tune_bias else 0
        return [r * per_rank + bias for r in self.ranks]
