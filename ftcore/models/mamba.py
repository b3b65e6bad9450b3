"""`mamba`: a stack of Mamba (S6) mixers with a leading member axis (Gu & Dao 2023; papers.md §5).

The mixer follows mamba_ssm v1.1.1 `Mamba` (modules/mamba_simple.py, as vendored by krafton-ai/mambaformer-icl):

    x, z = split(h W_in)                         W_in (C, 2·Di), no bias; Di = expand·C
    x = silu(causal_depthwise_conv1d(x) + b)     kernel d_conv over time, per channel
    Δ_raw, B, C = split(x W_x)                   W_x (Di, R + 2N), no bias; R = dt_rank = ⌈C/16⌉
    Δ_raw = Δ_raw W_dt                           W_dt (R, Di); its bias b_dt goes in as delta_bias
    y = selective_scan(x, Δ_raw, A = −exp(A_log), B, C, D, z, b_dt, softplus)
    out = y W_out                                W_out (Di, C), no bias

Init (as mamba_ssm + MixerModel._init_weights): W_in, W_x, W_out ~ U(±1/√fan_in) (nn.Linear's kaiming
uniform) with W_out further divided by √n_layer (GPT-2 residual rescale, one residual per layer); conv weight
and bias ~ U(±1/√d_conv) (nn.Conv1d, fan_in = d_conv for a depthwise conv); W_dt ~ U(±R^-½);
dt ~ logUniform[1e-3, 1e-1] clamped ≥ 1e-4 and b_dt = softplus⁻¹(dt) = dt + log(−expm1(−dt));
A_log[d, n] = log(n + 1) (S4D-real); D = 1.

Packed form: every tensor above gains a leading member axis E; member e draws only from gens[e], in the
order in_proj, conv weight, conv bias, x_proj, dt_proj weight, dt, out_proj (DESIGN.md §3), so its numbers do
not depend on the pack. The scan folds members into its batch: rows (e, b) → e·B + b, with A, D and
delta_bias expanded per row (ftkernels/selective_scan.py docstring).

The model (`mamba`): read_in Linear(in_dim → n_embd), n_layer pre-norm residual Mamba layers
(x + mixer(LN(x)), no MLP blocks), final LN, read_out. No positional embedding (papers.md §5, l. 313).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ftcore.fields import check
from ftcore.models.blocks import (
    INITS,
    PackedLayerNorm,
    PackedLinear,
    freeze,
    init_stds,
    member_params,
)
from ftcore.registry import MODELS
from ftkernels.selective_scan import selective_scan

DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4


def uniform_(shape: tuple[int, ...], bound: float, gens: list[torch.Generator]) -> torch.Tensor:
    """Stack of per-member U(±bound) tensors, member e drawn from gens[e]. -> (E, *shape)."""
    return torch.stack([(torch.rand(*shape, generator=g) * 2 - 1) * bound for g in gens])


def bmm(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """x (E, *, fan_in) @ W (E, fan_in, fan_out) -> (E, *, fan_out), one bmm."""
    E = W.shape[0]
    return torch.bmm(x.reshape(E, -1, W.shape[1]), W).reshape(*x.shape[:-1], W.shape[2])


class MambaBlock(nn.Module):
    """The Mamba (S6) mixer, packed (module docstring). forward(x (E, B, T, C)) -> (E, B, T, C)."""

    def __init__(self, gens: list[torch.Generator], C: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 n_layer: int = 1):
        super().__init__()
        E = len(gens)
        self.E, self.C, self.d_state, self.d_conv = E, C, d_state, d_conv
        self.d_inner = Di = int(expand * C)
        self.dt_rank = R = math.ceil(C / 16)
        self.in_proj = nn.Parameter(uniform_((C, 2 * Di), C ** -0.5, gens))              # (E, C, 2Di)
        self.conv_weight = nn.Parameter(uniform_((Di, d_conv), d_conv ** -0.5, gens))     # (E, Di, d_conv)
        self.conv_bias = nn.Parameter(uniform_((Di,), d_conv ** -0.5, gens))              # (E, Di)
        self.x_proj = nn.Parameter(uniform_((Di, R + 2 * d_state), Di ** -0.5, gens))     # (E, Di, R+2N)
        self.dt_proj = nn.Parameter(uniform_((R, Di), R ** -0.5, gens))                   # (E, R, Di)
        lo, hi = math.log(DT_MIN), math.log(DT_MAX)
        dt = torch.stack([torch.exp(torch.rand(Di, generator=g) * (hi - lo) + lo) for g in gens]).clamp(min=DT_FLOOR)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))                     # (E, Di) softplus⁻¹(dt)
        self.out_proj = nn.Parameter(uniform_((Di, C), Di ** -0.5, gens) / math.sqrt(n_layer))  # (E, Di, C)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).expand(E, Di, d_state)
        self.A_log = nn.Parameter(torch.log(A).contiguous())                               # (E, Di, N)
        self.D = nn.Parameter(torch.ones(E, Di))                                           # (E, Di)
        self.adapted = nn.ModuleDict()                                                     # LoRA wrappers by site

    lora_sites = ("in_proj", "x_proj", "dt_proj", "out_proj")   # projections an adapter may wrap (adapter.targets)

    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """x (E, *, fan_in) @ the projection `name` (E or 1, fan_in, fan_out); a LoRA adapter registers its
        wrapper for `name` in `self.adapted` (adapters/lora_modules.py), which then computes the whole map."""
        site = self.adapted[name] if name in self.adapted else None
        return bmm(x, getattr(self, name)) if site is None else site(x)

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """Causal depthwise conv over time: x (E, B, T, Di) -> (E, B, T, Di) (before the SiLU).

        out[t, d] = b[d] + Σ_k w[d, k] x[t − (d_conv − 1) + k, d], zeros before t = 0 (nn.Conv1d with
        padding d_conv − 1, truncated to the first T outputs). Members × channels are the conv's groups.
        """
        E, B, T, Di = x.shape
        h = x.permute(1, 0, 3, 2).reshape(B, E * Di, T)                                    # (B, E·Di, T)
        w = self.conv_weight.expand(E, -1, -1).reshape(E * Di, 1, self.d_conv)            # (a shared base: size-1 axis)
        y = F.conv1d(F.pad(h, (self.d_conv - 1, 0)), w, self.conv_bias.expand(E, -1).reshape(E * Di), groups=E * Di)
        return y.reshape(B, E, Di, T).permute(1, 0, 3, 2)                                  # (E, B, T, Di)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        E, B, T, _ = x.shape
        Di, N, R = self.d_inner, self.d_state, self.dt_rank
        xz = self.project("in_proj", x)                                                    # (E, B, T, 2Di)
        u, z = xz[..., :Di], xz[..., Di:]
        u = F.silu(self.conv(u))                                                           # (E, B, T, Di)
        x_dbl = self.project("x_proj", u)                                                   # (E, B, T, R+2N)
        delta = self.project("dt_proj", x_dbl[..., :R])                                     # (E, B, T, Di)
        Bm, Cm = x_dbl[..., R:R + N], x_dbl[..., R + N:]                                   # (E, B, T, N)

        def rows(t: torch.Tensor) -> torch.Tensor:                                         # (E, B, T, K) -> (E·B, K, T)
            return t.reshape(E * B, T, t.shape[-1]).transpose(1, 2)

        def per_row(p: torch.Tensor) -> torch.Tensor:                                      # (E, *s) -> (E·B, *s)
            return p[:, None].expand(E, B, *p.shape[1:]).reshape(E * B, *p.shape[1:])

        A = -torch.exp(self.A_log.float())                                                 # (E, Di, N)
        y = selective_scan(rows(u), rows(delta), per_row(A), rows(Bm), rows(Cm), per_row(self.D.float()),
                           z=rows(z), delta_bias=per_row(self.dt_bias.float()), delta_softplus=True)  # (E·B, Di, T)
        y = y.transpose(1, 2).reshape(E, B, T, Di)
        return self.project("out_proj", y)                                                  # (E, B, T, C)


class MambaLayer(nn.Module):
    """Pre-norm residual Mamba layer (mamba_ssm `Block` with a Mamba mixer): x + mixer(LN(x))."""

    def __init__(self, gens: list[torch.Generator], C: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 n_layer: int = 1):
        super().__init__()
        self.norm = PackedLayerNorm(len(gens), C)
        self.mixer = MambaBlock(gens, C, d_state, d_conv, expand, n_layer=n_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, B, T, C) -> (E, B, T, C)."""
        return x + self.mixer(self.norm(x))


def check_mamba_fields(cfg) -> None:
    """The fields every Mamba-bearing config shares."""
    check(cfg.n_embd >= 1, "model.n_embd", ">= 1", cfg.n_embd)
    check(cfg.n_layer >= 1, "model.n_layer", ">= 1", cfg.n_layer)
    check(1 <= cfg.d_state <= 64, "model.d_state", "in 1..64 (the scan kernel's limit)", cfg.d_state)
    check(cfg.d_conv >= 1, "model.d_conv", ">= 1", cfg.d_conv)
    check(cfg.expand >= 1, "model.expand", ">= 1", cfg.expand)


@dataclass
class MambaConfig:
    name: str = "mamba"
    n_embd: int = 64
    n_layer: int = 4
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    init: str = "gpt2"   # read_in/read_out: gpt2 N(0, 0.02²) | pytorch U(±1/√fan_in) (Park et al.'s nn.Linear)

    per_member = ()

    def __post_init__(self):
        check_mamba_fields(self)
        check(self.init in INITS, "model.init", f"one of {', '.join(INITS)}", self.init)


class PackedSequenceModel(nn.Module):
    """Shared read-in / layers / final LN / read-out skeleton; subclasses fill `self.layers`."""

    def _head(self, in_dim: int, gens: list[torch.Generator]) -> None:
        self.read_in = PackedLinear(gens, in_dim, self.cfg.n_embd, init_std=self._io_std())

    def _tail(self, out_dim: int, gens: list[torch.Generator]) -> None:
        self.norm_f = PackedLayerNorm(len(gens), self.cfg.n_embd)
        self.read_out = PackedLinear(gens, self.cfg.n_embd, out_dim, init_std=self._io_std())

    def _io_std(self) -> float | None:
        """`model.init` for the read-in/read-out (the Mamba layers keep mamba_ssm's own init)."""
        return init_stds(self.cfg.init, self.cfg.n_layer)[0]

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """Hook for positional embeddings; (E, B, T, C) -> (E, B, T, C)."""
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, B, T, in_dim) -> (E, B, T, out_dim)."""
        h = self.embed(self.read_in(x))
        for layer in self.layers:
            h = layer(h)
        return self.read_out(self.norm_f(h))

    def freeze(self):
        return freeze(self)

    def n_params(self) -> int:
        return member_params(self)


@MODELS.register("mamba")
class PackedMamba(PackedSequenceModel):
    """read_in → n_layer × MambaLayer → LN → read_out; no positional embedding (papers.md §5).

    Draws per member: read_in, each layer's mixer (in order), read_out (LayerNorms draw nothing).
    """
    Config = MambaConfig

    def __init__(self, cfg: MambaConfig, in_dim: int, out_dim: int, gens: list[torch.Generator]):
        super().__init__()
        self.cfg, self.E = cfg, len(gens)
        self._head(in_dim, gens)
        self.layers = nn.ModuleList(
            MambaLayer(gens, cfg.n_embd, cfg.d_state, cfg.d_conv, cfg.expand, n_layer=cfg.n_layer)
            for _ in range(cfg.n_layer))
        self._tail(out_dim, gens)
