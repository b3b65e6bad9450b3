"""`embeddings`: free embedding pairs — the "model" of the contrastive paper's synthetic problem
(Cho et al., TMLR 2024; papers.md §3(a); reference `synthetic.py get_dataset`, `get_embeddings`).

Parameters: two tables U, V ∈ R^{N×d} per member, drawn N(0, I) (the optimisation variables are the
unnormalised vectors). The forward maps one-hot sample codes x (E, ..., N) to the normalised pair

    u = xU / ‖xU‖,   v = xV / ‖xV‖      ->   (E, ..., 2, d)   ([..., 0, :] = u, [..., 1, :] = v)

so the embeddings live on the unit sphere in every forward pass (the reference normalises the same way),
and a batch's gradient reaches only the rows it selects. Trained with the adapter `full` (a zero delta on
each table, the same function and gradients as training U, V themselves).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ftcore.models.blocks import freeze
from ftcore.registry import MODELS


@dataclass
class EmbeddingsConfig:
    name: str = "embeddings"
    per_member = ()


@MODELS.register("embeddings")
class PackedEmbeddings(nn.Module):
    Config = EmbeddingsConfig

    def __init__(self, cfg: EmbeddingsConfig, in_dim: int, out_dim: int, gens: list[torch.Generator]):
        """in_dim: N samples, out_dim: d. Member e's tables come from its own generator (U first, then V)."""
        super().__init__()
        self.cfg, self.E, self.n, self.d = cfg, len(gens), in_dim, out_dim
        tables = [(torch.randn(in_dim, out_dim, generator=g), torch.randn(in_dim, out_dim, generator=g)) for g in gens]
        self.u = nn.Parameter(torch.stack([u for u, _ in tables]))                # (E, N, d)
        self.v = nn.Parameter(torch.stack([v for _, v in tables]))                # (E, N, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, ..., N) one-hot codes -> (E, ..., 2, d) unit vectors."""
        flat = x.reshape(x.shape[0], -1, self.n)                                  # (E, R, N)
        pair = torch.stack([torch.bmm(flat, self.u), torch.bmm(flat, self.v)], -2)   # (E, R, 2, d)
        pair = pair / pair.norm(dim=-1, keepdim=True)
        return pair.reshape(*x.shape[:-1], 2, self.d)

    def n_params(self) -> int:
        """Parameters of one member: 2·N·d."""
        return self.u[0].numel() + self.v[0].numel()

    def freeze(self) -> PackedEmbeddings:
        return freeze(self)
