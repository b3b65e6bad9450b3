"""Contracts for the packed sequence models (`transformer`, `looped_transformer`) and their blocks."""
import pytest
import torch

from ftcore.models import build_model
from ftcore.models.blocks import (
    CausalSelfAttention,
    PackedLayerNorm,
    PackedLinear,
    TransformerBlock,
)
from ftcore.models.looped import LoopedConfig
from ftcore.models.transformer import TransformerConfig
from ftcore.registry import MODELS
from ftcore.seeding import generators

IN, OUT, C, H, P = 5, 1, 16, 4, 12
CASES = {
    "transformer": lambda: TransformerConfig(n_embd=C, n_layer=2, n_head=H, n_positions=P),
    "looped_transformer": lambda: LoopedConfig(n_embd=C, n_layer=1, n_head=H, n_positions=P, n_loops=3),
}


def make(name, seeds=(0,), cfg=None):
    return build_model(cfg or CASES[name](), IN, OUT, generators(list(seeds), "base"))


def xs(E, B=2, T=7, seed=123):
    return torch.randn(E, B, T, IN, generator=torch.Generator().manual_seed(seed))


def test_registered():
    assert {"transformer", "looped_transformer"} <= set(MODELS)


@pytest.mark.parametrize("name", CASES)
def test_shapes(name):
    y = make(name, seeds=(0, 1, 2))(xs(3))
    assert y.shape == (3, 2, 7, OUT)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", CASES)
def test_causal(name):
    torch.manual_seed(0)
    m, x, t = make(name, seeds=(0, 1)), xs(2), 3
    x2 = x.clone()
    x2[:, :, t + 1:] += torch.randn_like(x2[:, :, t + 1:]) * 5
    y, y2 = m(x), m(x2)
    torch.testing.assert_close(y[:, :, :t + 1], y2[:, :, :t + 1], rtol=0, atol=1e-6)
    assert (y[:, :, t + 1:] - y2[:, :, t + 1:]).abs().max() > 1e-3   # later positions do see the change


@pytest.mark.parametrize("name", CASES)
def test_members_independent_of_pack(name):
    pack = make(name, seeds=(0, 1, 2))
    x = xs(3)
    y = pack(x)
    for e, s in enumerate((0, 1, 2)):
        solo = make(name, seeds=(s,))
        for (n, p), (_, q) in zip(pack.named_parameters(), solo.named_parameters()):
            assert torch.equal(p[e], q[0]), n
        torch.testing.assert_close(y[e], solo(x[e:e + 1])[0], rtol=1e-6, atol=1e-6)
    assert (y[0] - y[1]).abs().max() > 1e-4                                 # different seeds, different members


@pytest.mark.parametrize("name", CASES)
def test_member_outputs_do_not_mix(name):
    m, x = make(name, seeds=(0, 1)), xs(2)
    x2 = x.clone()
    x2[1] += 1.0
    torch.testing.assert_close(m(x)[0], m(x2)[0], rtol=0, atol=0)


@pytest.mark.parametrize("name", CASES)
def test_grads_reach_every_parameter(name):
    m = make(name, seeds=(0, 1))
    m(xs(2)).pow(2).sum().backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
        assert p.shape[0] == 2, n


@pytest.mark.parametrize("name", CASES)
def test_freeze(name):
    m = make(name).freeze()
    assert not any(p.requires_grad for p in m.parameters())


def block_params(c):
    return 2 * c + (3 * c * c + 3 * c) + (c * c + c) + 2 * c + (4 * c * c + 4 * c) + (4 * c * c + c)


@pytest.mark.parametrize("name", CASES)
def test_n_params_hand_count(name):
    cfg = CASES[name]()
    want = (IN * C + C) + P * C + cfg.n_layer * block_params(C) + 2 * C + (C * OUT + OUT)
    assert make(name, seeds=(0, 1)).n_params() == want
    assert block_params(C) == 12 * C * C + 13 * C


@pytest.mark.parametrize("name", CASES)
def test_too_long_raises(name):
    m = make(name)
    m(xs(1, T=P))
    with pytest.raises(ValueError, match="n_positions"):
        m(xs(1, T=P + 1))


@pytest.mark.parametrize("bad", [{"n_embd": 10, "n_head": 4}, {"n_layer": 0}, {"n_positions": 0}])
@pytest.mark.parametrize("Cfg", [TransformerConfig, LoopedConfig])
def test_config_validation(Cfg, bad):
    with pytest.raises(ValueError, match="model."):
        Cfg(**bad)


def test_looped_config_validation():
    with pytest.raises(ValueError, match="model.loss_last"):
        LoopedConfig(n_loops=3, loss_last=4)
    with pytest.raises(ValueError, match="model.n_loops"):
        LoopedConfig(n_loops=0)


def test_looped_forward_is_last_loop():
    m, x = make("looped_transformer", seeds=(0, 1)), xs(2)
    outs = m.forward_loops(x)
    assert len(outs) == 3
    torch.testing.assert_close(m(x), outs[-1], rtol=0, atol=0)
    assert (outs[0] - outs[-1]).abs().max() > 1e-5                           # the loops do something
    # Fewer loops = the prefix of the longer run; keep_last returns the tail.
    five = m.forward_loops(x, n_loops=5)
    for a, b in zip(outs, five):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    tail = m.forward_loops(x, n_loops=5, keep_last=2)
    assert len(tail) == 2
    torch.testing.assert_close(tail[-1], five[-1], rtol=0, atol=0)
    torch.testing.assert_close(m(x, n_loops=5), five[-1], rtol=0, atol=0)


def test_looped_recurrence_by_hand():
    """Y_{t+1} = M(Y_t + P), Y_0 = 0, ŷ_t = read_out(Y_t)."""
    m, x = make("looped_transformer"), xs(1)
    P_ = m.read_in(x)
    Y = torch.zeros_like(P_)
    for out in m.forward_loops(x):
        Y = m.backbone(Y + P_)
        torch.testing.assert_close(out, m.read_out(Y), rtol=0, atol=0)


def test_looped_truncated_loss_grad():
    """keep_last=T: earlier iterations run without gradient, so the loss is the paper's truncated one."""
    m, x = make("looped_transformer"), xs(1)
    tail = m.forward_loops(x, n_loops=4, keep_last=1)
    assert tail[0].requires_grad
    full = m.forward_loops(x, n_loops=4)
    g_tail = torch.autograd.grad(tail[0].sum(), m.backbone.blocks[0].attn.qkv.weight)[0]
    g_full = torch.autograd.grad(full[-1].sum(), m.backbone.blocks[0].attn.qkv.weight)[0]
    assert not torch.allclose(g_tail, g_full)


def test_looped_weights_shared_across_loops():
    a = make("looped_transformer", cfg=LoopedConfig(n_embd=C, n_head=H, n_positions=P, n_loops=2))
    b = make("looped_transformer", cfg=LoopedConfig(n_embd=C, n_head=H, n_positions=P, n_loops=20))
    assert a.n_params() == b.n_params()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_looped_without_injection():
    cfg = LoopedConfig(n_embd=C, n_head=H, n_positions=P, n_loops=3, input_injection=False)
    m, x = make("looped_transformer", cfg=cfg), xs(1)
    Y = m.backbone(m.read_in(x))
    Y = m.backbone(m.backbone(Y))
    torch.testing.assert_close(m(x), m.read_out(Y), rtol=0, atol=0)


# --- blocks -----------------------------------------------------------------------------------------------

def test_packed_linear_matches_per_member():
    gens = generators([0, 1], "lin")
    lin = PackedLinear(gens, 3, 4)
    with torch.no_grad():
        lin.bias.normal_()
    x = torch.randn(2, 5, 6, 3)
    y = lin(x)
    for e in range(2):
        torch.testing.assert_close(y[e], x[e] @ lin.weight[e] + lin.bias[e])
    assert 0.005 < lin.weight.std() < 0.05                                   # N(0, 0.02²)


def test_layernorm_per_member():
    ln = PackedLayerNorm(2, 6)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 3, 4, 6)
    y = ln(x)
    for e in range(2):
        ref = torch.nn.functional.layer_norm(x[e], (6,), ln.weight[e], ln.bias[e])
        torch.testing.assert_close(y[e], ref)


def test_attention_matches_reference():
    gens = generators([7], "att")
    att = CausalSelfAttention(gens, C, H)
    x = torch.randn(1, 2, 5, C)
    q, k, v = (x[0] @ att.qkv.weight[0] + att.qkv.bias[0]).split(C, -1)      # (B, T, C)
    hd = C // H
    q, k, v = (t.view(2, 5, H, hd).transpose(1, 2) for t in (q, k, v))
    s = q @ k.transpose(-1, -2) / hd ** 0.5
    s = s.masked_fill(torch.triu(torch.ones(5, 5, dtype=torch.bool), 1), float("-inf"))
    y = (s.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, C)
    ref = y @ att.proj.weight[0] + att.proj.bias[0]
    torch.testing.assert_close(att(x)[0], ref, rtol=1e-5, atol=1e-6)


def test_block_init_independent_of_pack():
    a = TransformerBlock(generators([0, 1, 2], "b"), C, H)
    b = TransformerBlock(generators([2], "b"), C, H)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p[2], q[0])


def test_loop_curriculum_schedule():
    """b_s starts at T, grows by loop_inc every loop_interval steps, stops at b; interval 0 = always b."""
    cfg = LoopedConfig(n_loops=10, loss_last=5, loop_inc=2, loop_interval=500)
    assert [cfg.loops_at(s) for s in (0, 499, 500, 1000, 1499, 1500, 10**6)] == [5, 5, 7, 9, 9, 10, 10]
    assert LoopedConfig(n_loops=4, loss_last=0, loop_interval=10).loops_at(0) == 1        # T = 0 starts at 1
    assert LoopedConfig(n_loops=7, loop_interval=0).loops_at(0) == 7
    with pytest.raises(ValueError, match="model.loop_interval"):
        LoopedConfig(loop_interval=-1)


def test_fit_uses_the_truncated_loop_loss():
    """fit's training loss for the looped model = the mean over the last T iterations' task losses at b_s loops,
    for a bare base and through the `full` adapter; other models keep loss(model(x))."""
    from ftcore.adapters.base import build_adapter
    from ftcore.fit import train_loss

    class Task:   # a sequence task's loss: (E, B, T, 1) predictions, weights (E, B)
        loss = staticmethod(lambda p, y, w: (w * (p - y).pow(2).mean((-1, -2))).sum(-1))

    cfg = LoopedConfig(n_embd=C, n_layer=1, n_head=H, n_positions=P, n_loops=6, loss_last=2, loop_inc=1,
                       loop_interval=3)
    m, x = make("looped_transformer", seeds=(0, 1), cfg=cfg), xs(2)
    y, w = torch.randn(2, 2, 7, OUT), torch.full((2, 2), 0.5)
    for step, n in ((0, 2), (3, 3), (100, 6)):
        want = torch.stack([Task.loss(p, y, w) for p in m.forward_loops(x, n_loops=n)[-2:]]).mean(0)
        torch.testing.assert_close(train_loss(Task, m, x, y, w, step), want)
    adapted = build_adapter([ftcore_full()] * 2, m, IN, OUT, generators([0, 1], "adapter"))
    want = torch.stack([Task.loss(p, y, w) for p in m.forward_loops(x, n_loops=3)[-2:]]).mean(0)
    torch.testing.assert_close(train_loss(Task, adapted, x, y, w, 3), want)
    t = make("transformer")
    torch.testing.assert_close(train_loss(Task, t, x[:1], y[:1], w[:1], 5), Task.loss(t(x[:1]), y[:1], w[:1]))


def test_eval_loops_sets_the_default_forward():
    cfg = LoopedConfig(n_embd=C, n_layer=1, n_head=H, n_positions=P, n_loops=3, eval_loops=7)
    m, x = make("looped_transformer", cfg=cfg), xs(1)
    torch.testing.assert_close(m(x), m.forward_loops(x, n_loops=7)[-1], rtol=0, atol=0)


def ftcore_full():
    from ftcore.adapters.delta import FullConfig
    return FullConfig()


def test_init_choices():
    """gpt2: N(0, 0.02²), residual projections 0.02/√(2L); pytorch: U(±1/√fan_in) everywhere (wpe stays 0.02)."""
    gpt2 = make("transformer", seeds=(0, 1, 2))
    torch_init = make("transformer", seeds=(0, 1, 2),
                      cfg=TransformerConfig(n_embd=C, n_layer=2, n_head=H, n_positions=P, init="pytorch"))
    qkv = gpt2.backbone.blocks[0].attn.qkv.weight
    assert abs(qkv.std().item() - 0.02) < 0.002
    assert abs(gpt2.backbone.blocks[0].mlp.proj.weight.std().item() - 0.01) < 0.001        # 0.02/√4
    for lin in (torch_init.read_in, torch_init.backbone.blocks[1].mlp.proj, torch_init.read_out):
        bound = 1 / lin.fan_in ** 0.5
        assert lin.weight.abs().max() <= bound and abs(lin.weight.std().item() - bound / 3 ** 0.5) < 0.15 * bound
    one = make("transformer", seeds=(1,), cfg=TransformerConfig(n_embd=C, n_layer=2, n_head=H, n_positions=P,
                                                                 init="pytorch"))
    torch.testing.assert_close(one.read_in.weight[0], torch_init.read_in.weight[1], rtol=0, atol=0)  # per-member draws
    with pytest.raises(ValueError, match="model.init"):
        TransformerConfig(init="xavier")


# ------------------------------------------------------------------------------------ SDPA (issue 17, item 3)
def explicit_causal_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
    """softmax(q kᵀ / √hd + causal mask) v written out: the attention every model computed before SDPA."""
    assert is_causal and attn_mask is None and dropout_p == 0.0 and not kw
    T = q.shape[-2]
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5                              # (N, nh, T, T)
    s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    return s.softmax(-1) @ v


def attention_models():
    from ftcore.models.hybrid import HybridConfig, MambaFormerConfig
    return {**CASES,
            "hybrid": lambda: HybridConfig(n_embd=C, n_layer=3, n_head=H, d_state=4, n_positions=P),
            "mambaformer": lambda: MambaFormerConfig(n_embd=C, n_layer=2, n_head=H, d_state=4)}


@pytest.mark.parametrize("name", ["transformer", "looped_transformer", "hybrid", "mambaformer"])
def test_every_attention_model_through_sdpa_matches_explicit_attention(name, monkeypatch):
    """Every model with attention (transformer, looped, hybrid, mambaformer) calls F.scaled_dot_product_attention
    with is_causal=True (flash attention can serve it on CUDA); its outputs and gradients equal those with the
    explicit masked softmax in its place within 1e-5 in fp32."""
    F = torch.nn.functional
    model = build_model(attention_models()[name](), IN, OUT, generators([0, 1], "base"))
    x = xs(2)
    calls = []
    real = F.scaled_dot_product_attention

    def counting(*a, **kw):
        calls.append(kw.get("is_causal"))
        return real(*a, **kw)

    def run():
        model.zero_grad()
        y = model(x)
        y.pow(2).sum().backward()
        return y.detach(), [p.grad.clone() for p in model.parameters()]

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    y_sdpa, g_sdpa = run()
    assert calls and all(c is True for c in calls), calls
    monkeypatch.setattr(F, "scaled_dot_product_attention", explicit_causal_attention)
    y_ref, g_ref = run()
    torch.testing.assert_close(y_sdpa, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_sdpa, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_attention_under_bf16_autocast():
    """Under CPU autocast bf16 (train.precision: bf16), SDPA gets bf16 q, k, v (on CUDA the flash kernel's dtype)
    and the block's output stays within bf16 rounding of the fp32 one."""
    F = torch.nn.functional
    att = CausalSelfAttention(generators([3, 4], "att"), C, H)
    x = torch.randn(2, 3, 7, C, generator=torch.Generator().manual_seed(5))
    ref = att(x)
    dtypes = []
    real = F.scaled_dot_product_attention

    def recording(q, k, v, **kw):
        dtypes.append((q.dtype, k.dtype, v.dtype))
        return real(q, k, v, **kw)

    with pytest.MonkeyPatch.context() as mp, torch.autocast("cpu", dtype=torch.bfloat16):
        mp.setattr(F, "scaled_dot_product_attention", recording)
        y = att(x)
    assert dtypes == [(torch.bfloat16,) * 3] and y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.02)
