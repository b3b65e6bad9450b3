"""Packed GPT-2 building blocks: every parameter carries a leading member axis E.

The blocks follow nanoGPT / HF GPT-2 (the backbone of Garg et al. and of Yang et al., papers.md §0.1, §4):
pre-LayerNorm, causal multi-head self-attention, GELU MLP of width 4C, dropout 0.

Init contract (DESIGN.md §3): a module draws its tensors member by member, member e only from gens[e], in the
order its docstring states; modules are built in a fixed order by their owner. So the sequence of draws on
gens[e] never depends on the other members, and member e's init equals its init in a pack of one.
Biases and LayerNorm parameters are constants (no draws).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def normal_(E_shape: tuple[int, ...], std: float, gens: list[torch.Generator]) -> torch.Tensor:
    """Stack of per-member N(0, std²) tensors, member e drawn from gens[e]. -> (E, *E_shape)."""
    return torch.stack([torch.randn(*E_shape, generator=g) * std for g in gens])


def uniform_(E_shape: tuple[int, ...], bound: float, gens: list[torch.Generator]) -> torch.Tensor:
    """Stack of per-member U(−bound, bound) tensors, member e drawn from gens[e]. -> (E, *E_shape)."""
    return torch.stack([(torch.rand(*E_shape, generator=g) * 2 - 1) * bound for g in gens])


INITS = ("gpt2", "pytorch")


def init_stds(init: str, n_layer: int) -> tuple[float | None, float | None]:
    """(std of every weight, std of the residual projections) for `model.init`:
    gpt2: N(0, 0.02²) and 0.02/√(2·n_layer) (HF GPT-2 / nanoGPT; Garg et al.);
    pytorch: None = nn.Linear's default U(−1/√fan_in, 1/√fan_in) for every weight, residual ones included.
    Measured (d = 5, K = 11, 4 layers × 64, Adam 1e-3, 1000 steps): gpt2 leaves the model on the initial
    plateau for thousands of steps at this width (nse at k = 10: 0.62 after 3000 steps), pytorch learns
    (0.31 after 1000) — as a plain nn.Module GPT with default init does (0.075 after 2750)."""
    return (0.02, residual_std(n_layer)) if init == "gpt2" else (None, None)


class PackedLinear(nn.Module):
    """y = x @ W[e] + b[e] for every member e. W (E, fan_in, fan_out) ~ N(0, init_std²) (GPT-2 init), or
    with init_std None U(−1/√fan_in, 1/√fan_in) (nn.Linear's default weight); b = 0.

    Draws: W only (one randn — or rand — (fan_in, fan_out) per member).
    """

    def __init__(self, gens: list[torch.Generator], fan_in: int, fan_out: int, bias: bool = True,
                 init_std: float | None = 0.02):
        super().__init__()
        self.E, self.fan_in, self.fan_out = len(gens), fan_in, fan_out
        w = (uniform_((fan_in, fan_out), 1 / math.sqrt(fan_in), gens) if init_std is None
             else normal_((fan_in, fan_out), init_std, gens))
        self.weight = nn.Parameter(w)                                               # (E, in, out)
        self.bias = nn.Parameter(torch.zeros(self.E, fan_out)) if bias else None  # (E, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, *, fan_in) -> (E, *, fan_out): one bmm over the flattened middle dims. A shared base (weight
        (1, in, out), one copy for the pack) folds the members into the rows: one GEMM for all of them."""
        lead = x.shape[:-1]
        h = x.reshape(self.weight.shape[0], -1, self.fan_in)                        # (E or 1, N, in)
        if self.bias is None:
            y = torch.bmm(h, self.weight)
        else:
            y = torch.baddbmm(self.bias.unsqueeze(1), h, self.weight)               # (E, N, out)
        return y.reshape(*lead, self.fan_out)


class PackedLayerNorm(nn.Module):
    """LayerNorm over the last dim with a per-member affine: weight ones, bias zeros (E, C). No draws."""

    def __init__(self, E: int, C: int, eps: float = 1e-5):
        super().__init__()
        self.C, self.eps = C, eps
        self.weight = nn.Parameter(torch.ones(E, C))
        self.bias = nn.Parameter(torch.zeros(E, C))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, *, C) -> (E, *, C)."""
        h = F.layer_norm(x, (self.C,), eps=self.eps)
        view = (self.weight.shape[0],) + (1,) * (x.dim() - 2) + (self.C,)          # E, or 1 for a shared base
        return h * self.weight.view(view) + self.bias.view(view)


class CausalSelfAttention(nn.Module):
    """GPT-2 causal multi-head self-attention, packed.

    qkv = x W_qkv + b (C -> 3C, split q | k | v along the last dim), heads of size C / n_head,
    softmax(q kᵀ / √hd + causal mask) v, then proj (C -> C). `proj_std` is GPT-2's scaled init of the
    residual projection, 0.02/√(2·n_layer) (the owner passes it; default 0.02).
    Draws: qkv.weight, then proj.weight.
    """

    def __init__(self, gens: list[torch.Generator], C: int, n_head: int, proj_std: float | None = 0.02,
                 std: float | None = 0.02):
        super().__init__()
        if C % n_head != 0:
            raise ValueError(f"n_embd ({C}) must be divisible by n_head ({n_head})")
        self.E, self.C, self.n_head = len(gens), C, n_head
        self.qkv = PackedLinear(gens, C, 3 * C, init_std=std)
        self.proj = PackedLinear(gens, C, C, init_std=proj_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, B, T, C) -> (E, B, T, C)."""
        E, B, T, C = x.shape
        hd = C // self.n_head
        q, k, v = self.qkv(x).split(C, dim=-1)                                     # 3 × (E, B, T, C)
        # Members and batch are independent sequences: fold them into one SDPA batch.
        q, k, v = (t.reshape(E * B, T, self.n_head, hd).transpose(1, 2) for t in (q, k, v))  # (E·B, nh, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)               # (E·B, nh, T, hd)
        y = y.transpose(1, 2).reshape(E, B, T, C)
        return self.proj(y)


class PackedMLPBlock(nn.Module):
    """GPT-2 MLP: Linear C -> hidden_mult·C, GELU (tanh approximation, as GPT-2's gelu_new), Linear back to C.

    Draws: fc.weight, then proj.weight (std `proj_std`, GPT-2's scaled residual init).
    """

    def __init__(self, gens: list[torch.Generator], C: int, hidden_mult: int = 4, proj_std: float | None = 0.02,
                 std: float | None = 0.02):
        super().__init__()
        self.fc = PackedLinear(gens, C, hidden_mult * C, init_std=std)
        self.proj = PackedLinear(gens, hidden_mult * C, C, init_std=proj_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, *, C) -> (E, *, C)."""
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class TransformerBlock(nn.Module):
    """Pre-LN GPT-2 block: x = x + attn(ln1(x)); x = x + mlp(ln2(x)).

    Draws: attn (qkv, proj), then mlp (fc, proj); the LayerNorms draw nothing.
    """

    def __init__(self, gens: list[torch.Generator], C: int, n_head: int, proj_std: float | None = 0.02,
                 std: float | None = 0.02):
        super().__init__()
        E = len(gens)
        self.ln1 = PackedLayerNorm(E, C)
        self.attn = CausalSelfAttention(gens, C, n_head, proj_std=proj_std, std=std)
        self.ln2 = PackedLayerNorm(E, C)
        self.mlp = PackedMLPBlock(gens, C, proj_std=proj_std, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, B, T, C) -> (E, B, T, C)."""
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def residual_std(n_layer: int) -> float:
    """GPT-2's init std for residual projections (attn.proj, mlp.proj): 0.02/√(2·n_layer)."""
    return 0.02 / math.sqrt(2 * n_layer)


def freeze(model: nn.Module) -> nn.Module:
    """Every parameter of `model` frozen (a frozen base); returns the model."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def share(model: nn.Module) -> nn.Module:
    """Member 0 of a packed model as a *shared* base: every parameter keeps its leading member axis at size 1, so
    one copy serves a whole pack (the packed modules broadcast a size-1 member axis over the E inputs)."""
    with torch.no_grad():
        for mod in model.modules():
            for name, p in list(mod.named_parameters(recurse=False)):
                setattr(mod, name, nn.Parameter(p[:1].clone(), requires_grad=p.requires_grad))
            for name, b in list(mod.named_buffers(recurse=False)):
                if b.dim() >= 1 and b.shape[0] > 1:
                    setattr(mod, name, b[:1].clone())
            if isinstance(getattr(mod, "E", None), int):
                mod.E = 1
    return model


def member_params(model: nn.Module) -> int:
    """Parameters of one member (every parameter has the member axis first)."""
    return sum(p[0].numel() for p in model.parameters())
