"""ftkernels.lora_linear: the Triton path (on the GPU when there is one, else interpreted on CPU: the
`kernel_device` fixture) vs a float64 evaluation of the reference on CPU, the reference vs independent naive
computations, padded-rank entries, and which path the public entries take (recorded by ftkernels.dispatch)."""

import pytest
import torch

pytest.importorskip("triton")
from ftkernels import lora_linear as L

TOL = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}      # max error / (max |ref| + 1)
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if torch.cuda.is_available() else [])  # bf16: GPU only
RANKS = [0, 1, 15, 16, 33, 64]                         # mixed, a 0, every slot count, a full pack


def _close(got, ref, dtype):
    assert got.dtype == dtype and got.shape == ref.shape
    err = (got.double().cpu() - ref.cpu()).abs().max().item()
    assert err <= TOL[dtype] * (ref.abs().max().item() + 1), f"max error {err:.3g}"


def _pack(E, M, K, N, R, dtype, bias=True, seed=0):
    """Inputs of a grouped problem, scaled so activations stay O(1) (fp16-safe)."""
    g = torch.Generator().manual_seed(seed)

    def r(*s, std=1.0):
        return (torch.randn(*s, generator=g) * std).to(dtype)
    x = r(E, M, K)
    W = r(E, K, N, std=K ** -0.5)
    b = r(E, N) if bias else None
    down = r(E, K, R, std=K ** -0.5)
    up = r(E, R, N, std=max(R, 1) ** -0.5)
    scale = torch.rand(E, generator=g) + 0.5
    return x, W, b, down, up, scale


def _grads(fn, tensors, args, dy):
    """Output and d(output·dy)/d(tensors that require grad)."""
    y = fn(*args)
    return y, torch.autograd.grad(y, [t for t in tensors if t is not None and t.requires_grad], dy)


def _leaves(ts, dtype=None, need=True, device=None):
    return [None if t is None else t.detach().to(device=device, dtype=dtype or t.dtype).requires_grad_(need)
            for t in ts]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N,bias", [(1, 7, 5, True), (37, 33, 40, False), (65, 16, 17, True)])
def test_grouped_triton_matches_float64_ref(dtype, M, K, N, bias, kernel_device):
    E, R = len(RANKS), 64
    x, W, b, down, up, scale = _pack(E, M, K, N, R, dtype, bias)
    ranks = torch.tensor(RANKS)
    dy = torch.randn(E, M, N, generator=torch.Generator().manual_seed(1)).to(dtype)
    xt, bt, dt, ut = _leaves([x, b, down, up], device=kernel_device)
    y, grads = _grads(L.grouped_lora_linear_triton, [xt, bt, dt, ut],
                      (xt, W.to(kernel_device), bt, dt, ut, scale.to(kernel_device), ranks.to(kernel_device)),
                      dy.to(kernel_device))
    x6, b6, d6, u6 = _leaves([x, b, down, up], torch.float64)
    y6, grads6 = _grads(L.grouped_lora_linear_ref, [x6, b6, d6, u6],
                        (x6, W.double(), b6, d6, u6, scale.double(), ranks), dy.double())
    _close(y, y6, dtype)
    for got, ref in zip(grads, grads6):
        _close(got, ref, dtype)
    d_down, d_up = grads[-2:]
    for e, r in enumerate(RANKS):      # padding gets exactly zero gradient
        assert torch.all(d_down[e, :, r:] == 0) and torch.all(d_up[e, r:, :] == 0)
        assert r == 0 or d_up[e, :r].abs().sum() > 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,K,N,R,bias", [((1,), 7, 5, 1, True), ((37,), 33, 40, 64, False),
                                             ((2, 5), 33, 5, 17, True)])
def test_single_triton_matches_float64_ref(dtype, lead, K, N, R, bias, kernel_device):
    x, W, b, down, up, _ = _pack(1, 1, K, N, R, dtype, bias)
    x = torch.randn(*lead, K, generator=torch.Generator().manual_seed(2)).to(dtype)
    W, b, down, up = W[0], None if b is None else b[0], down[0], up[0]
    dy = torch.randn(*lead, N, generator=torch.Generator().manual_seed(3)).to(dtype)
    xt, bt, dt, ut = _leaves([x, b, down, up], device=kernel_device)
    ts = [t for t in (xt, bt, dt, ut) if t is not None]
    y, grads = _grads(L.lora_linear_triton, ts, (xt, W.to(kernel_device), bt, dt, ut, 2.0), dy.to(kernel_device))
    x6, b6, d6, u6 = _leaves([x, b, down, up], torch.float64)
    ts6 = [t for t in (x6, b6, d6, u6) if t is not None]
    y6, grads6 = _grads(L.lora_linear_ref, ts6, (x6, W.double(), b6, d6, u6, 2.0), dy.double())
    _close(y, y6, dtype)
    for got, ref in zip(grads, grads6):
        _close(got, ref, dtype)


@pytest.mark.parametrize("trainable", ["W,b,down", "down,up"])
def test_triton_partial_requires_grad_and_trainable_W(trainable, kernel_device):
    """x without grad (g then comes from torch), W with grad (dW unfused), b with grad but up frozen
    (db from torch), bias without grad."""
    x, W, b, down, up, scale = _pack(3, 20, 24, 18, 32, torch.float32)
    ranks = torch.tensor([32, 5, 0])
    names = ("W", "b", "down", "up")
    Wt, bt, dt, ut = [t.detach().to(kernel_device).requires_grad_(n in trainable.split(","))
                      for n, t in zip(names, (W, b, down, up))]
    dy = torch.randn(3, 20, 18)
    y, grads = _grads(L.grouped_lora_linear_triton, [Wt, bt, dt, ut],
                      (x.to(kernel_device), Wt, bt, dt, ut, scale.to(kernel_device), ranks.to(kernel_device)),
                      dy.to(kernel_device))
    W6, b6, d6, u6 = [t.detach().double().requires_grad_(t.requires_grad) for t in (Wt, bt, dt, ut)]
    y6, grads6 = _grads(L.grouped_lora_linear_ref, [W6, b6, d6, u6],
                        (x.double(), W6, b6, d6, u6, scale.double(), ranks), dy.double())
    assert len(grads) == len(trainable.split(","))
    _close(y, y6, torch.float32)
    for got, ref in zip(grads, grads6):
        _close(got, ref, torch.float32)


@pytest.mark.parametrize("impl", ["triton", "ref"])
def test_padding_has_no_effect(impl, kernel_device):
    """NaN in padded columns/rows changes nothing: the kernels' loads and the ref's mask both skip them."""
    fn = L.grouped_lora_linear_triton if impl == "triton" else L.grouped_lora_linear_ref
    x, W, b, down, up, scale = (t.to(kernel_device) for t in _pack(3, 9, 16, 12, 32, torch.float32))
    ranks = torch.tensor([3, 0, 20], device=kernel_device)
    y = fn(x, W, b, down, up, scale, ranks)
    down_nan, up_nan = down.clone(), up.clone()
    for e, r in enumerate(ranks.tolist()):
        down_nan[e, :, r:] = float("nan")
        up_nan[e, r:] = float("nan")
    dt, ut = _leaves([down_nan, up_nan])
    y_nan = fn(x, W, b, dt, ut, scale, ranks)
    assert torch.equal(y, y_nan)
    d_down, d_up = torch.autograd.grad(y_nan, (dt, ut), torch.ones_like(y))
    for e, r in enumerate(ranks.tolist()):
        assert torch.all(d_down[e, :, r:] == 0) and torch.all(d_up[e, r:] == 0)
    assert torch.isfinite(d_down).all() and torch.isfinite(d_up).all()


def test_grouped_ref_matches_naive_member_loop():
    """The masked bmm reference vs slicing each member's adapter to its rank, grads included."""
    E, M, K, N, R = len(RANKS), 11, 9, 7, 64
    x, W, b, down, up, scale = _pack(E, M, K, N, R, torch.float64)
    ranks = torch.tensor(RANKS)
    dy = torch.randn(E, M, N, dtype=torch.float64)
    leaves = _leaves([x, b, down, up])
    y, grads = _grads(L.grouped_lora_linear_ref, leaves, (leaves[0], W, leaves[1], leaves[2], leaves[3], scale, ranks), dy)
    xn, bn, dn, un = _leaves([x, b, down, up])
    ys = [xn[e] @ W[e] + bn[e] + scale[e] * (xn[e] @ dn[e][:, :r]) @ un[e][:r] for e, r in enumerate(RANKS)]
    naive = torch.autograd.grad(torch.stack(ys), [xn, bn, dn, un], dy, allow_unused=True, materialize_grads=True)
    torch.testing.assert_close(y, torch.stack(ys).detach())
    for got, ref in zip(grads, naive):
        torch.testing.assert_close(got, ref)


def test_single_ref_matches_merged_weight():
    """x W + b + s (x down) up == x (W + s down up) + b, the merged-adapter form (peft's delta_weight)."""
    x, W, b, down, up, _ = _pack(1, 13, 10, 6, 4, torch.float64)
    W, b, down, up = W[0], b[0], down[0], up[0]
    torch.testing.assert_close(L.lora_linear_ref(x[0], W, b, down, up, 0.7), x[0] @ (W + 0.7 * down @ up) + b)


def test_triton_checks():
    x, W, b, down, up, scale = _pack(2, 4, 8, 8, 65, torch.float32)
    with pytest.raises(ValueError, match="rank storage"):
        L.grouped_lora_linear_triton(x, W, b, down, up, scale, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="share one of"):
        L.grouped_lora_linear_triton(x, W.double(), b, down[..., :8], up[:, :8], scale, torch.tensor([1, 2]))


@pytest.mark.parametrize("R,dtype,want", [(8, torch.float32, "triton"), (64, torch.float32, "triton"),
                                          (65, torch.float32, "torch"), (0, torch.float32, "torch"),
                                          (8, torch.float64, "torch")])
def test_public_entry_takes_and_records_the_path(R, dtype, want, kernel_device, monkeypatch):
    """With FTCORE_KERNELS=triton, a call inside the kernels' limits runs Triton; rank storage 0 (a pack of rank-0
    members) or above 64, or a dtype the kernels lack, runs the reference — and the dispatch record says which."""
    from ftkernels import dispatch
    monkeypatch.setenv("FTCORE_KERNELS", "triton")
    x, W, b, down, up, scale = (t.to(kernel_device, dtype) for t in _pack(2, 4, 8, 8, R, torch.float32))
    ranks = torch.tensor([R, R // 2], device=kernel_device)
    ref = L.grouped_lora_linear_ref(x, W, b, down, up, scale, ranks)
    if want == "torch":          # any call into the kernels would crash
        monkeypatch.setattr(L, "grouped_lora_linear_triton", None)
    dispatch.reset_ops()
    y = L.grouped_lora_linear(x, W, b, down, up, scale, ranks)
    assert dispatch.ops_ran() == {"lora_linear": want}
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    single = L.lora_linear(x[0], W[0], b[0], down[0], up[0], 0.5)
    assert dispatch.take_ops() == f'{{"lora_linear": "{want}"}}' and dispatch.ops_ran() == {}
    torch.testing.assert_close(single, L.lora_linear_ref(x[0], W[0], b[0], down[0], up[0], 0.5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_launch_choices(dtype, monkeypatch, kernel_device):
    """The choices the launchers make on a big problem on a GPU, forced on a small one (in the interpreter on CPU):
    big 128×128 tiles and an M-split weight-gradient reduction (partial sums per split, tail split shorter)."""
    monkeypatch.setattr(L, "_num_sms", lambda device: 64)
    monkeypatch.setattr(L, "_MIN_BLOCKS_PER_SPLIT", 1)
    if dtype == torch.float16:
        monkeypatch.setattr(L, "_mm_tiles", lambda *a: L._MM_TILES["big"])
    E, M, K, N = 2, 150, 20, 130
    x, W, b, down, up, scale = _pack(E, M, K, N, 48, dtype)
    ranks = torch.tensor([48, 7])
    dy = torch.randn(E, M, N, generator=torch.Generator().manual_seed(4)).to(dtype)
    leaves = _leaves([x, b, down, up], device=kernel_device)
    y, grads = _grads(L.grouped_lora_linear_triton, leaves,
                      (leaves[0], W.to(kernel_device), leaves[1], leaves[2], leaves[3], scale.to(kernel_device),
                       ranks.to(kernel_device)), dy.to(kernel_device))
    l6 = _leaves([x, b, down, up], torch.float64)
    y6, grads6 = _grads(L.grouped_lora_linear_ref, l6, (l6[0], W.double(), l6[1], l6[2], l6[3], scale.double(), ranks),
                        dy.double())
    _close(y, y6, dtype)
    for got, ref in zip(grads, grads6):
        _close(got, ref, dtype)
