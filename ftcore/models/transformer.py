"""`transformer`: the GPT-2 in-context learner of Garg et al. (papers.md §0.1), packed over members.

read_in (in_dim -> n_embd) -> GPT-2 backbone (learned position embedding added to the input embeddings,
n_layer pre-LN blocks, final LayerNorm; dropout 0) -> read_out (n_embd -> out_dim), at every position.
Garg's `TransformerModel` feeds `inputs_embeds = read_in(zs)` to HF `GPT2Model` and reads out every
hidden state; the task picks the x-token positions. Causal: the output at t depends on inputs ≤ t only.

Init (`model.init`, blocks.init_stds): `gpt2` (default) — every weight N(0, 0.02²) except the residual
projections (attn.proj, mlp.proj), 0.02/√(2·n_layer); `pytorch` — every weight U(±1/√fan_in), nn.Linear's
default. Biases 0, LayerNorm (1, 0), wpe N(0, 0.02²) either way. read_in/read_out follow the same rule
(Garg's are `nn.Linear` defaults outside the HF init). At the CPU sweeps' widths (64) the gpt2 init keeps the
model on the initial plateau for thousands of steps; the shipped CPU sweeps use `init: pytorch`
(measured numbers in blocks.init_stds).
Draw order on gens[e]: read_in.weight, wpe, blocks[0..L-1] (see blocks.py), read_out.weight.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ftcore.fields import check
from ftcore.models.blocks import (
    INITS,
    PackedLayerNorm,
    PackedLinear,
    TransformerBlock,
    freeze,
    init_stds,
    member_params,
    normal_,
)
from ftcore.registry import MODELS


@dataclass
class TransformerConfig:
    name: str = "transformer"
    n_embd: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_positions: int = 128
    init: str = "gpt2"         # gpt2 | pytorch (blocks.init_stds)

    per_member = ()

    def __post_init__(self):
        check(self.n_embd >= 1, "model.n_embd", ">= 1", self.n_embd)
        check(self.n_layer >= 1, "model.n_layer", ">= 1", self.n_layer)
        check(self.n_head >= 1, "model.n_head", ">= 1", self.n_head)
        check(self.n_embd % self.n_head == 0, "model.n_embd", f"divisible by model.n_head={self.n_head}",
              self.n_embd)
        check(self.n_positions >= 1, "model.n_positions", ">= 1", self.n_positions)
        check(self.init in INITS, "model.init", f"one of {', '.join(INITS)}", self.init)


class PackedGPT2Backbone(nn.Module):
    """h (E, B, T, C) -> ln_f(blocks(h + wpe[:T])): HF GPT2Model on `inputs_embeds`. Draws: wpe, then blocks."""

    def __init__(self, gens: list[torch.Generator], n_embd: int, n_layer: int, n_head: int, n_positions: int,
                 init: str = "gpt2"):
        super().__init__()
        self.n_positions = n_positions
        self.wpe = nn.Parameter(normal_((n_positions, n_embd), 0.02, gens))       # (E, P, C)
        std, proj_std = init_stds(init, n_layer)
        self.blocks = nn.ModuleList([TransformerBlock(gens, n_embd, n_head, proj_std=proj_std, std=std)
                                     for _ in range(n_layer)])
        self.ln_f = PackedLayerNorm(len(gens), n_embd)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        T = h.shape[2]
        if T > self.n_positions:
            raise ValueError(f"sequence length {T} exceeds model.n_positions={self.n_positions}")
        h = h + self.wpe[:, None, :T]                                                # (E, B, T, C)
        for block in self.blocks:
            h = block(h)
        return self.ln_f(h)


@MODELS.register("transformer")
class PackedTransformer(nn.Module):
    Config = TransformerConfig

    def __init__(self, cfg: TransformerConfig, in_dim: int, out_dim: int, gens: list[torch.Generator]):
        super().__init__()
        self.cfg, self.E = cfg, len(gens)
        std = init_stds(cfg.init, cfg.n_layer)[0]
        self.read_in = PackedLinear(gens, in_dim, cfg.n_embd, init_std=std)
        self.backbone = PackedGPT2Backbone(gens, cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.n_positions, cfg.init)
        self.read_out = PackedLinear(gens, cfg.n_embd, out_dim, init_std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, B, T, in_dim) -> (E, B, T, out_dim)."""
        return self.read_out(self.backbone(self.read_in(x)))

    def freeze(self) -> PackedTransformer:
        return freeze(self)

    def n_params(self) -> int:
        return member_params(self)
