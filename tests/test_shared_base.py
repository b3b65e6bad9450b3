"""A shared base — one copy of a frozen model for a whole pack (DESIGN.md §7): parameters with a member axis of
size 1, broadcast over the E members' inputs by every packed module and by the grouped LoRA op."""
import copy

import pytest
import torch

import ftcore
from ftcore.adapters import build_adapter
from ftcore.models import build_model
from ftcore.models.blocks import share
from ftcore.seeding import generators
from ftkernels import lora_linear as L

MODELS = {
    "mlp": {"width": 6, "depth": 3},
    "transformer": {"n_embd": 8, "n_layer": 2, "n_head": 2, "n_positions": 16},
    "looped_transformer": {"n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 16, "n_loops": 2},
    "mamba": {"n_embd": 8, "n_layer": 2, "d_state": 4},
    "hybrid": {"n_embd": 8, "n_layer": 2, "n_head": 2, "n_positions": 16},
    "mambaformer": {"n_embd": 8, "n_layer": 2, "n_head": 2},
}
E = 3


def inputs(name, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((E, 4, 5) if name == "mlp" else (E, 2, 7, 5), generator=g)


def models(name):
    cfg = ftcore.MODELS[name].Config(name=name, **MODELS[name])
    one = build_model(cfg, 5, 3, generators([11], "base")).freeze()
    return cfg, one, share(copy.deepcopy(one))


@pytest.mark.parametrize("name", list(MODELS))
def test_shared_base_broadcasts_over_members(name):
    """The shared copy applied to E members' inputs == the one-member model applied to each input."""
    _, one, shared = models(name)
    assert all(p.shape[0] == 1 for p in shared.parameters())
    x = inputs(name)
    with torch.no_grad():
        out = shared(x)
        for e in range(E):
            torch.testing.assert_close(out[e:e + 1], one(x[e:e + 1]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in MODELS if n != "mlp"] + ["mlp"])
def test_lora_over_a_shared_base_equals_lora_over_copies(name):
    """A mixed-rank LoRA pack over one shared copy == the same pack over E identical copies (outputs, gradients)."""
    cfg, one, shared = models(name)
    copies = build_model(cfg, 5, 3, generators([11] * E, "base"))
    acfg = ftcore.ADAPTERS["lora"].Config
    cfgs = [acfg(rank=r, alpha=2.0, targets=[] if name == "mlp" else ["read_in", "read_out"]) for r in (1, 3, 2)]
    gens = lambda: generators([1, 2, 3], "adapter")   # noqa: E731
    a, b = build_adapter(cfgs, shared, 5, 3, gens()), build_adapter(cfgs, copies, 5, 3, gens())
    with torch.no_grad():
        for p, q in zip([p for p in a.parameters() if p.requires_grad], [p for p in b.parameters() if p.requires_grad]):
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
            q.copy_(p)
    x = inputs(name)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for p, q in zip([p for p in a.parameters() if p.requires_grad], [p for p in b.parameters() if p.requires_grad]):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", ["ref", "triton"])
def test_grouped_lora_linear_with_a_shared_weight(impl):
    """W (1, K, N), b (1, N): the same output and gradients as W, b repeated per member."""
    pytest.importorskip("triton")
    g = torch.Generator().manual_seed(0)
    Em, M, K, N, R = 3, 17, 19, 21, 16
    x = torch.randn(Em, M, K, generator=g, requires_grad=True)
    W, b = torch.randn(1, K, N, generator=g) / K ** 0.5, torch.randn(1, N, generator=g)
    down = (torch.randn(Em, K, R, generator=g) / K ** 0.5).requires_grad_()
    up = torch.randn(Em, R, N, generator=g).requires_grad_()
    scale, ranks = torch.tensor([1.0, 0.5, 2.0]), torch.tensor([1, 16, 7])
    fn = L.grouped_lora_linear_ref if impl == "ref" else L.grouped_lora_linear_triton
    if impl == "triton":     # the dispatcher expands a size-1 member axis before the Triton path
        got = fn(x, W.expand(Em, -1, -1), b.expand(Em, -1), down, up, scale, ranks)
    else:
        got = fn(x, W, b, down, up, scale, ranks)
    want = L.grouped_lora_linear_ref(x, W.repeat(Em, 1, 1), b.repeat(Em, 1), down, up, scale, ranks)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    gg = torch.autograd.grad(got.square().sum(), [x, down, up])
    gw = torch.autograd.grad(want.square().sum(), [x, down, up])
    for a, c in zip(gg, gw):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)


ONE_MEMBER = [("lora", {"rank": 2, "alpha": 2.0, "targets": ["read_in", "read_out"]}), ("full", {}),
              ("bias_only", {}), ("last_layers", {"n_layers": 1})]


@pytest.mark.parametrize("aname,fields", ONE_MEMBER, ids=[a for a, _ in ONE_MEMBER])
@pytest.mark.parametrize("name", [n for n in MODELS if n != "mlp"])
def test_merged_base_reproduces_the_adapted_model(aname, fields, name):
    """A trained one-member pack on a module-based base merges into a plain base with the same function: what a
    checkpoint becomes when a later sweep fine-tunes it (`model.from`)."""
    cfg = ftcore.MODELS[name].Config(name=name, **MODELS[name])
    base = build_model(cfg, 5, 3, generators([11], "base"))
    model = build_adapter([ftcore.ADAPTERS[aname].Config(name=aname, **fields)], base, 5, 3, generators([1], "a"))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
        x = inputs(name)[:1]
        want = model(x)
        merged = model.merged_base()
        assert not any(p.requires_grad for p in merged.parameters())
        torch.testing.assert_close(merged(x), want, rtol=1e-5, atol=1e-5)
