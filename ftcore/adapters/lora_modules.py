"""LoRA on module-based bases: ftcore's `transformer` / `looped_transformer` / `mamba` / `hybrid` and HF causal LMs.

peft's convention (`LoraConfig.target_modules`, `LoraLayer`): every linear map whose dotted module name equals a
pattern of `adapter.targets` or ends with "." + pattern is replaced by a wrapper that holds the frozen layer and the
pack's low-rank factors,

    y[e] = x[e] W + b + s_e · (dropout(x[e]) down[e, :, :r_e]) up[e, :r_e],      s_e = α / r_e (α null: s_e = 1)

with down (E, in, R), up (E, R, out) zero-initialised, so the adapted model equals the base at step 0 (Hu et al. 2021).
Member e of rank r_e in a pack padded to R uses the first r_e columns (the grouped op masks the rest: exactly zero
effect and zero gradient). W is the layer's own weight: (E, in, out) for a packed base trained per member, (1, in,
out) for a shared base (a checkpoint, `model.from`), or an HF layer's (out, in) `nn.Linear` / (in, out) `Conv1D`
weight — one copy for the pack; the E members' rows go through `ftkernels.lora_linear.grouped_lora_linear` (Triton on
CUDA, its reference elsewhere), which runs the base as one GEMM over all members' rows.

Sites: `PackedLinear`, `nn.Linear` and transformers' `Conv1D` modules, plus the raw projections a module declares in
`lora_sites` (Mamba's in_proj, x_proj, dt_proj, out_proj), named `<module>.<attr>`.
"""
from __future__ import annotations

import functools
import importlib
import json
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ftcore.models.blocks import PackedLinear
from ftkernels.lora_linear import grouped_lora_linear


@dataclass
class Site:
    name: str            # dotted name in the base ("backbone.blocks.0.attn.qkv", "lm.transformer.h.0.attn.c_attn")
    kind: str            # packed | linear | conv1d | param
    module: nn.Module    # the layer itself, or (param) the module owning the projection
    attr: str = ""       # param: the attribute name of the projection

    def weight(self) -> torch.Tensor:
        """W as (E or 1, in, out)."""
        if self.kind == "packed":
            return self.module.weight
        if self.kind == "linear":
            return self.module.weight.t()[None]
        if self.kind == "conv1d":
            return self.module.weight[None]
        return getattr(self.module, self.attr)

    def bias(self) -> torch.Tensor | None:
        """b as (E or 1, out), or None."""
        b = None if self.kind == "param" else self.module.bias
        return b if b is None or self.kind == "packed" else b[None]


def sites(base: nn.Module) -> list[Site]:
    """Every linear map of `base` an adapter can wrap, in module order."""
    out = []
    for name, mod in base.named_modules():
        kind = ("packed" if isinstance(mod, PackedLinear) else "linear" if isinstance(mod, nn.Linear)
                else "conv1d" if type(mod).__name__ == "Conv1D" else None)
        if kind is not None:
            out.append(Site(name, kind, mod))
        for attr in getattr(mod, "lora_sites", ()):
            out.append(Site(f"{name}.{attr}" if name else attr, "param", mod, attr))
    return out


def matches(name: str, patterns) -> bool:
    """peft's list rule: the dotted name equals a pattern or ends with "." + pattern."""
    return any(name == p or name.endswith("." + p) for p in patterns)


def site_names(model_cfg, io_dims: tuple[int, int]) -> tuple[str, ...]:
    """The names of the wrappable sites of the model a config builds, without its weights (config checks)."""
    return _site_names(json.dumps(vars(model_cfg), sort_keys=True, default=str), model_cfg.name, tuple(io_dims))


@functools.lru_cache(maxsize=64)
def _site_names(cfg_json: str, name: str, io_dims: tuple[int, int]) -> tuple[str, ...]:
    from ftcore.registry import MODELS
    cls = MODELS.get_entry(name)
    if getattr(cls, "HF_ATTR", ""):     # the same sites() the wrappers use, on the structure alone (ftcore.models.*)
        meta_model = importlib.import_module(cls.__module__).meta_model
        cfg = json.loads(cfg_json)
        return tuple(f"{cls.HF_ATTR}.{s.name}" for s in sites(meta_model(cfg["path"], bool(cfg["download"]))))
    from ftcore.models.mlp import build_model
    cfg = cls.Config(**json.loads(cfg_json))
    return tuple(s.name for s in sites(build_model(cfg, io_dims[0], io_dims[1], [torch.Generator()])))


class LoraLinear(nn.Module):
    """The wrapper put in place of one site (peft's `LoraLayer`): the frozen layer, computing through the grouped
    op with the pack's factors. The factors, scales and ranks are the owning adapter's (`adapter.down[key]`,
    `adapter.up[key]`, `adapter.scale`, `adapter.rank_of`), so the trainable parameters are the adapter's own
    and the base holds only frozen ones; they are looked up at call time, so `.to(device)` never leaves a stale
    copy here."""

    def __init__(self, site: Site, adapter: nn.Module, key: str, dropout: float):
        super().__init__()
        W = site.weight()
        self.fan_in, self.fan_out = W.shape[1], W.shape[2]
        self.kind, self.attr, self.key, self.p_drop = site.kind, site.attr, key, dropout
        object.__setattr__(self, "_adapter", adapter)          # not a submodule: the adapter owns the base
        if site.kind == "param":
            object.__setattr__(self, "_owner", site.module)    # the owner holds this wrapper in `adapted`
        else:
            self.base_layer = site.module

    def site(self) -> Site:
        return Site("", self.kind, self._owner if self.kind == "param" else self.base_layer, self.attr)

    def factors(self) -> tuple[torch.Tensor, ...]:
        """down (E, in, R), up (E, R, out), scale (E,), rank_of (E,)."""
        a = self._adapter
        return a.down[self.key], a.up[self.key], a.scale, a.rank_of

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, *, in) — or (E·B, T, in) inside an HF model, members major — -> same leading shape, out."""
        down, up, scale, rank_of = self.factors()
        lead = x.shape[:-1]
        h = x.reshape(down.shape[0], -1, self.fan_in)                                     # (E, M, in)
        s = self.site()
        W, b = s.weight(), s.bias()
        if self.p_drop > 0 and self._adapter.training:   # peft: dropout(x) on the low-rank path only (the
            # adapter's mode decides: a frozen HF base keeps its own modules, wrappers included, in eval)
            live = (torch.arange(down.shape[2], device=h.device) < rank_of[:, None]).to(h.dtype)   # (E, R)
            y = grouped_lora_linear(h, W, b, torch.zeros_like(down), up, scale, rank_of)      # the base alone
            z = torch.bmm(F.dropout(h, self.p_drop, True), down * live[:, None, :])         # (E, M, R)
            y = y + scale.to(h.dtype)[:, None, None] * torch.bmm(z, up * live[:, :, None])
        else:
            y = grouped_lora_linear(h, W, b, down, up, scale, rank_of)
        return y.reshape(*lead, self.fan_out)

    @torch.no_grad()
    def delta(self) -> torch.Tensor:
        """ΔW (E, in, out) = s_e · down[e, :, :r_e] up[e, :r_e]."""
        down, up, scale, rank_of = self.factors()
        live = (torch.arange(down.shape[2], device=down.device) < rank_of[:, None]).to(down.dtype)
        return torch.bmm(down * live[:, None, :], up) * scale.to(down.dtype)[:, None, None]


def init_down(fan_in: int, rank: int, gen: torch.Generator, init: str, std: float) -> torch.Tensor:
    """down (fan_in, rank): `normal` N(0, std²) (the LoRA-expressivity paper's 0.25), or `kaiming` — peft's default
    kaiming_uniform(a=√5) on lora_A, i.e. U(±1/√fan_in)."""
    if init == "kaiming":
        return (torch.rand(fan_in, rank, generator=gen) * 2 - 1) / math.sqrt(fan_in)
    return torch.randn(fan_in, rank, generator=gen) * std


def key_of(site_name: str) -> str:
    """ParameterDict keys cannot contain dots."""
    return site_name.replace(".", "__")


def inject(adapter: nn.Module, base: nn.Module, targets, ranks: list[int], gens: list[torch.Generator], init: str,
           std: float, dropout: float) -> list[tuple[str, LoraLinear]]:
    """Replace every site of `base` matching `targets` by a LoraLinear whose factors are registered on `adapter`
    (`adapter.down`, `adapter.up`: ParameterDicts keyed by `key_of(site name)`); -> [(site name, wrapper)].
    Draws: for each matched site in module order, member e's down (fan_in, r_e) from gens[e]; up starts at 0."""
    from ftcore.adapters.base import pad_stack
    R, E = max(ranks), len(ranks)
    chosen = [s for s in sites(base) if matches(s.name, targets)]
    if not chosen:
        raise ValueError(f"adapter.targets: {list(targets)} match no linear module of the base")
    out = []
    for s in chosen:
        fan_in, fan_out = s.weight().shape[1:]
        k = key_of(s.name)
        adapter.down[k] = nn.Parameter(pad_stack([init_down(fan_in, r, g, init, std) for r, g in zip(ranks, gens)],
                                                 (fan_in, R)))                             # (E, in, R)
        adapter.up[k] = nn.Parameter(torch.zeros(E, R, fan_out))                          # (E, R, out)
        wrapper = LoraLinear(s, adapter, k, dropout)
        if s.kind == "param":
            s.module.adapted[s.attr] = wrapper
        else:
            parent, _, child = s.name.rpartition(".")
            setattr(base.get_submodule(parent) if parent else base, child, wrapper)
        out.append((s.name, wrapper))
    return out


@torch.no_grad()
def merge(base: nn.Module, wrapped: list[tuple[str, LoraLinear]]) -> nn.Module:
    """Fold member 0's ΔW into each wrapped layer's weight and put the plain layers back (one-member packs)."""
    for name, w in wrapped:
        dW = w.delta()[0]                                                                  # (in, out)
        s = w.site()
        if s.kind == "packed":
            s.module.weight.add_(dW.to(s.module.weight))
        elif s.kind == "linear":
            s.module.weight.add_(dW.t().to(s.module.weight))
        elif s.kind == "conv1d":
            s.module.weight.add_(dW.to(s.module.weight))
        else:
            getattr(s.module, s.attr).add_(dW.to(getattr(s.module, s.attr)))
        if s.kind == "param":
            del s.module.adapted[s.attr]
        else:
            parent, _, child = name.rpartition(".")
            setattr(base.get_submodule(parent) if parent else base, child, s.module)
    return base
