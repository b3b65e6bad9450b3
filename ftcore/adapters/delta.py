"""Baselines that tune base weights directly, as zero-initialised additive deltas (so adapted == base at 0).

* `full`: every weight and bias (full fine-tuning).
* `last_layers`: the last `n_layers` layers fully ("final layers tuning", `method flt` in the LoRA paper's code).
* `bias_only`: every bias only (BitFit-style; the rank-0 reference of the LoRA paper's runs).
Layer l computes h (W_l + ΔW_l) + (b_l + Δb_l); `delta_weight(l)` returns (ΔW_l, Δb_l).

Module-based bases (ftcore's sequence models, `hf_causal_lm`) have no per-layer hook: each tuned parameter p gets
a zero delta Δ and the forward is `torch.func.functional_call(base, {name: p + Δ})` — the same function and
gradients as training p itself (weight decay pulls Δ, not p, to zero). Which parameters are tuned: all (`full`),
those named `*bias` (`bias_only`), or those of the last `n_layers` blocks of the base's block list and every
parameter after them — final norm, read-out / LM head (`last_layers`). An HF base has no member axis (one copy per
pack), so its Δ has a member axis of 1 and these adapters train one member per pack there (`one_member_per_pack`);
LoRA is the adapter that packs many members over one HF base.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ftcore.adapters.base import Adapter
from ftcore.fields import check
from ftcore.registry import ADAPTERS, MODELS
from ftcore.tokenizers import HF_MODELS, is_hf

SEQUENCE_MODELS = ("transformer", "looped_transformer", "mamba", "hybrid", "mambaformer")


class DeltaAdapter(Adapter):
    """Trainable zero deltas on the weights of `weight_layers()` and the biases of `bias_layers()`."""

    def weight_layers(self) -> list[int]:
        raise NotImplementedError

    def bias_layers(self) -> list[int]:
        return self.weight_layers()

    models = ("mlp",) + SEQUENCE_MODELS + HF_MODELS

    @classmethod
    def one_member_per_pack(cls, model_cfg) -> bool:
        """A base without a member axis (`member_axis = False`: HF) cannot hold E members' own weights."""
        return not getattr(MODELS.get_entry(model_cfg.name), "member_axis", True)

    def tuned(self, base: nn.Module) -> list[tuple[str, torch.Tensor]]:
        """Module-based bases: the (name, parameter) pairs this adapter tunes."""
        raise NotImplementedError

    def __init__(self, cfgs, base, in_dim, out_dim, gens):
        self.generic = not hasattr(base, "linear")
        if self.generic:
            Adapter.__init__(self, cfgs, base, in_dim, out_dim, gens)
            self.member_axis = getattr(base, "member_axis", True)
            tuned = self.tuned(base)                                # chosen once: forward only looks them up
            self.tuned_names = [n for n, _ in tuned]
            self.deltas = nn.ParameterDict({                        # (E, ...) each; HF: (1, *p.shape)
                _key(n): nn.Parameter(_zeros(self.E, p if self.member_axis else p.unsqueeze(0))) for n, p in tuned})
            return
        super().__init__(cfgs, base, in_dim, out_dim, gens)
        self.dW, self.db = nn.ParameterDict(), nn.ParameterDict()
        # (E, ...) also over a shared base (leading dim 1): one delta per member
        for l in self.weight_layers():
            self.dW[str(l)] = nn.Parameter(_zeros(self.E, base.weights[l]))          # (E, in, out)
        for l in self.bias_layers():
            if base.biases is not None:
                self.db[str(l)] = nn.Parameter(_zeros(self.E, base.biases[l]))       # (E, out)

    def linear(self, l, h):
        return self.base.linear(l, h, dW=self.dW[str(l)] if str(l) in self.dW else None,
                                db=self.db[str(l)] if str(l) in self.db else None)

    def _adapted(self, base: nn.Module) -> dict[str, torch.Tensor]:
        """{name: p + Δ} for the tuned parameters of `base` (this adapter's, or a copy of it; Δ[0] on a base
        without a member axis)."""
        params = dict(base.named_parameters())
        return {n: params[n] + (self.deltas[_key(n)] if self.member_axis else self.deltas[_key(n)][0])
                for n in self.tuned_names}

    def forward(self, x, **kw):
        """kw (e.g. the looped model's n_loops / keep_last, from `train_kwargs`) go to the base's forward."""
        if not self.generic:
            return super().forward(x, **kw)
        return torch.func.functional_call(self.base, self._adapted(self.base), (x,), kw)

    def delta_weight(self, l):
        if self.generic:
            return None
        return (self.dW[str(l)] if str(l) in self.dW else None, self.db[str(l)] if str(l) in self.db else None)

    @torch.no_grad()
    def merged_base(self):
        """Module-based bases: every tuned parameter p replaced by p + Δ (a shared base's (1, ...) p broadcasts)."""
        if not self.generic:
            return super().merged_base()
        base = copy.deepcopy(self.base)
        for name, value in self._adapted(base).items():
            owner, _, leaf = name.rpartition(".")
            mod = base.get_submodule(owner) if owner else base
            setattr(mod, leaf, nn.Parameter(value.detach(), requires_grad=False))
        return base

    def n_trainable(self):
        n = sum(p[0].numel() for p in self.parameters() if p.requires_grad)
        return [n] * self.E


@dataclass
class FullConfig:
    name: str = "full"
    per_member = ()


@ADAPTERS.register("full")
class Full(DeltaAdapter):
    """Full fine-tuning. On `mlp` a per-layer delta (mergeable); on module-based bases a delta on every parameter
    (module docstring) — so an untrained base trained with `full` is a model trained from its initialisation, as
    the in-context-learning papers do (papers.md §0.1, §4–§5)."""
    Config = FullConfig
    models = DeltaAdapter.models + ("embeddings",)

    def tuned(self, base):
        return list(base.named_parameters())

    def weight_layers(self):
        return list(range(self.base.depth))


def _key(name: str) -> str:
    """ParameterDict keys cannot contain dots."""
    return name.replace(".", "__")


def _zeros(E: int, p: torch.Tensor) -> torch.Tensor:
    """A zero delta (E, *p.shape[1:]) for a base parameter p (E, ...) or (1, ...) (shared base)."""
    return torch.zeros(E, *p.shape[1:], dtype=p.dtype)


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
        depth, field = n_blocks(model_cfg)
        check(cfg.n_layers <= depth, "adapter.n_layers", f"<= {field}={depth}", cfg.n_layers)

    def weight_layers(self):
        L = self.base.depth
        return list(range(L - self.cfgs[0].n_layers, L))

    def tuned(self, base):
        """The parameters of the last n_layers entries of the base's block list and every parameter registered
        after them (final norm, read-out / LM head)."""
        blocks = max((m for m in base.modules() if isinstance(m, nn.ModuleList)),
                     key=lambda m: sum(p.numel() for p in m.parameters()))
        first = {id(p) for p in blocks[len(blocks) - self.cfgs[0].n_layers].parameters()}
        named = list(base.named_parameters())
        start = next(i for i, (_, p) in enumerate(named) if id(p) in first)
        return named[start:]


def n_blocks(model_cfg) -> tuple[int, str]:
    """(layers of the model, the config field that says so): mlp depth, n_layer, or an HF config's layer count."""
    if model_cfg.name == "mlp":
        return model_cfg.depth, "model.depth"
    if is_hf(model_cfg):
        from ftcore.models.hf_causal_lm import hf_config
        return int(hf_config(model_cfg.path, model_cfg.download).num_hidden_layers), "the HF model's layer count"
    return model_cfg.n_layer, "model.n_layer"


@dataclass
class BiasOnlyConfig:
    name: str = "bias_only"
    per_member = ()


@ADAPTERS.register("bias_only")
class BiasOnly(DeltaAdapter):
    Config = BiasOnlyConfig

    @staticmethod
    def check_compatible(cfg, model_cfg, io_dims):
        check(getattr(model_cfg, "bias", True), "adapter.name", "an adapter other than bias_only when model.bias is "
              "false", cfg.name)
        if is_hf(model_cfg):
            from ftcore.models.hf_causal_lm import has_biases
            check(has_biases(model_cfg.path, model_cfg.download), "adapter.name",
                  "an adapter other than bias_only for an HF model without biases (e.g. Llama)", cfg.name)

    def tuned(self, base):
        """Every bias (linear layers and norms), BitFit's choice; a bias-free HF model (Llama) is refused."""
        out = [(n, p) for n, p in base.named_parameters() if n.rpartition(".")[2] == "bias"]
        if not out:
            raise ValueError(f"adapter.name: bias_only needs a base with biases (model {self.base.cfg.name} has none)")
        return out

    def weight_layers(self):
        return []

    def bias_layers(self):
        return list(range(self.base.depth))
