"""ftkernels.selective_scan: the Triton path (on the GPU when there is one, else interpreted on CPU:
`kernel_device`) vs a float64 evaluation of the reference on CPU (outputs and every input gradient), the
reference vs a naive per-scalar unrolled scan, per-row A/D/bias, and which path the public entry takes."""
import math

import pytest
import torch

pytest.importorskip("triton")
from ftkernels import dispatch
from ftkernels import selective_scan as S

TOL = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}      # max error / (max |ref| + 1)
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if torch.cuda.is_available() else [])  # bf16: GPU only
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _inputs(Bt, Dm, N, L, dtype, D=True, z=True, bias=True, per_row=False, seed=0):
    """u, delta, A, B, C, D, z, delta_bias: O(1) activations, Δ ~ 0.1–1, A negative (a stable scan)."""
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g)
    lead = (Bt,) if per_row else ()
    ins = {"u": r(Bt, Dm, L), "delta": r(Bt, Dm, L) * 0.5 - 1.0, "A": -torch.rand(*lead, Dm, N, generator=g) - 0.2,
           "B": r(Bt, N, L) * 0.5, "C": r(Bt, N, L) * 0.5, "D": r(*lead, Dm) if D else None,
           "z": r(Bt, Dm, L) if z else None, "delta_bias": r(*lead, Dm) * 0.3 if bias else None}
    x = {k: (v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v) for k, v in ins.items() if v is not None}
    return {k: x.get(k) for k in NAMES}


def _run(fn, ins, dtype, softplus, dy, device="cpu"):
    """Output and gradients wrt every given input, inputs cast to `dtype` (None: as they are) on `device`."""
    leaves = {k: None if v is None else v.detach().to(device=device, dtype=dtype or v.dtype).requires_grad_(True)
              for k, v in ins.items()}
    y = fn(*[leaves[k] for k in NAMES], delta_softplus=softplus)
    used = [k for k in NAMES if leaves[k] is not None]
    grads = torch.autograd.grad(y, [leaves[k] for k in used], dy.to(device=y.device, dtype=y.dtype))
    return y, dict(zip(used, grads))


def _close(got, ref, tol, what):
    assert got.shape == ref.shape, what
    err = (got.double().cpu() - ref.cpu()).abs().max().item()
    assert err <= tol * (ref.abs().max().item() + 1), f"{what}: max error {err:.3g}"


CASES = [  # Bt, Dm, N, L, D, z, bias, softplus
    (1, 3, 4, 1, True, True, True, True),
    (3, 16, 16, 7, False, False, False, False),
    (3, 3, 16, 33, True, False, True, True),
    (1, 16, 4, 33, False, True, False, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Bt,Dm,N,L,D,z,bias,softplus", CASES)
def test_triton_matches_float64_ref(dtype, Bt, Dm, N, L, D, z, bias, softplus, kernel_device):
    ins = _inputs(Bt, Dm, N, L, dtype, D, z, bias)
    dy = torch.randn(Bt, Dm, L, generator=torch.Generator().manual_seed(1))
    y, grads = _run(S.selective_scan_triton, ins, None, softplus, dy, kernel_device)
    y6, grads6 = _run(S.selective_scan_ref, ins, torch.float64, softplus, dy)
    assert y.dtype == dtype
    _close(y, y6, TOL[dtype], "out")
    assert grads.keys() == grads6.keys()
    for k in grads:
        assert grads[k].dtype == ins[k].dtype, k
        _close(grads[k], grads6[k], TOL[dtype] * 4, f"d{k}")


def test_triton_per_row_params_and_multi_chunk(kernel_device):
    """A (Bt, Dm, N), D and delta_bias (Bt, Dm) — a pack folded into the batch — over 2+ chunks and
    2 channel blocks (Dm > BLOCK_D = 64), N in the 64-wide tile."""
    ins = _inputs(2, 66, 20, S.CHUNK * 2 + 3, torch.float32, per_row=True, seed=3)
    dy = torch.randn(2, 66, S.CHUNK * 2 + 3, generator=torch.Generator().manual_seed(4))
    y, grads = _run(S.selective_scan_triton, ins, None, True, dy, kernel_device)
    y6, grads6 = _run(S.selective_scan_ref, ins, torch.float64, True, dy)
    _close(y, y6, TOL[torch.float32], "out")
    for k in grads:
        _close(grads[k], grads6[k], TOL[torch.float32] * 4, f"d{k}")


def test_triton_mixed_shared_and_per_row_params(kernel_device):
    """Shared A and delta_bias with a per-row D (one is expanded in the launcher to share a stride)."""
    ins = _inputs(2, 5, 4, 9, torch.float32, seed=7)
    ins["D"] = torch.randn(2, 5, generator=torch.Generator().manual_seed(8))
    dy = torch.randn(2, 5, 9, generator=torch.Generator().manual_seed(9))
    y, grads = _run(S.selective_scan_triton, ins, None, False, dy, kernel_device)
    y6, grads6 = _run(S.selective_scan_ref, ins, torch.float64, False, dy)
    _close(y, y6, TOL[torch.float32], "out")
    for k in grads:
        _close(grads[k], grads6[k], TOL[torch.float32] * 4, f"d{k}")


def _naive(ins, softplus):
    """Python floats, one scalar at a time: discretise (Ā = exp(ΔA), B̄ = ΔB) then unroll the recurrence."""
    u, dl, A, B, C = (ins[k].double().tolist() for k in ("u", "delta", "A", "B", "C"))
    D, z, bias = (None if ins[k] is None else ins[k].double().tolist() for k in ("D", "z", "delta_bias"))
    Bt, Dm, L, N = len(u), len(u[0]), len(u[0][0]), len(A[0])
    out = torch.zeros(Bt, Dm, L, dtype=torch.float64)
    for b in range(Bt):
        for d in range(Dm):
            h = [0.0] * N
            for t in range(L):
                x = dl[b][d][t] + (bias[d] if bias else 0.0)
                delta = math.log1p(math.exp(x)) if softplus else x
                Abar = [math.exp(delta * A[d][n]) for n in range(N)]
                Bbar = [delta * B[b][n][t] for n in range(N)]
                h = [Abar[n] * h[n] + Bbar[n] * u[b][d][t] for n in range(N)]
                y = sum(C[b][n][t] * h[n] for n in range(N)) + (D[d] * u[b][d][t] if D else 0.0)
                if z:
                    zz = z[b][d][t]
                    y *= zz / (1.0 + math.exp(-zz))
                out[b, d, t] = y
    return out


@pytest.mark.parametrize("D,z,bias,softplus", [(True, True, True, True), (False, False, False, False)])
def test_ref_matches_naive(D, z, bias, softplus):
    ins = _inputs(2, 3, 4, 6, torch.float64, D, z, bias, seed=5)
    y = S.selective_scan_ref(*[ins[k] for k in NAMES], delta_softplus=softplus)
    torch.testing.assert_close(y, _naive(ins, softplus), rtol=1e-10, atol=1e-10)


def test_ref_per_row_params_equal_shared():
    """Expanding shared A/D/bias per batch row (the pack layout) changes nothing."""
    ins = _inputs(3, 4, 5, 6, torch.float64, seed=6)
    y = S.selective_scan_ref(*[ins[k] for k in NAMES], delta_softplus=True)
    rows = dict(ins, A=ins["A"].expand(3, 4, 5), D=ins["D"].expand(3, 4), delta_bias=ins["delta_bias"].expand(3, 4))
    torch.testing.assert_close(S.selective_scan_ref(*[rows[k] for k in NAMES], delta_softplus=True), y)


def test_public_entry_takes_ref_under_torch(monkeypatch, kernel_device):
    monkeypatch.setenv("FTCORE_KERNELS", "torch")
    monkeypatch.setattr(S, "selective_scan_triton", None)             # any call into the kernels would crash
    ins = {k: None if v is None else v.to(kernel_device) for k, v in _inputs(1, 3, 4, 5, torch.float32).items()}
    ref = S.selective_scan_ref(*[ins[k] for k in NAMES])
    dispatch.reset_ops()
    torch.testing.assert_close(S.selective_scan(*[ins[k] for k in NAMES]), ref)
    assert dispatch.ops_ran() == {"selective_scan": "torch"}


def test_public_entry_takes_triton_when_forced(monkeypatch, kernel_device):
    """FTCORE_KERNELS=triton (the interpreter on CPU) routes through the autograd.Function, and is recorded."""
    monkeypatch.setenv("FTCORE_KERNELS", "triton")
    ins = {k: None if v is None else v.to(kernel_device) for k, v in _inputs(1, 3, 4, 5, torch.float32).items()}
    ref = S.selective_scan_ref(*[ins[k] for k in NAMES], delta_softplus=True)
    monkeypatch.setattr(S, "selective_scan_ref", None)               # any fallback would crash
    dispatch.reset_ops()
    y = S.selective_scan(*[ins[k] for k in NAMES], delta_softplus=True)
    assert dispatch.ops_ran() == {"selective_scan": "triton"}
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
