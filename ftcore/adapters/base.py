"""The adapter interface (peft `LoraLayer`, litgpt `LoRALinear`): wrap a frozen base, add a delta, start at zero.

An adapter module *is* the adapted model: `adapter(x)` = base with each layer's affine map replaced by
`self.linear(l, h)`, followed by `self.output(x, y)`. At step 0 it equals the base exactly. Parameters
carry the member axis E; heterogeneous capacities (rank, width) inside a pack are masks over a padded
maximum, so masked columns get exactly zero gradient and member e computes exactly its own adapter.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class Adapter(nn.Module):
    Config = None
    per_member: tuple = ()
    capacity_field: str | None = None      # the config field a capacity search may vary
    touches_base: bool = True              # False: output(x, f(x)) only — the frozen f(x) can be cached
    models: tuple = ("mlp",)               # the models this adapter knows how to adapt
    mergeable: bool = True                 # False: no `merged_base` (its delta is not a change of base weights)

    @classmethod
    def one_member_per_pack(cls, model_cfg) -> bool:
        """True where this adapter cannot pack members over `model_cfg`'s base (full fine-tuning of a shared HF
        base: its members' weights would be E copies of the base)."""
        return False

    def __init__(self, cfgs: list, base: nn.Module, in_dim: int, out_dim: int, gens: list[torch.Generator]):
        super().__init__()
        self.cfgs, self.base, self.E = cfgs, base.freeze(), len(cfgs)
        self.in_dim, self.out_dim = in_dim, out_dim
        self._base_cache: tuple | None = None      # (x, f(x)) for the last batch, when not touches_base

    @staticmethod
    def check_compatible(cfg, model_cfg, io_dims) -> None:
        """Raise ValueError for combinations no member could run (e.g. rank > width)."""

    @classmethod
    def size(cls, cfg) -> int:
        """Capacity used to bucket members into packs with little padding (1 when fixed)."""
        return int(getattr(cfg, cls.capacity_field)) if cls.capacity_field else 1

    def linear(self, l: int, h: torch.Tensor) -> torch.Tensor:
        return self.base.linear(l, h)

    def output(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        """x (E, B, in) -> (E, B, out). Bases with per-layer hooks take no training keywords."""
        if kw:
            raise TypeError(f"adapter '{self.registry_name}' passes no keywords to its base (got {sorted(kw)})")
        if self.touches_base:
            return self.output(x, self.base(x, linear=self.linear))
        return self.output(x, self.frozen_output(x))

    @torch.no_grad()
    def frozen_output(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) of the frozen base, computed once per batch tensor: a full-batch task (FTC) hands the same x
        every step, so the base runs once per pack instead of once per step (DESIGN.md §3). Keyed on the
        tensor object, which the cache keeps alive; `.to()` drops the cache."""
        if self._base_cache is None or self._base_cache[0] is not x:
            self._base_cache = (x, self.base(x))
        return self._base_cache[1]

    def _apply(self, fn, *args, **kwargs):
        self._base_cache = None
        return super()._apply(fn, *args, **kwargs)

    def n_trainable(self) -> list[int]:
        """Trainable parameters per member, counting only unmasked entries."""
        raise NotImplementedError

    def delta_weight(self, l: int):
        """(dW (E, in, out) or None, db (E, out) or None) for mergeable adapters; None if not mergeable."""
        return None

    @torch.no_grad()
    def merged_base(self) -> nn.Module:
        """The frozen base with the trained deltas folded in, W_l + ΔW_l and b_l + Δb_l per layer (LoRA's merge,
        Hu et al. 2021 §4.1): a model whose forward is this adapted model's, with no adapter. For a one-member
        pack (E = 1) that is a base with leading member dim 1, which a later pack shares (ftcore.checkpoint).
        This generic path serves adapters with per-layer `delta_weight` on `mlp`; ValueError names an adapter
        whose change is not one of base weights (e.g. additive_relu's extra network)."""
        deltas = [self.delta_weight(l) for l in range(getattr(self.base, "depth", 0))] if self.mergeable else []
        if not deltas or any(d is None for d in deltas) or not hasattr(self.base, "weights"):
            raise ValueError(f"adapter.name: '{self.registry_name}' cannot be merged into its base (its trained "
                             "change is not a change of base weights), so it cannot be a later sweep's base")
        base = copy.deepcopy(self.base)
        for l, (dW, db) in enumerate(deltas):
            if dW is not None:
                base.weights[l] = nn.Parameter(base.weights[l] + dW.detach(), requires_grad=False)   # (E, in, out)
            if db is not None:
                if base.biases is None:       # a bias delta on a bias-free base: the merged base gets biases
                    base.biases = nn.ParameterList([nn.Parameter(torch.zeros_like(base.weights[i][:, 0]),
                                                                 requires_grad=False) for i in range(base.depth)])
                base.biases[l] = nn.Parameter(base.biases[l] + db.detach(), requires_grad=False)     # (E, out)
        return base.freeze()


def capacity_mask(sizes: list[int], max_size: int) -> torch.Tensor:
    """(E, max_size) float mask with ones in the first sizes[e] columns."""
    idx = torch.arange(max_size)
    return (idx[None, :] < torch.tensor(sizes)[:, None]).float()


def pad_stack(blocks: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad each member's own-size block to `shape` (top-left aligned) and stack -> (E, *shape)."""
    out = torch.zeros(len(blocks), *shape)
    for e, blk in enumerate(blocks):
        out[(e,) + tuple(slice(0, s) for s in blk.shape)] = blk
    return out


def build_adapter(cfgs: list, base: nn.Module, in_dim: int, out_dim: int, gens) -> Adapter:
    from ftcore.registry import ADAPTERS
    return ADAPTERS.get_entry(cfgs[0].name)(cfgs, base, in_dim, out_dim, gens)
