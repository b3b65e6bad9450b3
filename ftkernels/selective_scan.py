"""Mamba (S6) selective scan, forward and backward (Gu & Dao 2023; mamba_ssm `selective_scan_ref`).

For each batch row b, channel d, state n, time t (one group, input-dependent "variable" B and C):

    Δ_t = softplus(delta[t] + delta_bias)   (softplus only if delta_softplus; delta_bias optional)
    a_t = exp(Δ_t A[d, n])
    h_t = a_t h_{t-1} + Δ_t B[t, n] u[t]                 h_{-1} = 0
    y_t = Σ_n C[t, n] h_t[n] + D[d] u[t]
    out_t = y_t silu(z[t])                               (only if z is given)

Backward (reverse time, dh = ∂L/∂h_t carried from the future):  g = dout silu(z) (or dout),
dz = dout y σ(z)(1 + z(1 − σ(z))),  dh += g C_t,  dC_t = Σ_d g h_t,  dD += g u,  du = g D + dt Σ_n dh B_t,
dA += dh h_{t−1} a_t Δ_t,  dΔ = Σ_n dh (h_{t−1} a_t A + u B_t),  dB_t = Σ_d dh Δ_t u,  then dh ← dh a_t;
ddelta = dΔ σ(delta + bias) under softplus, d delta_bias = Σ_t ddelta.

Shapes: u, delta, z: (Bt, Dm, L); B, C: (Bt, N, L); A: (Dm, N) shared, or (Bt, Dm, N) per batch row;
D, delta_bias: (Dm,) shared or (Bt, Dm) per batch row; out: (Bt, Dm, L) in u's dtype.
A pack of E members with its own weights folds the member axis into the batch: Bt' = E·Bt, and the
caller expands A (E, Dm, N) → (E·Bt, Dm, N) (`A[:, None].expand(E, Bt, Dm, N).reshape(-1, Dm, N)`),
likewise D and delta_bias; the gradient of the expanded tensor flows back through the expand (a sum).

Tiling.  One program per (batch row, block of BLOCK_D channels) keeps the state h (BLOCK_D, BLOCK_N) in
fp32 registers and walks time step by step: per step it loads one column of u/delta/z (BLOCK_D values) and
of B/C (BLOCK_N values), and fuses bias + softplus, exp(ΔA), the B·u update, the C·h readout, the D·u
skip and the silu gate; nothing of size L·N ever reaches memory.  Time is cut into chunks of CHUNK steps;
the forward stores the state at each chunk start (Bt, L/CHUNK, Dm, N) — the only thing saved besides
the inputs.  The backward walks chunks in reverse: it recomputes the chunk's states from the saved start
state into a small fp32 workspace (Bt, CHUNK+1, Dm, N) and then runs the adjoint recurrence backwards over
the chunk, reading h_{t−1}, h_t from it.  Per-(b, d) reductions over time (dA, dD, d delta_bias) stay in
registers; dB, dC (sums over d) are written per channel block into fp32 partials (Bt, nD, N, L) that
torch sums (deterministic, no atomics).  All arithmetic is fp32; inputs/outputs in u's dtype.

Not fused / limits: the per-step column loads are strided by L (coalescing relies on L1/L2 catching the
neighbouring time steps); N > 64 and complex A take the torch reference; one B/C group only; delta, B, C, z
are cast to u's dtype before the kernel (A, D, delta_bias go in as fp32); no initial/final state in/out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ftkernels import dispatch
from ftkernels._compat import tl, triton

CHUNK = 16              # time steps between saved states (the backward's workspace depth)
STATE_ELEMS = 1024      # BLOCK_D * BLOCK_N: the register-resident state tile
MAX_N = 64
FWD_WARPS = {16: 8, MAX_N: 4}   # by BLOCK_N: spill-free on sm_90 at every AOT shape (the other way round, each spills)
BWD_WARPS = 8                   # the backward holds ~6 state-sized tiles: 8 warps keeps it spill-free
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)      # u dtypes the kernels take (others: the reference)


# ----------------------------------------------------------------------------------------------- kernels
@triton.jit
def _step_inputs(u_ptr, dt_ptr, b_ptr, c_ptr, row, brow, t, bias, md, mn, softplus):
    """Column t: u, raw delta + bias, Δ (BLOCK_D,) and B_t, C_t (BLOCK_N,), all fp32."""
    u = tl.load(u_ptr + row + t, mask=md, other=0.0).to(tl.float32)
    raw = tl.load(dt_ptr + row + t, mask=md, other=0.0).to(tl.float32) + bias
    dt = raw
    if softplus != 0:
        dt = tl.where(raw > 20.0, raw, tl.log(1.0 + tl.exp(raw)))
    bt = tl.load(b_ptr + brow + t, mask=mn, other=0.0).to(tl.float32)
    ct = tl.load(c_ptr + brow + t, mask=mn, other=0.0).to(tl.float32)
    return u, raw, dt, bt, ct


@triton.jit
def _params(a_ptr, d_ptr, bias_ptr, pb, dd, nn, md, mn, Dm, N, s_ab, s_db, has_d, has_bias):
    """A (BLOCK_D, BLOCK_N), D and delta_bias (BLOCK_D,) of batch row pb (stride 0 when shared)."""
    a = tl.load(a_ptr + pb * s_ab + dd[:, None] * N + nn[None, :], mask=md[:, None] & mn[None, :], other=0.0)
    dv = tl.load(d_ptr + pb * s_db + dd, mask=dd < Dm * has_d, other=0.0)      # has_d = 0: all masked
    bias = tl.load(bias_ptr + pb * s_db + dd, mask=dd < Dm * has_bias, other=0.0)
    return a, dv, bias


@triton.jit
def _ss_fwd_kernel(u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, bias_ptr, z_ptr, y_ptr, hs_ptr,
                   Dm, N, L, s_ab, s_db, has_d, has_z, has_bias, softplus,
                   BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr):
    pb = tl.program_id(0).to(tl.int64)
    dd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    nn = tl.arange(0, BLOCK_N)
    md, mn = dd < Dm, nn < N
    a, dv, bias = _params(a_ptr, d_ptr, bias_ptr, pb, dd, nn, md, mn, Dm, N, s_ab, s_db, has_d, has_bias)
    row = pb * Dm * L + dd * L                                     # (BD,) offsets of u/delta/z/y rows
    brow = pb * N * L + nn * L                                     # (BN,) offsets of B/C rows
    n_chunks = tl.cdiv(L, CHUNK)
    hs_off = dd[:, None] * N + nn[None, :]                         # (BD, BN)
    h = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    for c in range(n_chunks):
        tl.store(hs_ptr + (pb * n_chunks + c) * Dm * N + hs_off, h, mask=md[:, None] & mn[None, :])
        for t in range(c * CHUNK, tl.minimum(c * CHUNK + CHUNK, L)):
            u, _raw, dt, bt, ct = _step_inputs(u_ptr, dt_ptr, b_ptr, c_ptr, row, brow, t, bias, md, mn, softplus)
            h = tl.exp(dt[:, None] * a) * h + (dt * u)[:, None] * bt[None, :]
            y = tl.sum(h * ct[None, :], axis=1) + dv * u
            if has_z != 0:
                z = tl.load(z_ptr + row + t, mask=md, other=0.0).to(tl.float32)
                y = y * z * tl.sigmoid(z)
            tl.store(y_ptr + row + t, y.to(y_ptr.dtype.element_ty), mask=md)


@triton.jit
def _ss_bwd_kernel(u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, bias_ptr, z_ptr, dy_ptr, hs_ptr, ws_ptr,
                   du_ptr, ddt_ptr, dz_ptr, db_ptr, dc_ptr, da_ptr, dd_ptr, dbias_ptr,
                   Dm, N, L, s_ab, s_db, has_d, has_z, has_bias, softplus,
                   BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr):
    pb = tl.program_id(0).to(tl.int64)
    pd = tl.program_id(1)
    n_dblk = tl.num_programs(1)
    dd = pd * BLOCK_D + tl.arange(0, BLOCK_D)
    nn = tl.arange(0, BLOCK_N)
    md, mn = dd < Dm, nn < N
    m2 = md[:, None] & mn[None, :]
    a, dv, bias = _params(a_ptr, d_ptr, bias_ptr, pb, dd, nn, md, mn, Dm, N, s_ab, s_db, has_d, has_bias)
    row = pb * Dm * L + dd * L
    brow = pb * N * L + nn * L
    prow = (pb * n_dblk + pd) * N * L + nn * L                     # (BN,) rows of the dB/dC partials
    n_chunks = tl.cdiv(L, CHUNK)
    st_off = dd[:, None] * N + nn[None, :]
    ws = ws_ptr + pb * (CHUNK + 1) * Dm * N + st_off               # (BD, BN) slot 0 of this program
    dh = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    da_acc = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    dd_acc = tl.zeros((BLOCK_D,), tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), tl.float32)
    for ci in range(n_chunks):
        c = n_chunks - 1 - ci
        t0 = c * CHUNK
        t1 = tl.minimum(t0 + CHUNK, L)
        h = tl.load(hs_ptr + (pb * n_chunks + c) * Dm * N + st_off, mask=m2, other=0.0)
        tl.store(ws, h, mask=m2)
        for t in range(t0, t1):                                    # recompute the chunk's states
            u, raw, dt, bt, ct = _step_inputs(u_ptr, dt_ptr, b_ptr, c_ptr, row, brow, t, bias, md, mn, softplus)
            h = tl.exp(dt[:, None] * a) * h + (dt * u)[:, None] * bt[None, :]
            tl.store(ws + (t - t0 + 1) * Dm * N, h, mask=m2)
        tl.debug_barrier()
        for i in range(t1 - t0):                                # adjoint, reverse time
            t = t1 - 1 - i
            u, raw, dt, bt, ct = _step_inputs(u_ptr, dt_ptr, b_ptr, c_ptr, row, brow, t, bias, md, mn, softplus)
            h_prev = tl.load(ws + (t - t0) * Dm * N, mask=m2, other=0.0)
            h = tl.load(ws + (t - t0 + 1) * Dm * N, mask=m2, other=0.0)
            g = tl.load(dy_ptr + row + t, mask=md, other=0.0).to(tl.float32)
            if has_z != 0:
                z = tl.load(z_ptr + row + t, mask=md, other=0.0).to(tl.float32)
                sz = tl.sigmoid(z)
                y = tl.sum(h * ct[None, :], axis=1) + dv * u
                tl.store(dz_ptr + row + t, (g * y * sz * (1.0 + z * (1.0 - sz))).to(dz_ptr.dtype.element_ty),
                         mask=md)
                g = g * z * sz
            dh += g[:, None] * ct[None, :]
            tl.store(dc_ptr + prow + t, tl.sum(g[:, None] * h, axis=0), mask=mn)
            dd_acc += g * u
            at = tl.exp(dt[:, None] * a)
            da_acc += dh * h_prev * at * dt[:, None]
            ddelta = tl.sum(dh * (h_prev * at * a + u[:, None] * bt[None, :]), axis=1)
            tl.store(db_ptr + prow + t, tl.sum(dh * (dt * u)[:, None], axis=0), mask=mn)
            du = g * dv + dt * tl.sum(dh * bt[None, :], axis=1)
            dh = dh * at
            if softplus != 0:
                ddelta = ddelta * tl.sigmoid(raw)
            dbias_acc += ddelta
            tl.store(du_ptr + row + t, du.to(du_ptr.dtype.element_ty), mask=md)
            tl.store(ddt_ptr + row + t, ddelta.to(ddt_ptr.dtype.element_ty), mask=md)
        tl.debug_barrier()                                         # the next chunk overwrites the workspace
    tl.store(da_ptr + pb * Dm * N + st_off, da_acc, mask=m2)
    tl.store(dd_ptr + pb * Dm + dd, dd_acc, mask=md)
    tl.store(dbias_ptr + pb * Dm + dd, dbias_acc, mask=md)


# --------------------------------------------------------------------------------------------- launchers
def _blocks(N: int) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_N): BLOCK_N 16 (Mamba's d_state) or 64, state tile of STATE_ELEMS fp32."""
    bn = 16 if N <= 16 else MAX_N
    return STATE_ELEMS // bn, bn


def _prepare(u, delta, A, B, C, D, z, delta_bias):
    Bt, Dm, L = u.shape
    N = A.shape[-1]
    x = u.dtype
    u, delta, B, C = (t.to(x).contiguous() for t in (u, delta, B, C))
    z = z.to(x).contiguous() if z is not None else None
    a32 = A.float().contiguous()
    s_ab = Dm * N if A.dim() == 3 else 0
    d32 = (D if D is not None else torch.zeros(Dm, device=u.device)).float().contiguous()
    b32 = (delta_bias if delta_bias is not None else torch.zeros(Dm, device=u.device)).float().contiguous()
    if d32.shape != b32.shape:                          # one stride for both: expand the shared one
        d32, b32 = (p.expand(Bt, Dm).contiguous() if p.dim() == 1 else p for p in (d32, b32))
    s_db = Dm if d32.dim() == 2 else 0
    return u, delta, a32, B, C, d32, b32, z, s_ab, s_db, (Bt, Dm, L, N)


class SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        u_, dt_, a32, B_, C_, d32, b32, z_, s_ab, s_db, (Bt, Dm, L, N) = _prepare(u, delta, A, B, C, D, z, delta_bias)
        BD, BN = _blocks(N)
        n_chunks = triton.cdiv(L, CHUNK)
        y = torch.empty_like(u_)
        hs = torch.empty(Bt, n_chunks, Dm, N, device=u.device, dtype=torch.float32)
        flags = (int(D is not None), int(z is not None), int(delta_bias is not None), int(bool(delta_softplus)))
        grid = (Bt, triton.cdiv(Dm, BD))
        _ss_fwd_kernel[grid](u_, dt_, a32, B_, C_, d32, b32, z_ if z_ is not None else u_, y, hs,
                             Dm, N, L, s_ab, s_db, *flags, BLOCK_D=BD, BLOCK_N=BN, CHUNK=CHUNK, num_warps=FWD_WARPS[BN])
        ctx.save_for_backward(u_, dt_, a32, B_, C_, d32, b32, z_, hs)
        ctx.meta = (s_ab, s_db, flags, [t.dtype if t is not None else None for t in (delta, A, B, C, D, z, delta_bias)],
                    A.dim(), None if D is None else D.dim(), None if delta_bias is None else delta_bias.dim())
        return y

    @staticmethod
    def backward(ctx, dy):
        u, dt, a32, B, C, d32, b32, z, hs = ctx.saved_tensors
        s_ab, s_db, flags, dtypes, a_dim, d_dim, bias_dim = ctx.meta
        Bt, Dm, L = u.shape
        N = a32.shape[-1]
        BD, BN = _blocks(N)
        n_dblk = triton.cdiv(Dm, BD)
        f32 = {"device": u.device, "dtype": torch.float32}
        ws = torch.empty(Bt, CHUNK + 1, Dm, N, **f32)
        du, ddt = torch.empty_like(u), torch.empty_like(u)
        dz = torch.empty_like(z) if z is not None else None
        db_p, dc_p = torch.empty(Bt, n_dblk, N, L, **f32), torch.empty(Bt, n_dblk, N, L, **f32)
        da_p, dd_p, dbias_p = torch.empty(Bt, Dm, N, **f32), torch.empty(Bt, Dm, **f32), torch.empty(Bt, Dm, **f32)
        _ss_bwd_kernel[(Bt, n_dblk)](u, dt, a32, B, C, d32, b32, z if z is not None else u, dy.contiguous(), hs, ws,
                                     du, ddt, dz if dz is not None else du, db_p, dc_p, da_p, dd_p, dbias_p,
                                     Dm, N, L, s_ab, s_db, *flags,
                                     BLOCK_D=BD, BLOCK_N=BN, CHUNK=CHUNK, num_warps=BWD_WARPS)
        dA = da_p if a_dim == 3 else da_p.sum(0)
        dD = None if d_dim is None else (dd_p if d_dim == 2 else dd_p.sum(0))
        dbias = None if bias_dim is None else (dbias_p if bias_dim == 2 else dbias_p.sum(0))
        t_delta, t_A, t_B, t_C, t_D, t_z, t_bias = dtypes
        return (du, ddt.to(t_delta), dA.to(t_A), db_p.sum(1).to(t_B), dc_p.sum(1).to(t_C),
                None if dD is None else dD.to(t_D), None if dz is None else dz.to(t_z),
                None if dbias is None else dbias.to(t_bias), None)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The Triton path, whatever the dispatch says (tests call this directly)."""
    return SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


# ---------------------------------------------------------------------------------------------- reference
def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Sequential loop over time, in fp32 (fp64 for fp64 inputs); returns u's dtype. Shapes: module docstring."""
    x = u.dtype
    ct = torch.promote_types(x, torch.float32)
    u, delta, A, B, C = (t.to(ct) for t in (u, delta, A, B, C))
    Bt, Dm, L = u.shape
    A = A.expand(Bt, *A.shape[-2:])                                # (Bt, Dm, N)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct).expand(Bt, Dm)[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(Bt, Dm, A.shape[-1])                           # (Bt, Dm, N)
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))                  # (Bt, Dm)
    y = torch.stack(ys, dim=-1)                                    # (Bt, Dm, L)
    if D is not None:
        y = y + D.to(ct).expand(Bt, Dm)[..., None] * u
    if z is not None:
        y = y * F.silu(z.to(ct))
    return y.to(x)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """out (Bt, Dm, L) = S6 selective scan (module docstring). Triton when dispatch says so and N ≤ 64."""
    fits = A.shape[-1] <= MAX_N and not A.is_complex() and u.dtype in _DTYPES
    if dispatch.decide("selective_scan", fits, u, delta, A, B, C):
        return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


# ------------------------------------------------------------------------------------------------- AOT
# label: (rows E·B, d_inner, d_state, L). ftcore.models.mamba calls the scan with D, z, delta_bias and softplus
# (flags = 1: the JIT makes them constexprs) and A, D, delta_bias per row. icl_context's Mamba (n_embd 64,
# d_inner 128, d_state 16, 2·11 tokens), mamba_icl's (n_embd 32, d_state 8), their gpu variants (n_embd 256,
# 82 tokens), and d_state 20 for the BLOCK_N = 64 tiles (no shipped sweep has one).
AOT_SHAPES = {
    "icl_context mamba": (3 * 64, 128, 16, 22),
    "mamba_icl": (3 * 32, 64, 8, 40),
    "icl_context gpu": (64, 512, 16, 82),
    "d_state 20": (4, 66, 20, 35),
}


def aot_calls() -> list:
    """(label, call): forward + backward of the Triton path on meta tensors at AOT_SHAPES, u in fp32/bf16 (fp16 at
    one shape), as ftcore.models.mamba calls it, for `ftkernels.aot` to capture."""
    from ftkernels.aot_calls import backward, meta

    def call(Bt, Dm, N, L, dt):
        def run():
            u, delta, z = (meta(Bt, Dm, L, dtype=dt, grad=True) for _ in range(3))
            B, C = meta(Bt, N, L, dtype=dt, grad=True), meta(Bt, N, L, dtype=dt, grad=True)
            A, D, bias = meta(Bt, Dm, N, grad=True), meta(Bt, Dm, grad=True), meta(Bt, Dm, grad=True)
            backward(selective_scan_triton(u, delta, A, B, C, D, z, bias, True))
        return run
    out = [(f"{label} {str(dt)[6:]}", call(*shape, dt)) for label, shape in AOT_SHAPES.items()
           for dt in (torch.float32, torch.bfloat16)]
    return out + [("icl_context mamba fp16", call(*AOT_SHAPES["icl_context mamba"], torch.float16))]
