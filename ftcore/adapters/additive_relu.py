"""`additive_relu`: f + g with g a small ReLU network of m neurons in all (Sohn, Kwon, An, Lee, UAI 2024).

Fine-tuning capacity (papers.md §1): the frozen f is kept and an additive ReLU net g is trained so that
f + g fits the relabelled data. `depth: 2` is one hidden layer of m units (g(x) = relu(x W1 + b1) W2 + b2);
`depth: 3` is two hidden layers whose sizes sum to m (⌈m/2⌉ then ⌊m/2⌋ — our reading of "m neurons").
Theory: minimal m = Θ(N) for depth 2 and Θ(√N) for depth 3. The output layer starts at zero, so f + g = f
at step 0. Widths differ across a pack by neuron masks (masked units output 0 and get zero gradient);
each member's weights are drawn at its own width from its own generator, then zero-padded.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ftcore.adapters.base import Adapter, capacity_mask, pad_stack
from ftcore.fields import check
from ftcore.models.mlp import linear_init
from ftcore.registry import ADAPTERS
from ftkernels.packed_mlp import packed_mlp, packed_mlp_vjp


@dataclass
class AdditiveReluConfig:
    name: str = "additive_relu"
    width: int = 16       # m: neurons in all hidden layers together
    depth: int = 2        # layers of g: 2 or 3

    per_member = ("width",)

    def __post_init__(self):
        check(self.depth in (2, 3), "adapter.depth", "2 or 3", self.depth)
        check(self.width >= self.depth - 1, "adapter.width", f">= {self.depth - 1} for depth {self.depth}", self.width)


def hidden_sizes(m: int, depth: int) -> list[int]:
    return [m] if depth == 2 else [(m + 1) // 2, m // 2]


@ADAPTERS.register("additive_relu")
class AdditiveReLU(Adapter):
    Config = AdditiveReluConfig
    per_member = AdditiveReluConfig.per_member
    capacity_field = "width"
    touches_base = False
    mergeable = False         # g is a second network beside f, not a change of f's weights

    def __init__(self, cfgs, base, in_dim, out_dim, gens):
        super().__init__(cfgs, base, in_dim, out_dim, gens)
        depth = cfgs[0].depth
        self.sizes = [hidden_sizes(c.width, depth) for c in cfgs]           # per member [m1(, m2)]
        max_h = [max(s[i] for s in self.sizes) for i in range(depth - 1)]
        self.Ws, self.bs = nn.ParameterList(), nn.ParameterList()
        fan_in = [in_dim] + max_h
        for i in range(depth - 1):
            blocks = [linear_init(([in_dim] + s)[i], s[i], g, True) for s, g in zip(self.sizes, gens)]
            self.Ws.append(nn.Parameter(pad_stack([w for w, _ in blocks], (fan_in[i], max_h[i]))))   # (E, in_i, H_i)
            self.bs.append(nn.Parameter(pad_stack([b for _, b in blocks], (max_h[i],))))           # (E, H_i)
            self.register_buffer(f"mask{i}", capacity_mask([s[i] for s in self.sizes], max_h[i]))        # (E, H_i)
        self.Ws.append(nn.Parameter(torch.zeros(self.E, max_h[-1], out_dim)))                         # (E, H, out)
        self.bs.append(nn.Parameter(torch.zeros(self.E, out_dim)))

    def masks(self) -> list[torch.Tensor]:
        """The hidden layers' capacity masks (E, H_i)."""
        return [getattr(self, f"mask{i}") for i in range(len(self.Ws) - 1)]

    def g(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, B, in) -> g(x) (E, B, out): one fused packed MLP (ftkernels.packed_mlp)."""
        return packed_mlp(x, list(self.Ws), list(self.bs), self.masks())

    def output(self, x, y):
        return y + self.g(x)

    def forward_with_vjp(self, x: torch.Tensor):
        """The forward f(x) + g(x) (E, B, out) without autograd, and `set_grads(d)`, which sets the .grad of g's
        parameters to ∂(Σ d ⊙ output)/∂θ by hand (ftkernels.packed_mlp.mlp_backward): for ftcore.fit's analytic
        step. None when g's Triton kernels serve x (CUDA), under autocast, or when x requires grad."""
        params = list(self.Ws) + list(self.bs)
        made = packed_mlp_vjp(x, list(self.Ws), list(self.bs), self.masks(), residual=self.frozen_output(x))
        if made is None:
            return None
        y, vjp = made

        def set_grads(d: torch.Tensor) -> None:
            dWs, dbs = vjp(d)
            for p, g in zip(params, [*dWs, *dbs]):
                p.grad = g
        return y, set_grads

    def n_trainable(self):
        out = []
        for s in self.sizes:
            dims = [self.in_dim] + s + [self.out_dim]
            out.append(sum(dims[i] * dims[i + 1] + dims[i + 1] for i in range(len(dims) - 1)))
        return out
