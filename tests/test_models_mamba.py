"""Contracts for the Mamba-bearing models (`mamba`, `hybrid`, `mambaformer`; papers.md §5).

Every model: output shapes; causality (inputs after t never change outputs at ≤ t); member independence (a
pack of seeds 0,1,2 computes what three packs of one compute, parameters included); gradients reach every
parameter of every member. MambaBlock against a slow per-member reference built from torch's grouped conv1d
and `selective_scan_ref`, outputs and parameter gradients; `n_params` against a hand count; layer patterns.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ftcore.models.hybrid import AttentionLayer, HybridConfig, MambaFormerConfig
from ftcore.models.mamba import MambaBlock, MambaConfig, MambaLayer
from ftcore.registry import MODELS
from ftcore.seeding import generators
from ftkernels.selective_scan import selective_scan_ref

E, B, T, C, IN, OUT = 2, 2, 9, 16, 3, 2
CASES = {
    "mamba": MambaConfig(n_embd=C, n_layer=2, d_state=4),
    "hybrid": HybridConfig(n_embd=C, n_layer=3, n_head=2, d_state=4, n_positions=16),
    "mambaformer": MambaFormerConfig(n_embd=C, n_layer=3, n_head=2, d_state=4),
}


def build(name, seeds, in_dim=IN, out_dim=OUT):
    return MODELS.get_entry(name)(CASES[name], in_dim, out_dim, generators(seeds, "model"))


@pytest.fixture(params=sorted(CASES))
def name(request):
    return request.param


def test_registered():
    assert {"mamba", "hybrid", "mambaformer"} <= set(MODELS)


def test_shapes(name):
    m = build(name, [0, 1])
    for t in (1, 3, T):
        assert m(torch.randn(E, B, t, IN)).shape == (E, B, t, OUT)


def test_causal(name):
    torch.manual_seed(0)
    m = build(name, [0, 1])
    x = torch.randn(E, B, T, IN)
    y = m(x)
    for t in (0, 3, T - 2):
        x2 = x.clone()
        x2[:, :, t + 1:] = torch.randn_like(x2[:, :, t + 1:])
        y2 = m(x2)
        torch.testing.assert_close(y2[:, :, :t + 1], y[:, :, :t + 1], rtol=0, atol=1e-6)
        assert (y2[:, :, t + 1:] - y[:, :, t + 1:]).abs().max() > 1e-4      # the perturbation does reach later steps


def test_member_independence(name):
    torch.manual_seed(1)
    seeds = [0, 1, 2]
    pack = build(name, seeds)
    x = torch.randn(len(seeds), B, T, IN)
    y = pack(x)
    for e, s in enumerate(seeds):
        alone = build(name, [s])
        for (pn, p), (an, a) in zip(pack.named_parameters(), alone.named_parameters()):
            assert pn == an and torch.equal(p[e], a[0]), pn
        torch.testing.assert_close(y[e:e + 1], alone(x[e:e + 1]), rtol=1e-5, atol=1e-6)
    assert (y[0] - y[1]).abs().max() > 1e-4                                  # seeds give different members


def test_gradients_reach_every_parameter(name):
    torch.manual_seed(2)
    m = build(name, [0, 1])
    m(torch.randn(E, B, T, IN)).square().sum().backward()
    for pn, p in m.named_parameters():
        assert p.grad is not None, pn
        assert p.shape[0] == E, pn
        for e in range(E):
            assert p.grad[e].abs().sum() > 0, (pn, e)


def test_freeze(name):
    m = build(name, [0]).freeze()
    assert not any(p.requires_grad for p in m.parameters())


def test_layer_patterns():
    kinds = {MambaLayer: "M", AttentionLayer: "A"}
    hyb = MODELS.get_entry("hybrid")(HybridConfig(n_embd=C, n_layer=4, n_head=2, d_state=4), IN, OUT, generators([0], "m"))
    mf = MODELS.get_entry("mambaformer")(MambaFormerConfig(n_embd=C, n_layer=4, n_head=2, d_state=4), IN, OUT,
                                         generators([0], "m"))
    mb = MODELS.get_entry("mamba")(MambaConfig(n_embd=C, n_layer=4, d_state=4), IN, OUT, generators([0], "m"))
    assert "".join(kinds[type(layer)] for layer in hyb.layers) == "AMAM"
    assert "".join(kinds[type(layer)] for layer in mf.layers) == "MAMAM"
    assert "".join(kinds[type(layer)] for layer in mb.layers) == "MMMM"
    assert hasattr(hyb, "wpe") and not hasattr(mf, "wpe") and not hasattr(mb, "wpe")


def test_hybrid_rejects_long_sequences():
    m = build("hybrid", [0])
    with pytest.raises(ValueError, match="n_positions"):
        m(torch.randn(1, 1, CASES["hybrid"].n_positions + 1, IN))


@pytest.mark.parametrize("cls, bad", [
    (MambaConfig, {"n_embd": 0}), (MambaConfig, {"n_layer": 0}), (MambaConfig, {"d_state": 65}),
    (MambaConfig, {"d_conv": 0}), (MambaConfig, {"expand": 0}),
    (HybridConfig, {"n_embd": 16, "n_head": 3}), (HybridConfig, {"n_positions": 0}),
    (MambaFormerConfig, {"n_embd": 16, "n_head": 5}), (MambaFormerConfig, {"d_state": 0}),
])
def test_config_validation(cls, bad):
    with pytest.raises(ValueError, match="model\\."):
        cls(**bad)


# --------------------------------------------------------------------------------------- MambaBlock itself
def reference_block(blk: MambaBlock, x: torch.Tensor) -> torch.Tensor:
    """mamba_simple.Mamba's slow path, one member at a time: x (E, B, T, C) -> (E, B, T, C)."""
    Di, N, R, K = blk.d_inner, blk.d_state, blk.dt_rank, blk.d_conv
    outs = []
    for e in range(x.shape[0]):
        xe = x[e]                                                                  # (B, T, C)
        xz = (xe @ blk.in_proj[e]).transpose(1, 2)                                 # (B, 2Di, T)
        u, z = xz.chunk(2, dim=1)
        L = u.shape[-1]
        u = F.silu(F.conv1d(u, blk.conv_weight[e].unsqueeze(1), blk.conv_bias[e], padding=K - 1, groups=Di)[..., :L])
        x_dbl = u.transpose(1, 2) @ blk.x_proj[e]                                  # (B, T, R+2N)
        dt, Bm, Cm = torch.split(x_dbl, [R, N, N], dim=-1)
        dt = (dt @ blk.dt_proj[e]).transpose(1, 2)                                 # (B, Di, T)
        y = selective_scan_ref(u, dt, -torch.exp(blk.A_log[e]), Bm.transpose(1, 2), Cm.transpose(1, 2), blk.D[e],
                               z=z, delta_bias=blk.dt_bias[e], delta_softplus=True)  # (B, Di, T)
        outs.append(y.transpose(1, 2) @ blk.out_proj[e])
    return torch.stack(outs)


def test_mamba_block_matches_reference():
    torch.manual_seed(3)
    blk = MambaBlock(generators([0, 1, 2], "blk"), C, d_state=4, d_conv=3, expand=2)
    with torch.no_grad():                       # move off the structured init (D = 1, A_log shared) so a
        for p in blk.parameters():              # member/row mix-up in the scan's folding shows up
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, B, T, C)
    y = blk(x)
    y_ref = reference_block(blk, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    w = torch.randn_like(y)
    g = torch.autograd.grad((y * w).sum(), list(blk.parameters()))
    g_ref = torch.autograd.grad((y_ref * w).sum(), list(blk.parameters()))
    for (pn, _), a, b in zip(blk.named_parameters(), g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=pn)


def test_mamba_block_init():
    Cb, N, Di = 32, 5, 64
    blk = MambaBlock(generators([0, 1], "blk"), Cb, d_state=N, d_conv=4, expand=2, n_layer=4)
    assert blk.dt_rank == math.ceil(Cb / 16) and blk.d_inner == Di
    dt = F.softplus(blk.dt_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    torch.testing.assert_close(blk.A_log, torch.log(torch.arange(1, N + 1.0)).expand(2, Di, N))
    assert torch.equal(blk.D, torch.ones(2, Di))
    assert blk.in_proj.abs().max() <= Cb ** -0.5
    assert blk.out_proj.abs().max() <= Di ** -0.5 / 2 and blk.out_proj.abs().max() > Di ** -0.5 / 4
    assert not torch.equal(blk.in_proj[0], blk.in_proj[1])


def test_mamba_n_params_hand_count():
    cfg = MambaConfig(n_embd=24, n_layer=3, d_state=6, d_conv=4, expand=2)
    m = MODELS.get_entry("mamba")(cfg, 5, 7, generators([0, 1], "model"))
    c, di, n, k, r = 24, 48, 6, 4, math.ceil(24 / 16)
    layer = (2 * c                      # LayerNorm
             + c * 2 * di               # in_proj (no bias)
             + di * k + di              # depthwise conv + bias
             + di * (r + 2 * n)         # x_proj (no bias)
             + r * di + di              # dt_proj + dt bias
             + di * n + di              # A_log, D
             + di * c)                  # out_proj (no bias)
    assert m.n_params() == (5 * c + c) + 3 * layer + 2 * c + (c * 7 + 7)
