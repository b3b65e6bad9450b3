"""`packed_mlp`: the additive ReLU adapter g of a whole pack (E members) as fused Triton kernels.

    h_0 = x;  h_{i+1} = relu(h_i W_i + b_i) * mask_i   (hidden layers)
    g   = h_{L-1} W_{L-1} + b_{L-1}                    (output layer, no relu)

Shapes: x (E, B, in), W_i (E, fan_in_i, H_i), b_i (E, H_i), mask_i (E, H_i) or (E, 1, H_i) float 0/1 (member
e uses its first width_e units; a masked unit outputs exactly 0 and gets exactly zero gradient), W_out
(E, H, out), b_out (E, out). L = 2 (one hidden layer) or 3 (two). Sizes are small: in 8..64, H <= 512,
out 1..64, B 16..1024, E <= 256 — launch- and memory-bound, so the point is to touch memory once.

Forward (fully fused):
* `_pair_fwd_kernel` = the last hidden layer + the output layer. One program per (member, B-tile) loops
  over H-chunks of BLOCK_H: pre = x W1[:, chunk] + b1 (K-loop over fan_in), h = relu(pre) * mask, and
  y += h W2[chunk, :] — the hidden activation lives in registers and never goes to global memory. The
  only write is y (E, B, out).
* depth 3: `_linear_relu_fwd_kernel` (per (member, B-tile, H-tile): linear + bias + ReLU + mask) writes
  h_1 (it is the pair's input and must exist anyway), then the pair kernel.
Saved for backward: nothing beyond the inputs (and h_1 for depth 3). The pair's pre-activation is
RECOMPUTED in backward (one x W1 tile product in each backward kernel) instead of writing (E, B, H) in
forward and reading it back: with tensor-core dots (16-bit, TF32) the FLOPs are cheaper than that memory
pass; under exact fp32 (FMA dots) it is closer to even, but the forward stays a single write of y.

Backward (deterministic: every reduction over B is a loop inside one program, no atomics):
* `_pair_bwd_w_kernel`, one program per (member, H-chunk, fan_in-chunk) looping over B-tiles:
  recompute pre, active = (pre > 0) & mask, h; d_h = (dy W2ᵀ) ⊙ active; dW2 += hᵀ dy, db1 += Σ d_h,
  db2 += Σ dy, dW1 += xᵀ d_h. dW2/db1/db2 are stored by the fan_in-chunk-0 program only (the others
  recompute them redundantly; with fan_in <= BLOCK_K there is one chunk, the common case).
* `_pair_bwd_dx_kernel`, one program per (member, B-tile, fan_in-chunk) looping over H-chunks:
  dx = Σ_chunks d_h W1ᵀ (d_h recomputed again). Launched only when dx is needed: for depth 3 the pair's
  input is h_1 = relu(pre_0) * mask_0, and `gate=1` multiplies by (h_1 > 0) (== relu'(pre_0) ⊙ mask_0),
  so it writes d pre_0 directly.
* depth 3: `_linear_bwd_w_kernel` (per (member, fan_in-tile, H-tile), B-loop) gives dW0 = xᵀ d pre_0 and
  db0 = Σ d pre_0. dx = d pre_0 W0ᵀ, needed only when x requires grad (it is data for the adapter), is a
  plain torch.bmm: a bare GEMM with no epilogue to fuse, which cuBLAS does as well as we would.

Tiles (one set, so the AOT list stays short): BLOCK_B = 32 rows, BLOCK_K = 16 fan_in chunk, BLOCK_H = HMAX = 64
hidden chunk (H <= 64 is one tile, larger H loops — still on chip), BLOCK_O = 16 (out <= 16) or 64 covers all
of out (OMAX = 64; wider outputs take the reference path). Every tl.dot dim is >= 16 (masked padding).
8 warps, 1 stage, BLOCK_K = 16: with 4 warps, software pipelining or a 32-wide fan_in chunk the fp32 backward
kernels spill (ptxas, sm_90; `python -m ftkernels.aot` fails on a spill); like this no AOT build spills.
Accumulation is fp32; 16-bit inputs are multiplied in their dtype (the hidden tile is cast the way the reference
rounds it). fp32 dots follow torch's matmul precision:
exact ("ieee") under the default "highest", TF32 when the user allows it — what torch.baddbmm would do.
bf16 is compiled (AOT) but wrong in the interpreter (DESIGN.md §6): tested on a GPU only.
"""
from __future__ import annotations

import torch

from ftkernels import dispatch
from ftkernels._compat import tl, triton

BLOCK_B = 32         # rows per tile / per B-loop step
BLOCK_K = 16         # fan_in chunk (K-loop in the pre-activation; grid dim of the backward kernels)
HMAX = 64            # hidden chunk: H <= HMAX is one tile, larger H loops over chunks (all on chip)
OMAX = 64            # out must fit one tile: BLOCK_O = 16 (out <= 16) or 64
LAUNCH = {"num_warps": 8, "num_stages": 1}   # same options in the launchers and in aot_configs()


@triton.jit
def _pre_tile(x_ptr, w_ptr, b_ptr, offs_b, offs_h, B, K, H, BLOCK_K: tl.constexpr, PREC: tl.constexpr):
    """(BLOCK_B, BLOCK_H) fp32 pre-activation x[offs_b, :] @ W[:, offs_h] + b[offs_h], K-loop over fan_in."""
    acc = tl.zeros((offs_b.shape[0], offs_h.shape[0]), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_b[:, None] * K + offs_k[None, :],
                    mask=(offs_b[:, None] < B) & (offs_k[None, :] < K), other=0.0)          # (BB, BK)
        w = tl.load(w_ptr + offs_k[:, None] * H + offs_h[None, :],
                    mask=(offs_k[:, None] < K) & (offs_h[None, :] < H), other=0.0)          # (BK, BH)
        acc = tl.dot(x, w, acc, input_precision=PREC)
    b = tl.load(b_ptr + offs_h, mask=offs_h < H, other=0.0).to(tl.float32)
    return acc + b[None, :]


@triton.jit
def _keep(m_ptr, offs_h, H):
    """(BLOCK_H,) bool: unit is inside this member's width (padding beyond H counts as masked)."""
    return tl.load(m_ptr + offs_h, mask=offs_h < H, other=0.0) > 0


@triton.jit
def _linear_relu_fwd_kernel(x_ptr, w_ptr, b_ptr, m_ptr, h_ptr, B, K, H,
                            BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr, PREC: tl.constexpr):
    e = tl.program_id(0).to(tl.int64)
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(2) * BLOCK_H + tl.arange(0, BLOCK_H)
    pre = _pre_tile(x_ptr + e * B * K, w_ptr + e * K * H, b_ptr + e * H, offs_b, offs_h, B, K, H, BLOCK_K, PREC)
    h = tl.where((pre > 0) & _keep(m_ptr + e * H, offs_h, H)[None, :], pre, 0.0)
    tl.store(h_ptr + e * B * H + offs_b[:, None] * H + offs_h[None, :], h.to(h_ptr.dtype.element_ty),
             mask=(offs_b[:, None] < B) & (offs_h[None, :] < H))


@triton.jit
def _pair_fwd_kernel(x_ptr, w1_ptr, b1_ptr, m_ptr, w2_ptr, b2_ptr, y_ptr, B, K, H, O,
                     BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_O: tl.constexpr,
                     PREC: tl.constexpr):
    e = tl.program_id(0).to(tl.int64)
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_o = tl.arange(0, BLOCK_O)
    x_ptr += e * B * K
    w1_ptr += e * K * H
    w2_ptr += e * H * O
    acc = tl.zeros((BLOCK_B, BLOCK_O), tl.float32)                                             # y tile
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        pre = _pre_tile(x_ptr, w1_ptr, b1_ptr + e * H, offs_b, offs_h, B, K, H, BLOCK_K, PREC)     # (BB, BH)
        h = tl.where((pre > 0) & _keep(m_ptr + e * H, offs_h, H)[None, :], pre, 0.0)
        w2 = tl.load(w2_ptr + offs_h[:, None] * O + offs_o[None, :],
                     mask=(offs_h[:, None] < H) & (offs_o[None, :] < O), other=0.0)           # (BH, BO)
        acc = tl.dot(h.to(w2.dtype), w2, acc, input_precision=PREC)
    acc += tl.load(b2_ptr + e * O + offs_o, mask=offs_o < O, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + e * B * O + offs_b[:, None] * O + offs_o[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(offs_b[:, None] < B) & (offs_o[None, :] < O))


@triton.jit
def _pair_bwd_w_kernel(x_ptr, w1_ptr, b1_ptr, m_ptr, w2_ptr, dy_ptr, dw1_ptr, db1_ptr, dw2_ptr, db2_ptr,
                       B, K, H, O, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr,
                       BLOCK_O: tl.constexpr, PREC: tl.constexpr):
    e = tl.program_id(0).to(tl.int64)
    pid_h = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_o = tl.arange(0, BLOCK_O)
    x_ptr += e * B * K
    dy_ptr += e * B * O
    keep = _keep(m_ptr + e * H, offs_h, H)[None, :]
    w2t = tl.load(w2_ptr + e * H * O + offs_h[None, :] * O + offs_o[:, None],
                  mask=(offs_h[None, :] < H) & (offs_o[:, None] < O), other=0.0)              # (BO, BH) = W2ᵀ
    dw1 = tl.zeros((BLOCK_K, BLOCK_H), tl.float32)
    dw2 = tl.zeros((BLOCK_H, BLOCK_O), tl.float32)
    db1 = tl.zeros((BLOCK_H,), tl.float32)
    db2 = tl.zeros((BLOCK_O,), tl.float32)
    for b0 in range(0, B, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B)
        pre = _pre_tile(x_ptr, w1_ptr + e * K * H, b1_ptr + e * H, offs_b, offs_h, B, K, H, BLOCK_K, PREC)
        active = (pre > 0) & keep                                                             # relu' ⊙ mask
        dy = tl.load(dy_ptr + offs_b[:, None] * O + offs_o[None, :],
                     mask=(offs_b[:, None] < B) & (offs_o[None, :] < O), other=0.0)           # (BB, BO)
        dh = tl.where(active, tl.dot(dy, w2t, input_precision=PREC), 0.0)                   # (BB, BH)
        h = tl.where(active, pre, 0.0).to(dy.dtype)
        dw2 = tl.dot(tl.trans(h), dy, dw2, input_precision=PREC)
        db1 += tl.sum(dh, 0)
        db2 += tl.sum(dy.to(tl.float32), 0)
        xt = tl.load(x_ptr + offs_b[None, :] * K + offs_k[:, None],
                     mask=(offs_b[None, :] < B) & (offs_k[:, None] < K), other=0.0)           # (BK, BB) = xᵀ
        dw1 = tl.dot(xt, dh.to(xt.dtype), dw1, input_precision=PREC)
    tl.store(dw1_ptr + e * K * H + offs_k[:, None] * H + offs_h[None, :], dw1.to(dw1_ptr.dtype.element_ty),
             mask=(offs_k[:, None] < K) & (offs_h[None, :] < H))
    # dW2, db1, db2 do not depend on the fan_in chunk: only chunk 0 stores them (bounds set to 0 elsewhere)
    h_lim = tl.where(pid_k == 0, H, 0)
    o_lim = tl.where((pid_k == 0) & (pid_h == 0), O, 0)
    tl.store(dw2_ptr + e * H * O + offs_h[:, None] * O + offs_o[None, :], dw2.to(dw2_ptr.dtype.element_ty),
             mask=(offs_h[:, None] < h_lim) & (offs_o[None, :] < O))
    tl.store(db1_ptr + e * H + offs_h, db1.to(db1_ptr.dtype.element_ty), mask=offs_h < h_lim)
    tl.store(db2_ptr + e * O + offs_o, db2.to(db2_ptr.dtype.element_ty), mask=offs_o < o_lim)


@triton.jit
def _pair_bwd_dx_kernel(x_ptr, w1_ptr, b1_ptr, m_ptr, w2_ptr, dy_ptr, dx_ptr, gate, B, K, H, O,
                        BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr,
                        BLOCK_O: tl.constexpr, PREC: tl.constexpr):
    e = tl.program_id(0).to(tl.int64)
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_k = tl.program_id(2) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_o = tl.arange(0, BLOCK_O)
    x_ptr += e * B * K
    w1_ptr += e * K * H
    w2_ptr += e * H * O
    dy = tl.load(dy_ptr + e * B * O + offs_b[:, None] * O + offs_o[None, :],
                 mask=(offs_b[:, None] < B) & (offs_o[None, :] < O), other=0.0)               # (BB, BO)
    dx = tl.zeros((BLOCK_B, BLOCK_K), tl.float32)
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        pre = _pre_tile(x_ptr, w1_ptr, b1_ptr + e * H, offs_b, offs_h, B, K, H, BLOCK_K, PREC)
        active = (pre > 0) & _keep(m_ptr + e * H, offs_h, H)[None, :]
        w2t = tl.load(w2_ptr + offs_h[None, :] * O + offs_o[:, None],
                      mask=(offs_h[None, :] < H) & (offs_o[:, None] < O), other=0.0)          # (BO, BH)
        dh = tl.where(active, tl.dot(dy, w2t, input_precision=PREC), 0.0).to(dy.dtype)     # (BB, BH)
        w1t = tl.load(w1_ptr + offs_k[None, :] * H + offs_h[:, None],
                      mask=(offs_k[None, :] < K) & (offs_h[:, None] < H), other=0.0)          # (BH, BK) = W1ᵀ
        dx = tl.dot(dh, w1t, dx, input_precision=PREC)
    io_mask = (offs_b[:, None] < B) & (offs_k[None, :] < K)
    xk = tl.load(x_ptr + offs_b[:, None] * K + offs_k[None, :], mask=io_mask, other=0.0)
    dx = tl.where((xk > 0) | (gate == 0), dx, 0.0)      # gate: x = relu(pre_0) * mask_0, so dx -> d pre_0
    tl.store(dx_ptr + e * B * K + offs_b[:, None] * K + offs_k[None, :], dx.to(dx_ptr.dtype.element_ty),
             mask=io_mask)


@triton.jit
def _linear_bwd_w_kernel(x_ptr, g_ptr, dw_ptr, db_ptr, B, K, H,
                         BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr, PREC: tl.constexpr):
    e = tl.program_id(0).to(tl.int64)
    pid_k = tl.program_id(1)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_h = tl.program_id(2) * BLOCK_H + tl.arange(0, BLOCK_H)
    dw = tl.zeros((BLOCK_K, BLOCK_H), tl.float32)
    db = tl.zeros((BLOCK_H,), tl.float32)
    for b0 in range(0, B, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B)
        xt = tl.load(x_ptr + e * B * K + offs_b[None, :] * K + offs_k[:, None],
                     mask=(offs_b[None, :] < B) & (offs_k[:, None] < K), other=0.0)           # (BK, BB) = xᵀ
        g = tl.load(g_ptr + e * B * H + offs_b[:, None] * H + offs_h[None, :],
                    mask=(offs_b[:, None] < B) & (offs_h[None, :] < H), other=0.0)            # (BB, BH)
        dw = tl.dot(xt, g, dw, input_precision=PREC)
        db += tl.sum(g.to(tl.float32), 0)
    tl.store(dw_ptr + e * K * H + offs_k[:, None] * H + offs_h[None, :], dw.to(dw_ptr.dtype.element_ty),
             mask=(offs_k[:, None] < K) & (offs_h[None, :] < H))
    tl.store(db_ptr + e * H + offs_h, db.to(db_ptr.dtype.element_ty), mask=offs_h < tl.where(pid_k == 0, H, 0))


# ----------------------------------------------------------------------------------------------- launchers

def _block_o(o: int) -> int:
    return 16 if o <= 16 else OMAX


def _prec(dtype: torch.dtype) -> str:
    """fp32 dots follow torch's matmul setting: exact fp32 ("ieee") under the default "highest", one TF32 pass
    when the user allowed it ("high"/"medium"), as torch.baddbmm would do on the same GPU. 16-bit: ignored."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


def _opts(x, **tiles):
    return dict(BLOCK_B=BLOCK_B, BLOCK_K=BLOCK_K, BLOCK_H=HMAX, **tiles, PREC=_prec(x.dtype), **LAUNCH)


def _linear_relu_fwd(x, w, b, m):
    E, B, K = x.shape
    H = w.shape[2]
    h = torch.empty(E, B, H, device=x.device, dtype=x.dtype)                                 # (E, B, H)
    _linear_relu_fwd_kernel[(E, triton.cdiv(B, BLOCK_B), triton.cdiv(H, HMAX))](
        x, w, b, m, h, B, K, H, **_opts(x))
    return h


def _pair_fwd(x, w1, b1, m, w2, b2):
    E, B, K = x.shape
    H, O = w2.shape[1], w2.shape[2]
    y = torch.empty(E, B, O, device=x.device, dtype=x.dtype)                                 # (E, B, out)
    _pair_fwd_kernel[(E, triton.cdiv(B, BLOCK_B))](
        x, w1, b1, m, w2, b2, y, B, K, H, O, **_opts(x, BLOCK_O=_block_o(O)))
    return y


def _pair_bwd(x, w1, b1, m, w2, dy, need_dx: bool, gate: bool):
    """Grads of the pair: (dx or None, dW1, db1, dW2, db2); gate=True turns dx into d pre of the layer below."""
    E, B, K = x.shape
    H, O = w2.shape[1], w2.shape[2]
    tiles = _opts(x, BLOCK_O=_block_o(O))
    dw1, db1 = torch.empty_like(w1), torch.empty_like(b1)
    dw2, db2 = torch.empty_like(w2), torch.empty(E, O, device=x.device, dtype=w2.dtype)
    _pair_bwd_w_kernel[(E, triton.cdiv(H, HMAX), triton.cdiv(K, BLOCK_K))](
        x, w1, b1, m, w2, dy, dw1, db1, dw2, db2, B, K, H, O, **tiles)
    dx = None
    if need_dx:
        dx = torch.empty_like(x)
        _pair_bwd_dx_kernel[(E, triton.cdiv(B, BLOCK_B), triton.cdiv(K, BLOCK_K))](
            x, w1, b1, m, w2, dy, dx, int(gate), B, K, H, O, **tiles)
    return dx, dw1, db1, dw2, db2


def _linear_bwd_w(x, g, w):
    """dW = xᵀ g (E, K, H) and db = Σ_B g (E, H) for one linear layer, g = d pre."""
    E, B, K = x.shape
    H = g.shape[2]
    dw, db = torch.empty_like(w), torch.empty(E, H, device=x.device, dtype=w.dtype)
    _linear_bwd_w_kernel[(E, triton.cdiv(K, BLOCK_K), triton.cdiv(H, HMAX))](
        x, g, dw, db, B, K, H, **_opts(x))
    return dw, db


class _PackedMLP(torch.autograd.Function):
    """apply(x, *Ws, *bs, *masks) with len(Ws) = len(bs) = L in {2, 3}, len(masks) = L - 1 (masks (E, H) fp32)."""

    @staticmethod
    def forward(ctx, x, *params):
        L = (len(params) + 1) // 3
        Ws, bs, masks = params[:L], params[L:2 * L], params[2 * L:]
        h1 = _linear_relu_fwd(x, Ws[0], bs[0], masks[0]) if L == 3 else None                    # (E, B, H_0)
        pair_in = x if L == 2 else h1
        y = _pair_fwd(pair_in, Ws[-2], bs[-2], masks[-1], Ws[-1], bs[-1])
        ctx.save_for_backward(x, h1, *params)
        ctx.L = L
        return y

    @staticmethod
    def backward(ctx, dy):
        x, h1, *params = ctx.saved_tensors
        L = ctx.L
        Ws, bs, masks = params[:L], params[L:2 * L], params[2 * L:]
        dy = dy.contiguous().to(x.dtype)                                                        # (E, B, out)
        need_x = ctx.needs_input_grad[0]
        pair_in = x if L == 2 else h1
        d_in, dw1, db1, dw2, db2 = _pair_bwd(pair_in, Ws[-2], bs[-2], masks[-1], Ws[-1], dy,
                                             need_dx=need_x or L == 3, gate=L == 3)
        dWs, dbs = [dw1, dw2], [db1, db2]
        dx = d_in
        if L == 3:                                                  # d_in = d pre_0 (E, B, H_0)
            dw0, db0 = _linear_bwd_w(x, d_in, Ws[0])
            dWs, dbs = [dw0] + dWs, [db0] + dbs
            dx = torch.bmm(d_in, Ws[0].transpose(1, 2)) if need_x else None
        return (dx, *dWs, *dbs, *([None] * len(masks)))


def _check(x, Ws, bs, masks):
    if len(Ws) not in (2, 3) or len(bs) != len(Ws) or len(masks) != len(Ws) - 1:
        raise ValueError(f"packed_mlp: need 2 or 3 layers, len(bs) == len(Ws), len(masks) == len(Ws) - 1 "
                         f"(got {len(Ws)}, {len(bs)}, {len(masks)})")
    if any(t.dtype != x.dtype for t in (*Ws, *bs)):
        raise ValueError(f"packed_mlp: x, Ws and bs must share one dtype (x is {x.dtype})")


def packed_mlp_triton(x: torch.Tensor, Ws: list[torch.Tensor], bs: list[torch.Tensor],
                      masks: list[torch.Tensor]) -> torch.Tensor:
    """The Triton path (also under TRITON_INTERPRET=1 on CPU tensors): x (E, B, in) -> (E, B, out)."""
    _check(x, Ws, bs, masks)
    if Ws[-1].shape[2] > OMAX:
        raise ValueError(f"packed_mlp_triton: out must be <= {OMAX} (got {Ws[-1].shape[2]})")
    E = x.shape[0]
    ms = [m.reshape(E, -1).to(torch.float32).contiguous() for m in masks]                      # (E, H_i)
    return _PackedMLP.apply(x.contiguous(), *(w.contiguous() for w in Ws), *(b.contiguous() for b in bs), *ms)


def triton_fits(x: torch.Tensor, Ws, bs) -> bool:
    """The call is inside the kernels' limits: out <= OMAX, 2 or 3 layers, one fp32/fp16/bf16 dtype."""
    return (Ws[-1].shape[2] <= OMAX and len(Ws) in (2, 3) and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
            and all(t.dtype == x.dtype for t in (*Ws, *bs)))


def packed_mlp(x: torch.Tensor, Ws: list[torch.Tensor], bs: list[torch.Tensor],
               masks: list[torch.Tensor]) -> torch.Tensor:
    """g(x) for the pack: Triton kernels when `ftkernels.dispatch.decide` says so (out <= 64, 2 or 3 layers, one
    fp32/fp16/bf16 dtype; under torch.autocast the inputs are cast to its dtype first), else `packed_mlp_torch`
    (the reference's ops with a hand-written backward)."""
    x, *params = dispatch.autocast_inputs(x, *Ws, *bs)
    Ws, bs = params[:len(Ws)], params[len(Ws):]
    if dispatch.decide("packed_mlp", triton_fits(x, Ws, bs), x, *Ws, *bs):
        return packed_mlp_triton(x, Ws, bs, masks)
    return packed_mlp_torch(x, Ws, bs, masks)


def packed_mlp_ref(x: torch.Tensor, Ws: list[torch.Tensor], bs: list[torch.Tensor],
                   masks: list[torch.Tensor]) -> torch.Tensor:
    """Plain torch in the input dtype: h = relu(baddbmm(b, h, W)) * mask per hidden layer, then the output layer."""
    _check(x, Ws, bs, masks)
    E = x.shape[0]
    h = x                                                                                      # (E, B, in)
    for w, b, m in zip(Ws[:-1], bs[:-1], masks):
        h = torch.relu(torch.baddbmm(b.unsqueeze(1), h, w)) * m.reshape(E, 1, -1).to(h.dtype)  # (E, B, H_i)
    return torch.baddbmm(bs[-1].unsqueeze(1), h, Ws[-1])                                       # (E, B, out)


def mlp_forward(x: torch.Tensor, Ws, bs, masks, residual: torch.Tensor | None = None):
    """The reference's forward with what the backward needs: (y (E, B, out), [h_0 = x, h_1, .., h_{L-1}]).
    masks (E, 1, H_i) in x's dtype; `residual` (E, B, out), if given, is added to y (inside the last baddbmm's
    input: the additive adapter's f(x) + g(x) in one op). A layer with one output (FTC's g: R^d -> R) is a
    broadcast multiply and a sum: CPU BLAS runs a batched GEMV/outer product (a GEMM with a dim of 1) 6–17x slower
    than that at E = 16, B = 512, H = 128 (and its backward likewise, `mlp_backward`)."""
    hs = [x]
    for w, b, m in zip(Ws[:-1], bs[:-1], masks):
        hs.append(torch.baddbmm(b.unsqueeze(1), hs[-1], w).clamp_min_(0).mul_(m))     # (E, B, H_i)
    bias = bs[-1].unsqueeze(1) if residual is None else residual + bs[-1].unsqueeze(1)
    if Ws[-1].shape[2] == 1:                     # out = 1: a broadcast product, not a batched GEMV (module note)
        return (hs[-1] * Ws[-1].transpose(1, 2)).sum(-1, keepdim=True).add_(bias), hs
    return torch.baddbmm(bias, hs[-1], Ws[-1]), hs                                   # (E, B, out)


def mlp_backward(dy: torch.Tensor, hs: list[torch.Tensor], Ws, need_dx: bool):
    """Reverse mode of `mlp_forward` by hand: per layer i (last first)

        dW_i = h_iᵀ d_i,   db_i = Σ_B d_i,   d_{i-1} = relu'(h_i) ⊙ (d_i W_iᵀ)

    (relu'(h) = [h > 0] = relu'(pre) ⊙ mask for 0/1 masks: a masked unit gets exactly zero gradient). Two bmm and
    one sum per layer, one threshold_backward per hidden layer. -> (dx or None, [dW_i], [db_i])."""
    L = len(Ws)
    d = dy.to(hs[-1].dtype)                                                           # (E, B, fan_out_i)
    dWs, dbs = [None] * L, [None] * L
    for i in range(L - 1, -1, -1):
        gemv = d.shape[2] == 1                   # fan_out 1: broadcast products, not GEMMs with a dim of 1
        dWs[i] = (hs[i] * d).sum(1, keepdim=True).transpose(1, 2) if gemv else torch.bmm(hs[i].transpose(1, 2), d)
        dbs[i] = d.sum(1)                                                             # (E, fan_out_i)
        if i > 0 or need_dx:
            d = d * Ws[i].transpose(1, 2) if gemv else torch.bmm(d, Ws[i].transpose(1, 2))   # (E, B, fan_in_i)
            if i > 0:
                d = torch.ops.aten.threshold_backward(d, hs[i], 0)
    return (d if need_dx else None), dWs, dbs


class _PackedMLPTorch(torch.autograd.Function):
    """`packed_mlp_ref`'s forward with its backward written out (`mlp_forward`, `mlp_backward`): the torch path
    (CPU, and CUDA under FTCORE_KERNELS=torch) — fewer ops than autograd's graph of baddbmm, relu, mask-multiply
    and broadcast nodes, for the launch-bound packs of the FTC sweeps (benchmarks/bench_step.py)."""

    @staticmethod
    def forward(ctx, x, *params):
        L = (len(params) + 1) // 3
        Ws, bs, masks = params[:L], params[L:2 * L], params[2 * L:]
        y, hs = mlp_forward(x, Ws, bs, masks)
        ctx.save_for_backward(*hs, *Ws)
        ctx.L = L
        return y

    @staticmethod
    def backward(ctx, dy):
        L = ctx.L
        hs, Ws = ctx.saved_tensors[:L], ctx.saved_tensors[L:]
        dx, dWs, dbs = mlp_backward(dy, list(hs), Ws, ctx.needs_input_grad[0])
        return (dx, *dWs, *dbs, *([None] * (L - 1)))


def _torch_masks(x: torch.Tensor, masks) -> list[torch.Tensor]:
    E = x.shape[0]
    return [m.reshape(E, 1, -1).to(x.dtype) for m in masks]                              # (E, 1, H_i)


def packed_mlp_torch(x: torch.Tensor, Ws: list[torch.Tensor], bs: list[torch.Tensor],
                     masks: list[torch.Tensor]) -> torch.Tensor:
    """The torch path: `packed_mlp_ref`'s math and ops, backward by hand (`_PackedMLPTorch`); x (E, B, in) ->
    (E, B, out). Masks (E, H) or (E, 1, H), cast to the input dtype."""
    _check(x, Ws, bs, masks)
    return _PackedMLPTorch.apply(x, *Ws, *bs, *_torch_masks(x, masks))


@torch.no_grad()
def packed_mlp_vjp(x: torch.Tensor, Ws: list[torch.Tensor], bs: list[torch.Tensor], masks: list[torch.Tensor],
                   residual: torch.Tensor | None = None):
    """Forward without autograd, for a caller that runs its own reverse mode (ftcore.fit's analytic step):
    (y = residual + g(x) (E, B, out), vjp) where vjp(dy) -> ([dW_i], [db_i]) (no dx: x is data). None when the
    Triton kernels would serve this call (CUDA: `packed_mlp` and autograd then), or under autocast. Recorded in
    `kernels_ops` like a `packed_mlp` call."""
    if torch.is_autocast_enabled(x.device.type) or any(t.requires_grad for t in (x, residual) if t is not None):
        return None
    if dispatch.decide("packed_mlp", triton_fits(x, Ws, bs), x, *Ws, *bs):
        return None
    _check(x, Ws, bs, masks)
    y, hs = mlp_forward(x, Ws, bs, _torch_masks(x, masks), residual)

    def vjp(dy: torch.Tensor):
        with torch.no_grad():
            _, dWs, dbs = mlp_backward(dy, hs, Ws, need_dx=False)
        return dWs, dbs
    return y, vjp


# --------------------------------------------------------------------------------------------------- AOT
# label: (E, B, in, adapter width m, depth, out). The shipped FTC sweeps (ftc_capacity, ftc_k: dim 8, full batch
# K = 2N = 32..512 points, out 1, widths from 2 up by doubling then bisection, depth 2 and 3), and an output wider
# than 16 (the BLOCK_O = 64 tiles; no shipped sweep has one).
AOT_SHAPES = {
    "ftc depth 2, width 24": (9, 96, 8, 24, 2, 1),
    "ftc depth 2, width 64": (9, 512, 8, 64, 2, 1),
    "ftc depth 3, width 2": (9, 32, 8, 2, 3, 1),
    "ftc depth 3, width 24": (9, 96, 8, 24, 3, 1),
    "ftc depth 3, width 64": (9, 512, 8, 64, 3, 1),
    "out 20, width 70": (4, 33, 9, 70, 3, 20),
}
AOT_PRECISIONS = ("fp32", "tf32", "bf16")


def aot_calls() -> list:
    """(label, call): forward + backward of the Triton path on meta tensors at AOT_SHAPES in fp32, tf32 and bf16
    (the train.precision values; the adapter's input is data: no dx at depth 2), for `ftkernels.aot` to capture."""
    from ftkernels.aot_calls import at_precision, backward, meta

    def call(E, B, d_in, m, depth, d_out):
        hidden = [m] if depth == 2 else [(m + 1) // 2, m // 2]           # ftcore.adapters.additive_relu
        dims = [d_in, *hidden, d_out]

        def run(dt):
            Ws = [meta(E, dims[i], dims[i + 1], dtype=dt, grad=True) for i in range(depth)]
            bs = [meta(E, dims[i + 1], dtype=dt, grad=True) for i in range(depth)]
            backward(packed_mlp_triton(meta(E, B, d_in, dtype=dt), Ws, bs, [meta(E, h) for h in hidden]))
        return run
    out = [(f"{label} {p}", at_precision(p, call(*shape))) for label, shape in AOT_SHAPES.items()
           for p in AOT_PRECISIONS]
    return out
