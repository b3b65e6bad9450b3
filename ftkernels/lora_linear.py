"""Fused LoRA linear, forward and backward, single adapter and grouped (a pack of E members).

Weight layout is (in, out): y = x W.  Per member e (rank r_e ≤ R, scale s_e; only the first r_e columns of
`down` / rows of `up` are live, the rest is padding with exactly zero effect and zero gradient):

    z  = x down                                  # (M, R)   saved for backward (small: M×R)
    y  = x W + b + s z up                        # (M, N)
    g  = dy upᵀ                                  # (M, R)
    dx = dy Wᵀ + s g downᵀ                       # (M, K)
    d_up = s zᵀ dy,   d_down = s xᵀ g,   db = Σ_m dy,   dW = xᵀ dy (torch, only if W.requires_grad)

Shapes (grouped): x (E, M, K), W (E, K, N), b (E, N), down (E, K, R), up (E, R, N), scale (E,), ranks (E,).
The single adapter is the grouped op with E = 1.

Tiling. `_lora_mm_kernel` computes out = a B + s (a C) D (+ bias) with one program per (N-tile, M-tile, member):
the K loop loads an `a` tile once and feeds both the base dot a·B and the low-rank dot a·C, then adds
s (a C) D and the bias and stores once.  It serves the forward (a=x, B=W, C=down, D=up) and dx
(a=dy, B=Wᵀ, C=upᵀ, D=downᵀ, via strides), and the N-tile-0 programs also store a·C: z in the forward,
g in dx.  `_lora_wgrad_kernel` computes out[e, r, c] = s Σ_m l[e, m, r] rhs[e, m, c] (d_up: l=z, rhs=dy;
d_down: l=g, rhs=x, stored transposed), one program per (C-tile, M-split, member), partial sums per
M-split into an fp32 workspace summed in torch (deterministic, unlike atomics); its dy pass also yields db.

Ragged ranks.  The rank axis is cut into 4 slots of RT = 16 columns (tl.dot needs every dim ≥ 16 for
16-bit inputs).  Each member computes its live-slot count ceil(r_e / RT) from `ranks`; dead slots skip
both their loads and their dot at run time, so a rank-1 member in a pack padded to 64 costs one slot,
not four.  Slots are static accumulators rather than a grid over (member, slot) pairs so that x and dy
are read once per program, not once per rank tile.  Loads of live slots are masked by r < r_e, so
padding (even NaN) never enters, and padded gradient entries are written as exact zeros.

Why save z instead of recomputing it: z is M×R (R ≤ 64) while recomputing it re-reads x (M×K) in the
backward; g is produced by the dx kernel for free.  Accumulation is fp32, outputs are in the input
dtype; fp32 inputs use 3xTF32 dots, or one TF32 pass when torch allows TF32 (get_float32_matmul_precision).
"""
from __future__ import annotations

import torch

from ftkernels import dispatch
from ftkernels._compat import tl, triton

RT = 16                 # rank tile (columns per slot)
SLOTS = 4               # rank-tile slots per member (z0..z3 in the kernels)
MAX_RANK = RT * SLOTS   # 64: larger ranks take the torch reference


# ----------------------------------------------------------------------------------------------- kernels
@triton.jit
def _live(t: tl.constexpr, nt):
    """Slot 0 runs unconditionally (its masked loads are free for a rank-0 member): Triton only software-
    pipelines loads feeding a dot outside any runtime branch, so slot 0 keeps the loop pipelined."""
    if t == 0:
        return True
    else:
        return t < nt


@triton.jit
def _slot_dot(acc, lhs, b_ptr, ii, I, t: tl.constexpr, nt, rank, s_bi, s_br, RT: tl.constexpr,
              PREC: tl.constexpr):
    """acc (BM, RT) += lhs (BM, BI) @ B[ii, slot t] when slot t is live (slot 0 always runs, see _live): the
    forward's z = a @ C[kk, slot] and the weight gradient's rhsᵀ @ l[mm, slot] are this one product."""
    if _live(t, nt):
        rr = t * RT + tl.arange(0, RT)
        b = tl.load(b_ptr + ii[:, None] * s_bi + rr[None, :] * s_br,
                    mask=(ii[:, None] < I) & (rr[None, :] < rank), other=0.0)
        acc = tl.dot(lhs, b, acc, input_precision=PREC)
    return acc


@triton.jit
def _slot_up(acc, z, s, d_ptr, nn, N, t: tl.constexpr, nt, rank, s_dr, s_dn, RT: tl.constexpr,
             PREC: tl.constexpr):
    """acc (BM, BN) += (s z) (BM, RT) @ D[slot t, nn] when slot t is live."""
    if _live(t, nt):
        rr = t * RT + tl.arange(0, RT)
        d = tl.load(d_ptr + rr[:, None] * s_dr + nn[None, :] * s_dn,
                    mask=(rr[:, None] < rank) & (nn[None, :] < N), other=0.0)
        acc = tl.dot((z * s).to(d.dtype), d, acc, input_precision=PREC)
    return acc


@triton.jit
def _slot_store_z(z_ptr, z, mm, M, R, t: tl.constexpr, s_zm, s_zr, RT: tl.constexpr):
    """Store slot t of z (dead slots hold zeros, so every r < R is written)."""
    rr = t * RT + tl.arange(0, RT)
    tl.store(z_ptr + mm[:, None] * s_zm + rr[None, :] * s_zr, z.to(z_ptr.dtype.element_ty),
             mask=(mm[:, None] < M) & (rr[None, :] < R))


@triton.jit
def _lora_mm_kernel(a_ptr, b_ptr, c_ptr, d_ptr, bias_ptr, y_ptr, z_ptr, scale_ptr, rank_ptr,
                    M, N, K, R, HAS_BIAS,
                    s_ae, s_am, s_ak, s_be, s_bk, s_bn, s_ce, s_ck, s_cr, s_de, s_dr, s_dn,
                    s_biase, s_biasn, s_ye, s_ym, s_yn, s_ze, s_zm, s_zr,
                    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, RT: tl.constexpr,
                    PREC: tl.constexpr):
    """y[e] = a[e] B[e] + s_e (a[e] C[e]) D[e] (+ bias[e]);  z[e] = a[e] C[e] from the N-tile-0 programs."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    e = tl.program_id(2).to(tl.int64)
    rank = tl.minimum(tl.load(rank_ptr + e), R)
    nt = tl.cdiv(rank, RT)                      # live slots of this member
    s = tl.load(scale_ptr + e)
    a_ptr += e * s_ae
    b_ptr += e * s_be
    c_ptr += e * s_ce
    d_ptr += e * s_de
    mm = pid_m * BM + tl.arange(0, BM)
    nn = pid_n * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), tl.float32)
    z0 = tl.zeros((BM, RT), tl.float32)
    z1 = tl.zeros((BM, RT), tl.float32)
    z2 = tl.zeros((BM, RT), tl.float32)
    z3 = tl.zeros((BM, RT), tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + tl.arange(0, BK)
        a = tl.load(a_ptr + mm[:, None] * s_am + kk[None, :] * s_ak,           # (BM, BK), read once
                    mask=(mm[:, None] < M) & (kk[None, :] < K), other=0.0)
        b = tl.load(b_ptr + kk[:, None] * s_bk + nn[None, :] * s_bn,           # (BK, BN)
                    mask=(kk[:, None] < K) & (nn[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PREC)
        z0 = _slot_dot(z0, a, c_ptr, kk, K, 0, nt, rank, s_ck, s_cr, RT, PREC)
        z1 = _slot_dot(z1, a, c_ptr, kk, K, 1, nt, rank, s_ck, s_cr, RT, PREC)
        z2 = _slot_dot(z2, a, c_ptr, kk, K, 2, nt, rank, s_ck, s_cr, RT, PREC)
        z3 = _slot_dot(z3, a, c_ptr, kk, K, 3, nt, rank, s_ck, s_cr, RT, PREC)
    acc = _slot_up(acc, z0, s, d_ptr, nn, N, 0, nt, rank, s_dr, s_dn, RT, PREC)
    acc = _slot_up(acc, z1, s, d_ptr, nn, N, 1, nt, rank, s_dr, s_dn, RT, PREC)
    acc = _slot_up(acc, z2, s, d_ptr, nn, N, 2, nt, rank, s_dr, s_dn, RT, PREC)
    acc = _slot_up(acc, z3, s, d_ptr, nn, N, 3, nt, rank, s_dr, s_dn, RT, PREC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + e * s_biase + nn * s_biasn, mask=nn < N, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    tl.store(y_ptr + e * s_ye + mm[:, None] * s_ym + nn[None, :] * s_yn, acc.to(y_ptr.dtype.element_ty),
             mask=(mm[:, None] < M) & (nn[None, :] < N))
    if pid_n == 0:
        z_ptr += e * s_ze
        _slot_store_z(z_ptr, z0, mm, M, R, 0, s_zm, s_zr, RT)
        _slot_store_z(z_ptr, z1, mm, M, R, 1, s_zm, s_zr, RT)
        _slot_store_z(z_ptr, z2, mm, M, R, 2, s_zm, s_zr, RT)
        _slot_store_z(z_ptr, z3, mm, M, R, 3, s_zm, s_zr, RT)


@triton.jit
def _slot_store_w(o_ptr, acc, s, cc, C, R, t: tl.constexpr, s_or, s_oc, RT: tl.constexpr):
    rr = t * RT + tl.arange(0, RT)
    tl.store(o_ptr + rr[None, :] * s_or + cc[:, None] * s_oc, acc * s, mask=(cc[:, None] < C) & (rr[None, :] < R))


@triton.jit
def _lora_wgrad_kernel(l_ptr, r_ptr, o_ptr, cs_ptr, scale_ptr, rank_ptr,
                       M, C, R, m_per_split, HAS_COLSUM,
                       s_le, s_lm, s_lr, s_re, s_rm, s_rc, s_os, s_oe, s_or, s_oc, s_css, s_cse, s_csc,
                       BM: tl.constexpr, BC: tl.constexpr, RT: tl.constexpr,
                       PREC: tl.constexpr):
    """o[p, e, r, c] = s_e Σ_{m in split p} l[e, m, r] rhs[e, m, c];  cs[p, e, c] = Σ_{m in split p} rhs[e, m, c]."""
    pid_c = tl.program_id(0)
    p = tl.program_id(1)
    e = tl.program_id(2).to(tl.int64)
    rank = tl.minimum(tl.load(rank_ptr + e), R)
    nt = tl.cdiv(rank, RT)
    s = tl.load(scale_ptr + e)
    l_ptr += e * s_le
    r_ptr += e * s_re
    cc = pid_c * BC + tl.arange(0, BC)
    acc0 = tl.zeros((BC, RT), tl.float32)
    acc1 = tl.zeros((BC, RT), tl.float32)
    acc2 = tl.zeros((BC, RT), tl.float32)
    acc3 = tl.zeros((BC, RT), tl.float32)
    colsum = tl.zeros((BC,), tl.float32)
    m_lo = p * m_per_split
    m_hi = tl.minimum(m_lo + m_per_split, M)
    for m0 in range(m_lo, m_hi, BM):
        mm = m0 + tl.arange(0, BM)
        rt = tl.load(r_ptr + cc[:, None] * s_rc + mm[None, :] * s_rm,              # rhsᵀ (BC, BM), read once
                     mask=(cc[:, None] < C) & (mm[None, :] < m_hi), other=0.0)
        if HAS_COLSUM:
            colsum += tl.sum(rt.to(tl.float32), axis=1)
        acc0 = _slot_dot(acc0, rt, l_ptr, mm, m_hi, 0, nt, rank, s_lm, s_lr, RT, PREC)
        acc1 = _slot_dot(acc1, rt, l_ptr, mm, m_hi, 1, nt, rank, s_lm, s_lr, RT, PREC)
        acc2 = _slot_dot(acc2, rt, l_ptr, mm, m_hi, 2, nt, rank, s_lm, s_lr, RT, PREC)
        acc3 = _slot_dot(acc3, rt, l_ptr, mm, m_hi, 3, nt, rank, s_lm, s_lr, RT, PREC)
    o_ptr += p * s_os + e * s_oe
    _slot_store_w(o_ptr, acc0, s, cc, C, R, 0, s_or, s_oc, RT)
    _slot_store_w(o_ptr, acc1, s, cc, C, R, 1, s_or, s_oc, RT)
    _slot_store_w(o_ptr, acc2, s, cc, C, R, 2, s_or, s_oc, RT)
    _slot_store_w(o_ptr, acc3, s, cc, C, R, 3, s_or, s_oc, RT)
    if HAS_COLSUM:
        tl.store(cs_ptr + p * s_css + e * s_cse + cc * s_csc, colsum, mask=cc < C)


# --------------------------------------------------------------------------------------------- launchers
_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# (BM, BN, BK, num_warps) for _lora_mm_kernel; (BM, BC, num_warps) for _lora_wgrad_kernel
# BK: fp32 16 (its 3xTF32 dots split every operand in two; at 32 the dx build spills on sm_90), big tiles 32 (at
# 64 the 16-bit forward spills)
_MM_TILES = {"big": (128, 128, 32, 8), "small": (64, 64, 32, 4), "fp32": (64, 64, 16, 4)}
_WG_TILES = {"16bit": (64, 128, 4), "fp32": (32, 64, 4)}
_MIN_BLOCKS_PER_SPLIT = 8


def _prec(dtype: torch.dtype) -> str:
    """fp32 dot precision following torch's matmul setting: 3xTF32 (fp32-level accuracy on tensor cores;
    a plain-FMA "ieee" dot spills at these tiles) for "highest", one TF32 pass otherwise."""
    if dtype != torch.float32:
        return "ieee"                       # ignored for 16-bit inputs
    return "tf32x3" if torch.get_float32_matmul_precision() == "highest" else "tf32"


_SMS_OFF_GPU = 1        # SMs planned for off a GPU: 1 in the interpreter (fewest programs); aot.capture: an H100's


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return _SMS_OFF_GPU


def _mm_tiles(dtype: torch.dtype, E: int, M: int, N: int, device: torch.device) -> tuple[int, int, int, int]:
    if dtype == torch.float32:
        return _MM_TILES["fp32"]
    big, sms = _MM_TILES["big"], _num_sms(device)
    n_big = E * triton.cdiv(M, big[0]) * triton.cdiv(N, big[1])
    return big if sms > 1 and n_big >= 2 * sms else _MM_TILES["small"]


def _mm(a, B, C, D, bias, scale, ranks):
    """out = a B + s (a C) D (+ bias), z = a C per member.  a (E, M, K), B (E, K, N), C (E, K, R),
    D (E, R, N), bias (E, N) or None -> out (E, M, N), z (E, M, R); any strides."""
    E, M, K = a.shape
    N, R = B.shape[2], C.shape[2]
    y = torch.empty((E, M, N), dtype=a.dtype, device=a.device)
    z = torch.empty((E, M, R), dtype=a.dtype, device=a.device)
    if y.numel() == 0:
        return y, z.zero_()
    BM, BN, BK, warps = _mm_tiles(a.dtype, E, M, N, a.device)
    # Without a bias the pointer is a dummy; stride 1 keeps the JIT specialization the same as with one.
    bias_t, bias_st = (bias, bias.stride()) if bias is not None else (y, (0, 1))
    grid = (triton.cdiv(N, BN), triton.cdiv(M, BM), E)
    _lora_mm_kernel[grid](a, B, C, D, bias_t, y, z, scale, ranks, M, N, K, R, int(bias is not None),
                          *a.stride(), *B.stride(), *C.stride(), *D.stride(), *bias_st, *y.stride(), *z.stride(),
                          BM=BM, BN=BN, BK=BK, RT=RT, PREC=_prec(a.dtype), num_warps=warps)
    return y, z


def _wgrad(lhs, rhs, scale, ranks, transpose_out: bool, colsum: bool):
    """out[e] = s_e lhs[e]ᵀ rhs[e] (R, C), or its transpose (C, R); lhs (E, M, R), rhs (E, M, C).
    Also Σ_m rhs[e] (E, C) when colsum.  Returned in rhs's dtype; padded rank entries are exact zeros."""
    E, M, R = lhs.shape
    C = rhs.shape[2]
    BM, BC, warps = _WG_TILES["fp32" if rhs.dtype == torch.float32 else "16bit"]
    c_tiles, m_blocks = triton.cdiv(C, BC), triton.cdiv(M, BM)
    # Split the M reduction so the grid fills the GPU, keeping enough M-blocks per split (small workspace).
    splits = max(1, min(2 * _num_sms(rhs.device) // (E * c_tiles), m_blocks // _MIN_BLOCKS_PER_SPLIT))
    m_per_split = triton.cdiv(m_blocks, splits) * BM
    splits = triton.cdiv(M, m_per_split) if M else 1
    shape = (splits, E, C, R) if transpose_out else (splits, E, R, C)
    ws = (torch.empty if M else torch.zeros)(shape, dtype=torch.float32, device=rhs.device)
    cs = (torch.empty if M else torch.zeros)((splits, E, C), dtype=torch.float32, device=rhs.device) if colsum else ws
    cs_st = cs.stride() if colsum else (0, 0, 1)       # a dummy; unit stride keeps one JIT specialization
    if M and C:
        s_or, s_oc = (ws.stride(3), ws.stride(2)) if transpose_out else (ws.stride(2), ws.stride(3))
        grid = (c_tiles, splits, E)
        _lora_wgrad_kernel[grid](lhs, rhs, ws, cs, scale, ranks, M, C, R, m_per_split, int(colsum),
                                 *lhs.stride(), *rhs.stride(), ws.stride(0), ws.stride(1), s_or, s_oc, *cs_st,
                                 BM=BM, BC=BC, RT=RT, PREC=_prec(rhs.dtype), num_warps=warps)
    out = (ws[0] if splits == 1 else ws.sum(0)).to(rhs.dtype)
    return out, ((cs[0] if splits == 1 else cs.sum(0)).to(rhs.dtype) if colsum else None)


def _rank_mask(ranks: torch.Tensor, R: int) -> torch.Tensor:
    return torch.arange(R, device=ranks.device) < ranks[:, None]               # (E, R) bool


class _GroupedLoraFn(torch.autograd.Function):
    """Triton path of grouped_lora_linear; inputs already validated and 3-D."""

    @staticmethod
    def forward(ctx, x, W, b, down, up, scale, ranks):
        y, z = _mm(x, W, down, up, b, scale, ranks)
        ctx.save_for_backward(x, W, down, up, z, scale, ranks)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, W, down, up, z, scale, ranks = ctx.saved_tensors
        need_x, need_w, need_b, need_down, need_up = ctx.needs_input_grad[:5]
        dx = dW = db = d_down = d_up = g = None
        if need_x:   # dx = dy Wᵀ + s (dy upᵀ) downᵀ, and g = dy upᵀ on the side
            dx, g = _mm(dy, W.transpose(1, 2), up.transpose(1, 2), down.transpose(1, 2), None, scale, ranks)
        elif need_down:
            up_m = torch.where(_rank_mask(ranks, up.shape[1])[:, :, None], up, 0.0)
            g = torch.bmm(dy, up_m.transpose(1, 2))
        if need_w:   # frozen W is the fast case; a trainable one is correct but unfused
            dW = torch.bmm(x.transpose(1, 2), dy)
        if need_up:
            d_up, db = _wgrad(z, dy, scale, ranks, transpose_out=False, colsum=need_b)
        elif need_b:
            db = dy.sum(1, dtype=torch.float32).to(dy.dtype)
        if need_down:
            d_down, _ = _wgrad(g, x, scale, ranks, transpose_out=True, colsum=False)
        return dx, dW, db, d_down, d_up, None, None


def _check(x, W, b, down, up):
    if x.dim() != 3 or W.dim() != 3 or down.dim() != 3 or up.dim() != 3:
        raise ValueError("grouped_lora_linear: x, W, down, up must be 3-D (member axis first)")
    E, _, K = x.shape
    N, R = W.shape[2], down.shape[2]
    if W.shape != (E, K, N) or down.shape != (E, K, R) or up.shape != (E, R, N):
        raise ValueError(f"lora_linear: shapes x {tuple(x.shape)}, W {tuple(W.shape)}, down {tuple(down.shape)}, "
                         f"up {tuple(up.shape)} do not match x (E,M,K) W (E,K,N) down (E,K,R) up (E,R,N)")
    if b is not None and b.shape != (E, N):
        raise ValueError(f"lora_linear: bias must be ({E}, {N}), got {tuple(b.shape)}")
    if not 1 <= R <= MAX_RANK:
        raise ValueError(f"lora_linear (triton): rank storage R must be in [1, {MAX_RANK}], got {R}")
    ts = [t for t in (x, W, b, down, up) if t is not None]
    if x.dtype not in _TRITON_DTYPE or any(t.dtype != x.dtype for t in ts):
        raise ValueError(f"lora_linear (triton): x, W, b, down, up must share one of fp32/fp16/bf16, got "
                         f"{[t.dtype for t in ts]}")
    if any(t.numel() // max(t.shape[0], 1) >= 2**31 for t in ts) or x.shape[1] * N >= 2**31:
        raise ValueError("lora_linear (triton): a member's tensor has ≥ 2**31 elements (i32 offsets)")


# -------------------------------------------------------------------------------------------- public API
def _fits(x: torch.Tensor, down: torch.Tensor, *ts: torch.Tensor | None) -> bool:
    """Inside the kernels' limits: rank storage 1..64 (a pack whose largest rank is 0 has no low-rank path
    worth a kernel: the reference's base GEMM is the whole op) and one fp32/fp16/bf16 dtype for all inputs."""
    return (1 <= down.shape[-1] <= MAX_RANK and x.dtype in _TRITON_DTYPE
            and all(t is None or t.dtype == x.dtype for t in (down, *ts)))


def grouped_lora_linear_triton(x, W, b, down, up, scale, ranks):
    """Triton path of grouped_lora_linear (called directly by the tests)."""
    _check(x, W, b, down, up)
    scale = scale.to(device=x.device, dtype=torch.float32).contiguous()
    ranks = ranks.to(device=x.device, dtype=torch.int32).contiguous()
    return _GroupedLoraFn.apply(x, W, b, down, up, scale, ranks)


def lora_linear_triton(x, W, b, down, up, scale: float):
    """Triton path of lora_linear: x (..., K) -> (..., N); the grouped kernels with E = 1."""
    K, N, R = W.shape[0], W.shape[1], down.shape[1]
    scale_t = torch.full((1,), float(scale), dtype=torch.float32, device=x.device)
    ranks = torch.full((1,), R, dtype=torch.int32, device=x.device)
    y = grouped_lora_linear_triton(x.reshape(1, -1, K), W[None], None if b is None else b[None],
                                   down[None], up[None], scale_t, ranks)
    return y.reshape(*x.shape[:-1], N)


def lora_linear(x, W, b, down, up, scale: float):
    """y = x W + b + scale · (x down) up.  x (..., K), W (K, N) frozen, b (N,) or None, down (K, R), up (R, N).
    Under torch.autocast the inputs are cast to its dtype first (as autocast casts a matmul's)."""
    x, W, b, down, up = dispatch.autocast_inputs(x, W, b, down, up)
    if dispatch.decide("lora_linear", _fits(x, down, W, b, up), *(t for t in (x, W, b, down, up) if t is not None)):
        return lora_linear_triton(x, W, b, down, up, scale)
    return lora_linear_ref(x, W, b, down, up, scale)


def grouped_lora_linear(x, W, b, down, up, scale, ranks):
    """Per member e: y[e] = x[e] W[e] + b[e] + scale[e] (x[e] down[e, :, :r_e]) up[e, :r_e].
    x (E, M, K), W (E, K, N), b (E, N) or None, down (E, K, R), up (E, R, N), scale (E,), ranks (E,) int.
    A shared frozen base (multi-LoRA: one copy of W for the pack) is W (1, K, N) and b (1, N): the Triton kernels
    read it through a stride-0 member axis, the reference runs the base as one GEMM over all E·M rows.
    Under torch.autocast the inputs are cast to its dtype first. R = 0 or R > 64 takes the reference."""
    E = x.shape[0]
    if W.shape[0] == 1 and E > 1:
        W = W.expand(E, -1, -1)
    if b is not None and b.shape[0] == 1 and E > 1:
        b = b.expand(E, -1)
    x, W, b, down, up = dispatch.autocast_inputs(x, W, b, down, up)
    if dispatch.decide("lora_linear", _fits(x, down, W, b, up), *(t for t in (x, W, b, down, up) if t is not None)):
        return grouped_lora_linear_triton(x, W, b, down, up, scale, ranks)
    return grouped_lora_linear_ref(x, W, b, down, up, scale, ranks)


def lora_linear_ref(x, W, b, down, up, scale: float):
    """Plain torch, in the input dtype (PEFT's LoraLayer without dropout, weights stored (in, out))."""
    y = x @ W + scale * ((x @ down) @ up)
    return y if b is None else y + b


def grouped_lora_linear_ref(x, W, b, down, up, scale, ranks):
    """Plain torch, in the input dtype.  Padded rank entries are masked out with `where`, so they have
    exactly zero effect (even if they hold NaN) and receive exactly zero gradient."""
    R = down.shape[2]
    live = torch.arange(R, device=x.device) < ranks.to(x.device)[:, None]          # (E, R)
    down_m = torch.where(live[:, None, :], down, torch.zeros((), dtype=down.dtype, device=down.device))
    up_m = torch.where(live[:, :, None], up, torch.zeros((), dtype=up.dtype, device=up.device))
    s = scale.to(device=x.device, dtype=x.dtype)[:, None, None]                    # (E, 1, 1)
    if W.stride(0) == 0 or (W.shape[0] == 1 and x.shape[0] > 1):                 # shared base: one GEMM, E·M rows
        E, M, K = x.shape
        base = (x.reshape(E * M, K) @ W[0]).reshape(E, M, -1)
        base = base if b is None else base + b[:, None, :]
    else:
        base = torch.bmm(x, W) if b is None else torch.baddbmm(b[:, None, :], x, W)    # (E, M, N), as PackedMLP.linear
    return base + s * torch.bmm(torch.bmm(x, down_m), up_m)                        # (E, M, N)


# --------------------------------------------------------------------------------------------- AOT calls
# label: (E, M, K, N, R, shared frozen base, bias, backward). The shipped LoRA-teacher sweeps (lora_rank,
# lora_threshold, lora_linear: an MLP of width 8, batch 256, validation 1000 and test 5000 rows, ranks up to the
# width, a shared frozen base) and their `gpu` variants (width 16), an HF-style transformer projection (rows
# B·T, n_embd 64), and an LLM projection (one member, 4096², rank 64: the 16-bit big tiles on an H100).
AOT_SHAPES = {
    "teacher train (width 8)": (12, 256, 8, 8, 8, True, True, True),
    "teacher val (width 8)": (12, 1000, 8, 8, 8, True, True, False),
    "teacher test (width 8)": (12, 5000, 8, 8, 8, True, True, False),
    "lora_linear train (no bias)": (12, 256, 8, 8, 8, True, False, True),
    "teacher gpu train (width 16)": (15, 256, 16, 16, 16, True, True, True),
    "hf projection (n_embd 64)": (4, 8 * 33, 64, 192, 8, True, True, True),
    "llm projection (4096², r 64)": (1, 4096, 4096, 4096, 64, False, False, True),
}
AOT_PRECISIONS = ("fp32", "tf32", "bf16")


def aot_calls() -> list:
    """(label, call): the Triton path forward (and backward) on meta tensors at AOT_SHAPES in fp32, tf32 and bf16
    (the train.precision values) — for `ftkernels.aot` to capture as the JIT would specialise it."""
    from ftkernels.aot_calls import at_precision, backward, meta

    def call(E, M, K, N, R, shared, bias, bwd):
        def run(dt):
            x = meta(E, M, K, dtype=dt, grad=bwd)
            W = meta(1, K, N, dtype=dt).expand(E, K, N) if shared else meta(E, K, N, dtype=dt)
            b = meta(E, N, dtype=dt, grad=bwd) if bias else None
            down, up = meta(E, K, R, dtype=dt, grad=bwd), meta(E, R, N, dtype=dt, grad=bwd)
            y = grouped_lora_linear_triton(x, W, b, down, up, meta(E), meta(E, dtype=torch.int32))
            if bwd:
                backward(y)
        return run
    out = [(f"{label} {p}", at_precision(p, call(*shape))) for label, shape in AOT_SHAPES.items()
           for p in AOT_PRECISIONS]
    return out
