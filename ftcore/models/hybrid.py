"""`hybrid` and `mambaformer`: attention and Mamba layers interleaved, with a leading member axis (papers.md §5).

Both follow krafton-ai/mambaformer-icl (`src/models.py` MambaMixerModel, `mamba_ssm/models/mixer_seq_simple.py`
MixerModel): every layer is a pre-norm residual block x + mixer(LN(x)) whose mixer is either causal
self-attention or a Mamba mixer — **no MLP blocks** in either. Layer i of n_layer (0-based) is attention when
i is even and Mamba when i is odd ("alternating attention (even layers) and Mamba blocks", papers.md l. 313-314);
each attention or Mamba block counts as one layer (l. 315-316).

* `hybrid` (`mixed_attn: standard`): learned positional embedding added after the read-in
  (wpe (E, n_positions, C) ~ N(0, 1), nn.Embedding's default, as the reference builds it outside the
  backbone's re-init; `pos_std` rescales it — 0.02, GPT-2's wpe std, is what retrieves at small width, see
  sweeps/mamba_icl.yaml), then A M A M … (n_layer layers; n_layer ≥ 3 puts an attention layer after a Mamba
  layer, which MQAR's bind-then-look-up needs).
* `mambaformer` (`mixed_attn: mambaformer`): an extra Mamba layer first in place of positional encoding,
  then A M A M … (n_layer layers, so n_layer + 1 blocks in all), no positional encoding (papers.md l. 314-315).

Init: Mamba mixers as ftcore.models.mamba (out_proj / √n_layer); attention as ftcore.models.blocks
(GPT-2 N(0, 0.02²) for qkv and proj, zero biases; proj not depth-rescaled, as the reference's c_proj is
not) — the reference uses nn.Linear's default U(±1/√C) with zeroed biases there; we keep the project's
GPT-2 attention init. Draws per member follow
construction order: read_in, (wpe,) layers in order, read_out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ftcore.fields import check
from ftcore.models.blocks import CausalSelfAttention, PackedLayerNorm
from ftcore.models.mamba import (
    MambaConfig,
    MambaLayer,
    PackedSequenceModel,
    check_mamba_fields,
)
from ftcore.registry import MODELS


class AttentionLayer(nn.Module):
    """Pre-norm residual attention layer without MLP (mamba_ssm `Block` with an attention mixer)."""

    def __init__(self, gens: list[torch.Generator], C: int, n_head: int, proj_std: float = 0.02):
        super().__init__()
        self.norm = PackedLayerNorm(len(gens), C)
        self.mixer = CausalSelfAttention(gens, C, n_head, proj_std=proj_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, B, T, C) -> (E, B, T, C)."""
        return x + self.mixer(self.norm(x))


def interleaved(cfg, gens: list[torch.Generator]) -> list[nn.Module]:
    """Layer i is attention for even i, Mamba for odd i (MixerModel: `use_attn_block = i % 2 == 0`)."""
    return [AttentionLayer(gens, cfg.n_embd, cfg.n_head) if i % 2 == 0 else
            MambaLayer(gens, cfg.n_embd, cfg.d_state, cfg.d_conv, cfg.expand, n_layer=cfg.n_layer)
            for i in range(cfg.n_layer)]


def check_hybrid_fields(cfg) -> None:
    check_mamba_fields(cfg)
    check(cfg.n_head >= 1 and cfg.n_embd % cfg.n_head == 0, "model.n_head", f"a divisor of n_embd={cfg.n_embd}",
          cfg.n_head)


@dataclass
class MambaFormerConfig(MambaConfig):
    """Mamba's fields plus attention heads."""
    name: str = "mambaformer"
    n_head: int = 8

    def __post_init__(self):
        check_hybrid_fields(self)


@dataclass
class HybridConfig(MambaFormerConfig):
    """MambaFormer's fields plus learned positions."""
    name: str = "hybrid"
    n_positions: int = 256      # learned positions: the longest sequence the model accepts
    pos_std: float = 1.0        # wpe ~ N(0, pos_std²): 1 = nn.Embedding's default (the reference); 0.02 = GPT-2's

    def __post_init__(self):
        check_hybrid_fields(self)
        check(self.n_positions >= 1, "model.n_positions", ">= 1", self.n_positions)
        check(self.pos_std >= 0, "model.pos_std", ">= 0", self.pos_std)


@MODELS.register("hybrid")
class PackedHybrid(PackedSequenceModel):
    """read_in + wpe → [Attn, Mamba] × n_layer/2 (attention at even i) → LN → read_out."""
    Config = HybridConfig

    def __init__(self, cfg: HybridConfig, in_dim: int, out_dim: int, gens: list[torch.Generator]):
        super().__init__()
        self.cfg, self.E = cfg, len(gens)
        self._head(in_dim, gens)
        self.wpe = nn.Parameter(torch.stack([torch.randn(cfg.n_positions, cfg.n_embd, generator=g) * cfg.pos_std
                                             for g in gens]))                               # (E, n_positions, C)
        self.layers = nn.ModuleList(interleaved(cfg, gens))
        self._tail(out_dim, gens)

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        T = h.shape[2]
        if T > self.cfg.n_positions:
            raise ValueError(f"sequence length {T} exceeds model.n_positions={self.cfg.n_positions}")
        return h + self.wpe[:, None, :T]                                                     # (E, 1, T, C)


@MODELS.register("mambaformer")
class PackedMambaFormer(PackedSequenceModel):
    """read_in → Mamba (in place of positions) → [Attn, Mamba] × n_layer/2 → LN → read_out; no positions."""
    Config = MambaFormerConfig

    def __init__(self, cfg: MambaFormerConfig, in_dim: int, out_dim: int, gens: list[torch.Generator]):
        super().__init__()
        self.cfg, self.E = cfg, len(gens)
        self._head(in_dim, gens)
        first = MambaLayer(gens, cfg.n_embd, cfg.d_state, cfg.d_conv, cfg.expand, n_layer=cfg.n_layer)
        self.layers = nn.ModuleList([first, *interleaved(cfg, gens)])
        self._tail(out_dim, gens)
