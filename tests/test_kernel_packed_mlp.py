"""packed_mlp: Triton kernels (on the GPU when there is one, else the interpreter on CPU: `kernel_device`) vs a
float64 evaluation of packed_mlp_ref on CPU, outputs and all grads, odd sizes; masked units exact; the ref vs a
naive per-member nn.Linear loop; the torch path (hand-written backward) vs autograd through the ref; which path the
public entry takes (recorded by ftkernels.dispatch)."""

import pytest
import torch
import torch.nn.functional as F

import ftkernels.packed_mlp as P
from ftkernels import dispatch
from ftkernels.packed_mlp import (
    HMAX,
    OMAX,
    packed_mlp,
    packed_mlp_ref,
    packed_mlp_torch,
    packed_mlp_triton,
)


def make_pack(E, B, d_in, hidden, d_out, widths, seed=0):
    """float64 pack with random weights EVERYWHERE (padding too, so the masks matter). widths[i][e]."""
    g = torch.Generator().manual_seed(seed)
    dims = [d_in, *hidden, d_out]
    x = torch.randn(E, B, d_in, generator=g, dtype=torch.float64)
    Ws = [torch.randn(E, dims[i], dims[i + 1], generator=g, dtype=torch.float64) / dims[i] ** 0.5
          for i in range(len(dims) - 1)]
    bs = [0.3 * torch.randn(E, dims[i + 1], generator=g, dtype=torch.float64) for i in range(len(dims) - 1)]
    masks = [(torch.arange(h)[None, :] < torch.tensor(w)[:, None]).double() for h, w in zip(hidden, widths)]
    return x, Ws, bs, masks


def naive(x, Ws, bs, widths):
    """Each member alone as the small network it really is: nn.Linear math on its first width units only."""
    out = []
    for e in range(x.shape[0]):
        h, keep = x[e], x.shape[2]                                  # rows of the next W that are real inputs
        for i, (w, b) in enumerate(zip(Ws, bs)):
            n = widths[i][e] if i < len(widths) else w.shape[2]
            h = F.linear(h, w[e, :keep, :n].T, b[e, :n])
            if i < len(widths):
                h = torch.relu(h)
            keep = n
        out.append(h)
    return torch.stack(out)


def grads(fn, x, Ws, bs, masks, dy, x_grad=True):
    x = x.detach().requires_grad_(x_grad)
    Ws = [w.detach().requires_grad_() for w in Ws]
    bs = [b.detach().requires_grad_() for b in bs]
    y = fn(x, Ws, bs, masks)
    inputs = ([x] if x_grad else []) + Ws + bs
    return y, torch.autograd.grad(y, inputs, dy.to(y.dtype))


# (E, B, in, hidden, out, widths): odd sizes; H = 70 > HMAX so the hidden-chunk loop runs; depth 3 has
# fan_in 70 > BLOCK_K for the pair (fan_in-chunk grid); out = 20 takes the BLOCK_O = 64 variant.
CASES = {
    "d2-b1": (3, 1, 3, [70], 1, [[1, 70, 33]]),
    "d2-b33": (3, 33, 9, [70], 5, [[70, 1, 40]]),
    "d2-out20": (2, 17, 9, [24], 20, [[24, 7]]),
    "d3-b33": (3, 33, 9, [70, 40], 5, [[1, 70, 35], [40, 1, 20]]),
    "d3-b1": (2, 1, 3, [20, 70], 1, [[20, 3], [66, 70]]),
}
TOL = {torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, **({"bf16": torch.bfloat16} if torch.cuda.is_available() else {})}


def on(dev, *groups):
    """Each argument (a tensor or a list of tensors) moved to `dev`."""
    return [[t.to(dev) for t in g] if isinstance(g, list) else g.to(dev) for g in groups]


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("case", list(CASES))
def test_triton_matches_float64_ref(case, dtype, kernel_device):
    assert max(CASES["d2-b33"][3]) > HMAX
    E, B, d_in, hidden, d_out, widths = CASES[case]
    x, Ws, bs, masks = make_pack(E, B, d_in, hidden, d_out, widths)
    x, Ws, bs = x.to(dtype), [w.to(dtype) for w in Ws], [b.to(dtype) for b in bs]    # the values both see
    dy = torch.randn(E, B, d_out, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_grad = case != "d2-out20"                                     # also the path with no dx kernel
    y, g = grads(packed_mlp_triton, *on(kernel_device, x, Ws, bs, [m.to(dtype) for m in masks], dy), x_grad)
    y64, g64 = grads(packed_mlp_ref, x.double(), [w.double() for w in Ws], [b.double() for b in bs], masks, dy,
                     x_grad)
    assert y.dtype == dtype and y.shape == (E, B, d_out)
    names = (["x"] if x_grad else []) + [f"W{i}" for i in range(len(Ws))] + [f"b{i}" for i in range(len(bs))]
    for name, a, b in [("y", y, y64), *zip(names, g, g64)]:
        assert a.dtype == dtype and a.shape == b.shape, name
        err = (a.double().cpu() - b).abs().max().item()
        assert err <= TOL[dtype] * (1 + b.abs().max().item()), f"{name}: max err {err:.3g}"


@pytest.mark.parametrize("case", ["d2-b33", "d3-b33"])
def test_masked_units_are_exact(case, kernel_device):
    """Padded units output exactly 0 and get exactly 0 gradient; padded weights never change the output."""
    E, B, d_in, hidden, d_out, widths = CASES[case]
    x, Ws, bs, masks = make_pack(E, B, d_in, hidden, d_out, widths)
    x, Ws, bs, masks = on(kernel_device, x.float(), [w.float() for w in Ws], [b.float() for b in bs],
                          [m.float() for m in masks])
    dy = torch.randn(E, B, d_out, device=kernel_device)
    y, g = grads(packed_mlp_triton, x, Ws, bs, masks, dy)
    L = len(Ws)
    dWs, dbs = g[1:1 + L], g[1 + L:]
    for i, wid in enumerate(widths):
        for e, n in enumerate(wid):
            assert (dWs[i][e, :, n:] == 0).all() and (dbs[i][e, n:] == 0).all(), (i, e)
            assert (dWs[i + 1][e, n:, :] == 0).all(), (i, e)                     # rows fed by padded units
            assert dWs[i][e, :, :n].abs().sum() > 0                             # not vacuous
    junk = [w.clone() for w in Ws], [b.clone() for b in bs]
    for i, wid in enumerate(widths):
        for e, n in enumerate(wid):
            junk[0][i][e, :, n:] = 1e3
            junk[1][i][e, n:] = 1e3
            junk[0][i + 1][e, n:, :] = -1e3
    assert torch.equal(packed_mlp_triton(x, *junk, masks), y.detach())


@pytest.mark.parametrize("case", ["d2-b33", "d3-b33", "d3-b1"])
def test_ref_matches_naive_per_member(case):
    E, B, d_in, hidden, d_out, widths = CASES[case]
    x, Ws, bs, masks = make_pack(E, B, d_in, hidden, d_out, widths)
    torch.testing.assert_close(packed_mlp_ref(x, Ws, bs, masks), naive(x, Ws, bs, widths))
    # adapter layout: masks (E, 1, H) as ftcore.adapters.additive_relu stores them
    torch.testing.assert_close(packed_mlp_ref(x, Ws, bs, [m.unsqueeze(1) for m in masks]), naive(x, Ws, bs, widths))


def test_tf32_setting_takes_the_tf32_configuration(kernel_device):
    """torch's "high" matmul precision launches the PREC="tf32" kernels (exact in the interpreter)."""
    E, B, d_in, hidden, d_out, widths = CASES["d3-b1"]
    x, Ws, bs, masks = make_pack(E, B, d_in, hidden, d_out, widths)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        dy = torch.ones(E, B, d_out)
        y, g = grads(packed_mlp_triton, *on(kernel_device, x.float(), [w.float() for w in Ws], [b.float() for b in bs],
                                             [m.float() for m in masks], dy))
    finally:
        torch.set_float32_matmul_precision(before)
    y64, g64 = grads(packed_mlp_ref, x, Ws, bs, masks, dy)
    for a, b in zip((y, *g), (y64, *g64)):
        torch.testing.assert_close(a.double().cpu(), b, rtol=1e-2 if a.is_cuda else 1e-4,
                                   atol=1e-2 if a.is_cuda else 1e-4)


def test_rejects_bad_arguments():
    x, Ws, bs, masks = make_pack(2, 4, 3, [8], OMAX + 1, [[8, 2]])
    with pytest.raises(ValueError, match="out must be"):
        packed_mlp_triton(x.float(), [w.float() for w in Ws], [b.float() for b in bs], masks)
    with pytest.raises(ValueError, match="len\\(masks\\)"):
        packed_mlp_ref(x, Ws, bs, [])


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_public_entry_matches_ref_and_records_it(impl, kernel_device, monkeypatch):
    """`packed_mlp` under each FTCORE_KERNELS choice (triton: the interpreter on CPU) equals the ref, and the
    dispatch record says which path ran."""
    x, Ws, bs, masks = make_pack(2, 5, 3, [20], 2, [[20, 4]])
    x, Ws, bs, masks = on(kernel_device, x.float(), [w.float() for w in Ws], [b.float() for b in bs],
                          [m.float() for m in masks])
    monkeypatch.setenv("FTCORE_KERNELS", impl)
    dispatch.reset_ops()
    torch.testing.assert_close(packed_mlp(x, Ws, bs, masks), packed_mlp_ref(x, Ws, bs, masks))
    assert dispatch.ops_ran() == {"packed_mlp": impl}


def test_output_wider_than_64_takes_the_ref_under_forced_triton(kernel_device, monkeypatch):
    """out > OMAX is outside the kernels: the reference runs and is recorded, even with FTCORE_KERNELS=triton."""
    x, Ws, bs, masks = make_pack(2, 5, 3, [8], OMAX + 1, [[8, 2]])
    x, Ws, bs, masks = on(kernel_device, x.float(), [w.float() for w in Ws], [b.float() for b in bs],
                          [m.float() for m in masks])
    monkeypatch.setenv("FTCORE_KERNELS", "triton")
    monkeypatch.setattr(P, "packed_mlp_triton", None)                  # any call into the kernels would crash
    dispatch.reset_ops()
    torch.testing.assert_close(packed_mlp(x, Ws, bs, masks), packed_mlp_ref(x, Ws, bs, masks))
    assert dispatch.ops_ran() == {"packed_mlp": "torch"}


@pytest.mark.parametrize("layout", ["EH", "E1H"])
@pytest.mark.parametrize("case", list(CASES))
def test_torch_path_matches_autograd_through_the_ref(case, layout):
    """packed_mlp_torch (the CPU path: the ref's ops, backward written by hand) vs autograd through packed_mlp_ref:
    output and every gradient (dx with and without) in float64 to rounding, and in fp32; masks as (E, H) or as the
    adapter stores them (E, 1, H); masked units get exactly zero gradient."""
    E, B, d_in, hidden, d_out, widths = CASES[case]
    x, Ws, bs, masks = make_pack(E, B, d_in, hidden, d_out, widths)
    masks = masks if layout == "EH" else [m.unsqueeze(1) for m in masks]
    dy = torch.randn(E, B, d_out, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for x_grad in (True, False):
        for dt, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
            args = x.to(dt), [w.to(dt) for w in Ws], [b.to(dt) for b in bs], [m.to(dt) for m in masks], dy.to(dt)
            y, g = grads(packed_mlp_torch, *args, x_grad)
            y_ref, g_ref = grads(packed_mlp_ref, *args, x_grad)
            for a, b in zip((y, *g), (y_ref, *g_ref)):
                assert a.dtype == dt and a.shape == b.shape
                torch.testing.assert_close(a, b, rtol=tol, atol=tol)
        dWs, dbs = g[-2 * len(Ws):-len(Ws)], g[-len(Ws):]
        for i, wid in enumerate(widths):
            for e, n in enumerate(wid):
                assert (dWs[i][e, :, n:] == 0).all() and (dbs[i][e, n:] == 0).all() and (dWs[i + 1][e, n:] == 0).all()
