"""`mlp`: a ReLU feed-forward network of width D and depth L with a leading member axis.

As in the LoRA paper's code (Zeng & Lee, ICLR 2024; UW-Madison-Lee-Lab/Expressive_Power_of_LoRA
`load_model.py` FNN): every layer is a Linear initialised like `nn.Linear` (U(±1/√fan_in)), bias optional,
and by default the activation follows *every* layer including the last (`last_activation: true`). We
keep that default because the paper's construction threshold ⌈D·L̄/L⌉ and the calibration numbers in
papers.md §2 are for that network; `last_activation: false` gives the usual regression head.

Packed form: layer l holds W[l] (E, fan_in, fan_out) and b[l] (E, fan_out); h_{l+1} = act(h_l @ W[l] + b[l])
for all E members at once (one `baddbmm`). Member e is initialised from its own generator, so its
weights do not depend on which pack it is in.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ftcore.fields import check
from ftcore.registry import MODELS

ACTIVATIONS = ("relu", "identity")


@dataclass
class MLPConfig:
    name: str = "mlp"
    width: int = 16            # D
    depth: int = 2             # L (number of linear layers)
    bias: bool = True
    activation: str = "relu"
    last_activation: bool = True

    per_member = ()

    def __post_init__(self):
        check(self.width >= 1, "model.width", ">= 1", self.width)
        check(self.depth >= 1, "model.depth", ">= 1", self.depth)
        check(self.activation in ACTIVATIONS, "model.activation", f"one of {', '.join(ACTIVATIONS)}", self.activation)


def linear_init(fan_in: int, fan_out: int, gen: torch.Generator, bias: bool):
    """nn.Linear's default init U(±1/√fan_in), drawn from an explicit generator. W: (fan_in, fan_out)."""
    bound = fan_in ** -0.5
    w = (torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * bound
    b = (torch.rand(fan_out, generator=gen) * 2 - 1) * bound if bias else None
    return w, b


@MODELS.register("mlp")
class PackedMLP(nn.Module):
    Config = MLPConfig

    def __init__(self, cfg: MLPConfig, in_dim: int, out_dim: int, gens: list[torch.Generator]):
        super().__init__()
        self.cfg, self.E = cfg, len(gens)
        dims = [in_dim] + [cfg.width] * (cfg.depth - 1) + [out_dim]
        self.dims = dims
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList() if cfg.bias else None
        for l in range(cfg.depth):
            per = [linear_init(dims[l], dims[l + 1], g, cfg.bias) for g in gens]
            self.weights.append(nn.Parameter(torch.stack([w for w, _ in per])))          # (E, in, out)
            if cfg.bias:
                self.biases.append(nn.Parameter(torch.stack([b for _, b in per])))       # (E, out)

    @property
    def depth(self) -> int:
        return self.cfg.depth

    def bias(self, l: int):
        return None if self.biases is None else self.biases[l]

    def act(self, l: int, h: torch.Tensor) -> torch.Tensor:
        last = l == self.cfg.depth - 1
        if self.cfg.activation == "relu" and (not last or self.cfg.last_activation):
            return torch.relu(h)
        return h

    def linear(self, l: int, h: torch.Tensor, dW=None, db=None) -> torch.Tensor:
        """h (E, B, in) -> (E, B, out) with optional additive deltas dW (E, in, out), db (E, out)."""
        W = self.weights[l] if dW is None else self.weights[l] + dW
        b = self.bias(l)
        if db is not None:
            b = db if b is None else b + db
        if W.shape[0] != h.shape[0]:                     # a shared base (W (1, in, out)): one GEMM for all rows
            y = (h.reshape(-1, h.shape[-1]) @ W[0]).reshape(*h.shape[:-1], W.shape[-1])
            return y if b is None else y + b.unsqueeze(1)
        if b is None:
            return torch.bmm(h, W)
        return torch.baddbmm(b.unsqueeze(1), h, W)

    def forward(self, x: torch.Tensor, linear=None) -> torch.Tensor:
        """x (E, B, in) -> (E, B, out). `linear(l, h)` lets an adapter replace each layer's affine map."""
        h = x
        for l in range(self.cfg.depth):
            h = self.act(l, linear(l, h) if linear is not None else self.linear(l, h))
        return h

    def freeze(self) -> PackedMLP:
        for p in self.parameters():
            p.requires_grad_(False)
        return self


def build_model(cfg, in_dim: int, out_dim: int, gens: list[torch.Generator]) -> nn.Module:
    """Config stops here: the module takes flat arguments (torchtune's rule)."""
    return MODELS.get_entry(cfg.name)(cfg, in_dim, out_dim, gens)
