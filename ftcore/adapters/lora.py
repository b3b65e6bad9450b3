"""`lora`: low-rank adaptation W + ΔW with ΔW = down · up of rank r (Hu et al. 2021; Zeng & Lee, ICLR 2024).

Layer l computes  y = h W_l + b_l + s · (h · down_l) · up_l,  down_l (E, in, R), up_l (E, R, out), s = α/r
(α = None gives s = 1, the LoRA-expressivity paper's convention). `up` starts at zero so the adapted model
equals the base at step 0; `down` ~ N(0, init_std²) (the paper's std = 0.25). A member of rank r in a pack
padded to R uses the first r columns (rank mask): masked columns see zero gradient, so it is exactly a
rank-r LoRA. `tune_bias` adds a trainable bias delta per adapted layer ("bias tuned" in the paper's runs).

On module-based bases (ftcore's sequence models, `hf_causal_lm`) the adapted layers are named by `targets`
(peft's `target_modules` patterns: `attn.qkv`, `mlp.fc` / `c_attn` / `q_proj`, ...) and wrapped as peft does
(adapters/lora_modules.py), with peft's `dropout` on the low-rank path and `init: kaiming` for peft's lora_A init.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ftcore.adapters.base import Adapter, capacity_mask, pad_stack
from ftcore.adapters.delta import SEQUENCE_MODELS
from ftcore.adapters.lora_modules import init_down, inject, matches, merge, site_names
from ftcore.fields import check
from ftcore.registry import ADAPTERS, MODELS
from ftcore.tokenizers import BACKBONE_MODELS, HF_MODELS, VLM_MODELS
from ftkernels.lora_linear import grouped_lora_linear


@dataclass
class LoraConfig:
    name: str = "lora"
    rank: int = 4
    alpha: float | None = None
    init_std: float = 0.25
    layers: list[int] = field(default_factory=list)   # mlp: layer indices; empty = every layer
    tune_bias: bool = False
    targets: list[str] = field(default_factory=list)  # module-based bases: peft-style module-name patterns
    dropout: float = 0.0                                # peft's lora_dropout on the low-rank path's input
    init: str = "normal"                                # down ~ normal N(0, init_std²) | kaiming (peft's lora_A)

    per_member = ("rank",)

    def __post_init__(self):
        check(self.init in INITS, "adapter.init", f"one of {', '.join(INITS)}", self.init)
        check(0 <= self.dropout < 1, "adapter.dropout", "in [0, 1)", self.dropout)
        check(all(isinstance(t, str) and t for t in self.targets), "adapter.targets", "module-name patterns",
              self.targets)
        check(self.rank >= 0, "adapter.rank", ">= 0", self.rank)
        check(self.alpha is None or self.alpha > 0, "adapter.alpha", "> 0 or null", self.alpha)
        check(self.init_std >= 0, "adapter.init_std", ">= 0", self.init_std)
        check(all(l >= 0 for l in self.layers), "adapter.layers", "layer indices >= 0", self.layers)
        check(len(set(self.layers)) == len(self.layers), "adapter.layers", "distinct layer indices", self.layers)


INITS = ("normal", "kaiming")
DEFAULT_TARGETS = {"transformer": ["attn.qkv"], "looped_transformer": ["attn.qkv"], "hybrid": ["qkv"],
                   "mambaformer": ["qkv"], "mamba": ["in_proj"]}


def targets_of(cfg: LoraConfig, model_cfg) -> list[str]:
    """`adapter.targets`, or the model's default (attention's qkv, Mamba's in_proj) when empty."""
    return list(cfg.targets) or DEFAULT_TARGETS.get(model_cfg.name, [])


@ADAPTERS.register("lora")
class LoRA(Adapter):
    Config = LoraConfig
    per_member = LoraConfig.per_member
    capacity_field = "rank"

    models = ("mlp",) + SEQUENCE_MODELS + HF_MODELS + VLM_MODELS + BACKBONE_MODELS

    @staticmethod
    def check_compatible(cfg, model_cfg, io_dims):
        if model_cfg.name == "mlp":
            check(all(l < model_cfg.depth for l in cfg.layers), "adapter.layers",
                  f"indices < model.depth={model_cfg.depth}", cfg.layers)
            check(cfg.rank <= model_cfg.width, "adapter.rank", f"<= model.width={model_cfg.width}", cfg.rank)
            check(not cfg.targets, "adapter.targets", "empty on model mlp (it adapts adapter.layers)", cfg.targets)
            check(cfg.dropout == 0, "adapter.dropout", "0 on model mlp", cfg.dropout)
            return
        check(not cfg.layers and not cfg.tune_bias, "adapter.layers/tune_bias",
              f"unset on model {model_cfg.name} (it adapts the modules named by adapter.targets)", cfg.layers)
        if getattr(MODELS.get_entry(model_cfg.name), "HF_ATTR", ""):      # any Hugging Face model: no default
            check(bool(cfg.targets), "adapter.targets", "module-name patterns for an HF model (e.g. [c_attn] for "
                  "GPT-2, [q_proj, v_proj] for Llama)", cfg.targets)
        names = site_names(model_cfg, io_dims)
        for t in targets_of(cfg, model_cfg):
            check(any(matches(n, [t]) for n in names), "adapter.targets",
                  f"patterns matching linear modules of model {model_cfg.name} (e.g. {', '.join(names[:4])}, ...)", t)

    def __init__(self, cfgs, base, in_dim, out_dim, gens):
        super().__init__(cfgs, base, in_dim, out_dim, gens)
        c0 = cfgs[0]
        ranks = [c.rank for c in cfgs]
        R = max(ranks)
        self.ranks = ranks
        scale = [1.0 if c.alpha is None else c.alpha / max(c.rank, 1) for c in cfgs]
        self.register_buffer("scale", torch.tensor(scale))                          # (E,)
        self.register_buffer("rank_of", torch.tensor(ranks, dtype=torch.int32))     # (E,)
        self.register_buffer("mask", capacity_mask(ranks, R).unsqueeze(1))        # (E, 1, R)
        self.modular = not hasattr(base, "linear")
        self.down, self.up = nn.ParameterDict(), nn.ParameterDict()
        if self.modular:     # peft-style wrappers inside the base, factors here (adapters/lora_modules.py)
            self.layers = []
            self.wrapped = inject(self, base, targets_of(c0, base.cfg), ranks, gens, c0.init, c0.init_std,
                                  c0.dropout)
            return
        self.layers = list(c0.layers) or list(range(base.depth))
        self.db = nn.ParameterDict()
        for l in self.layers:
            fi, fo = base.dims[l], base.dims[l + 1]
            downs = [init_down(fi, r, g, c0.init, c0.init_std) for r, g in zip(ranks, gens)]
            self.down[str(l)] = nn.Parameter(pad_stack(downs, (fi, R)))             # (E, in, R)
            self.up[str(l)] = nn.Parameter(torch.zeros(self.E, R, fo))              # (E, R, out)
            if c0.tune_bias:
                self.db[str(l)] = nn.Parameter(torch.zeros(self.E, fo))             # (E, out)

    def linear(self, l, h):
        """h (E, B, in) -> (E, B, out): one fused grouped LoRA linear (ftkernels.lora_linear)."""
        db = self.db[str(l)] if str(l) in self.db else None
        if str(l) not in self.down:
            return self.base.linear(l, h, db=db)
        b = self.base.bias(l)
        b = db if b is None else (b if db is None else b + db)                     # (E, out) or None
        return grouped_lora_linear(h, self.base.weights[l], b, self.down[str(l)], self.up[str(l)],
                                   self.scale, self.rank_of)

    def forward(self, x, **kw):
        """Module-based bases compute the whole adapted model themselves (the wrappers sit inside them);
        keywords (the looped model's train_kwargs) go to the base."""
        return self.base(x, **kw) if self.modular else super().forward(x, **kw)

    def delta_weight(self, l):
        if self.modular:                  # no layer index: wrapped modules merge through merged_base()
            return None
        if str(l) not in self.down:
            return None, None
        dW = torch.bmm(self.down[str(l)] * self.mask, self.up[str(l)]) * self.scale.view(-1, 1, 1)  # (E, in, out)
        return dW, (self.db[str(l)] if str(l) in self.db else None)

    def merged_base(self):
        """The base with member 0's ΔW folded into every wrapped layer (a one-member pack: checkpoints)."""
        if self.modular:
            return merge(self.base, self.wrapped)
        return super().merged_base()

    def n_trainable(self):
        """r_e · Σ (fan_in + fan_out) over the adapted layers (peft's count), plus the tuned biases (and a base's
        own trained parameters: hf_backbone's read-in/read-out)."""
        if self.modular:
            per_rank = sum(w.fan_in + w.fan_out for _, w in self.wrapped)
            own = sum(p[0].numel() for p in self.base.parameters() if p.requires_grad)
            return [r * per_rank + own for r in self.ranks]
        dims = self.base.dims
        per_rank = sum(dims[l] + dims[l + 1] for l in self.layers)
        bias = sum(dims[l + 1] for l in self.layers) if self.cfgs[0].tune_bias else 0
        return [r * per_rank + bias for r in self.ranks]
