"""multi_adamw: one fused AdamW step for every member of a pack, each with its own hyperparameters.

A pack keeps all trainable parameters of one dtype in ONE flat buffer `param` (E, P): member-major and
contiguous, each model parameter a view into it; `grad`, `exp_avg` (m) and `exp_avg_sq` (v) are (E, P)
buffers alike. For member e (row e), at global step t ≥ 1 and schedule factor s (Loshchilov & Hutter,
decoupled weight decay; the same math as `ftcore/optim.py::PackedAdamW.step`, with per-member betas):

    g_e ← g_e · min(1, c_e / (‖g_e‖₂ + 1e-12))        only when c_e > 0; the norm covers the whole row
    m_e ← β1_e m_e + (1 − β1_e) g_e,    v_e ← β2_e v_e + (1 − β2_e) g_e²
    p_e ← p_e − η_e·s · ( (m_e / (1 − β1_e^t)) / (√(v_e / (1 − β2_e^t)) + ε) + λ_e p_e )

Inactive members (active[e] False) are not touched at all: p, m and v stay bit-exact and their grad row
is never read, so a NaN/inf there cannot reach anything (not even the other members' norms).

Dtypes: param and grad share a dtype (fp32, fp16 or bf16); exp_avg and exp_avg_sq are always fp32 (a
16-bit second moment underflows); all math is fp32, the result rounded once to the param dtype. The
bias corrections 1 − β^t are computed in fp64 by repeated squaring (1 − β2^t at t = 1 is ~1e-3, and
forming it from an fp32 power loses 4-5 digits to cancellation), then rounded to fp32.
Per-member vectors lr, beta1, beta2, weight_decay, max_norm are (E,) fp32 (others are converted, which
costs a launch each); `active` is (E,) bool.

Tiling (two launches at most; fp32 accumulation):
  1. `_sq_norm_kernel`, only when max_norm is given: grid (T, E); program (j, e) sums g² over columns
     [j·CHUNK, (j+1)·CHUNK) of row e, looping BLOCK at a time, and writes partial[e, j]. T ≤ MAX_PARTIALS
     (256) so a huge P does not make launch 2 read many partials. Partials (not atomics) keep the norm
     deterministic and need no zero-fill launch. Members with c_e ≤ 0 or inactive read nothing.
  2. `_adamw_update_kernel`: grid (cdiv(P, BLOCK), E); each program loads its member's scalars once,
     sums the member's ≤ T_BLOCK partials (same order in every program, so every tile of a member sees
     the same norm bit for bit), and updates BLOCK columns of p, m, v in one pass
     (reads p, g, m, v; writes p, m, v: 7 passes over (E, P), the floor for an unfused-state AdamW).
Pass max_norm=None for no clipping at all: launch 1 is skipped without a host sync (checking
`(max_norm > 0).any()` would force one). Tiles run along grid axis 0 (limit 2³¹−1), members along axis 1.

No autograd.Function: an optimizer step is an in-place update under no_grad, nothing to differentiate.
"""
from __future__ import annotations

import torch

from ftkernels import dispatch
from ftkernels._compat import tl, triton

BLOCK = 1024            # columns per program (update) / per loop iteration (norm)
NUM_WARPS = 4           # 8 fp32 per thread: two 16-byte vector loads per buffer
MAX_PARTIALS = 256      # norm partials per member; launch 2 reads them all with one tl.arange(0, T_BLOCK)
CLIP_EPS = 1e-12        # as PackedAdamW._clip_coef


@triton.jit
def _sq_norm_kernel(g_ptr, part_ptr, clip_ptr, active_ptr, P, T, CHUNK, BLOCK: tl.constexpr):
    """partial[e, j] = Σ g[e, j·CHUNK : (j+1)·CHUNK]² (fp32); 0 for inactive or unclipped members."""
    j = tl.program_id(0)
    e = tl.program_id(1)
    need = (tl.load(active_ptr + e) != 0) & (tl.load(clip_ptr + e) > 0)
    row = g_ptr + e.to(tl.int64) * P                                        # row e of (E, P)
    lo = j.to(tl.int64) * CHUNK
    hi = tl.where(need, P, 0)                    # skipped members mask every column (and read nothing)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, CHUNK, BLOCK):                                     # CHUNK is a multiple of BLOCK
        offs = lo + start + tl.arange(0, BLOCK)
        g = tl.load(row + offs, mask=offs < hi, other=0.0).to(tl.float32)
        acc += g * g
    tl.store(part_ptr + e * T + j, tl.sum(acc, axis=0))                      # (E, T)


@triton.jit
def _bias_corrections(b1, b2, step):
    """(1 − β1^t, 1 − β2^t) in fp64 by repeated squaring, rounded to fp32."""
    x1 = b1.to(tl.float64)
    x2 = b2.to(tl.float64)
    p1 = tl.full((), 1.0, tl.float64)
    p2 = tl.full((), 1.0, tl.float64)
    n = step
    while n > 0:
        odd = n % 2 == 1
        p1 = tl.where(odd, p1 * x1, p1)
        p2 = tl.where(odd, p2 * x2, p2)
        x1 = x1 * x1
        x2 = x2 * x2
        n = n // 2
    return (1.0 - p1).to(tl.float32), (1.0 - p2).to(tl.float32)


@triton.jit(do_not_specialize=["step"])
def _adamw_update_kernel(p_ptr, g_ptr, m_ptr, v_ptr, part_ptr, lr_ptr, b1_ptr, b2_ptr, wd_ptr, clip_ptr,
                         active_ptr, P, T, eps, lr_factor, step, scalars_ptr,
                         HAS_CLIP: tl.constexpr, BLOCK: tl.constexpr, T_BLOCK: tl.constexpr,
                         DEVICE_SCALARS: tl.constexpr):
    pid = tl.program_id(0)
    e = tl.program_id(1)
    if DEVICE_SCALARS:                          # (t, s) read from the device: a CUDA graph replays with new values
        step = tl.load(scalars_ptr).to(tl.int32)
        lr_factor = tl.load(scalars_ptr + 1)
    # Per-member scalars, once per program.
    act = tl.load(active_ptr + e) != 0
    lr = tl.load(lr_ptr + e) * lr_factor
    b1 = tl.load(b1_ptr + e)
    b2 = tl.load(b2_ptr + e)
    wd = tl.load(wd_ptr + e)
    bc1, bc2 = _bias_corrections(b1, b2, step)
    coef = 1.0
    if HAS_CLIP:
        c = tl.load(clip_ptr + e)
        t = tl.arange(0, T_BLOCK)
        sq = tl.sum(tl.load(part_ptr + e * T + t, mask=t < T, other=0.0), axis=0)   # ‖g_e‖² from (E, T)
        coef = tl.where(c > 0, tl.minimum(c / (tl.sqrt(sq) + 1e-12), 1.0), 1.0)

    base = e.to(tl.int64) * P                                                # row e of (E, P)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < tl.where(act, P, 0)                                        # inactive: no load, no store
    p = tl.load(p_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + base + offs, mask=mask, other=0.0).to(tl.float32) * coef
    m = tl.load(m_ptr + base + offs, mask=mask, other=0.0)
    v = tl.load(v_ptr + base + offs, mask=mask, other=0.0)
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * g * g
    upd = (m / bc1) / (tl.sqrt(v / bc2) + eps) + wd * p
    p = p - lr * upd
    tl.store(p_ptr + base + offs, p.to(p_ptr.dtype.element_ty), mask=mask)
    tl.store(m_ptr + base + offs, m, mask=mask)
    tl.store(v_ptr + base + offs, v, mask=mask)


# ---------------------------------------------------------------- launchers

def _check(param, grad, exp_avg, exp_avg_sq, vectors) -> None:
    if param.dim() != 2:
        raise ValueError(f"multi_adamw: param must be (E, P), got shape {tuple(param.shape)}")
    for name, x in (("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if x.shape != param.shape or x.device != param.device:
            raise ValueError(f"multi_adamw: {name} must match param {tuple(param.shape)} on {param.device}")
    for name, x in (("param", param), ("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if not x.is_contiguous():
            raise ValueError(f"multi_adamw: {name} must be contiguous")
    if param.dtype not in (torch.float32, torch.float16, torch.bfloat16) or grad.dtype != param.dtype:
        raise ValueError(f"multi_adamw: param/grad must share fp32/fp16/bf16, got {param.dtype}/{grad.dtype}")
    if exp_avg.dtype != torch.float32 or exp_avg_sq.dtype != torch.float32:
        raise ValueError("multi_adamw: exp_avg and exp_avg_sq must be fp32")
    for name, x in vectors.items():
        if x is not None and x.shape != (param.shape[0],):
            raise ValueError(f"multi_adamw: {name} must be ({param.shape[0]},), got {tuple(x.shape)}")


def _vec(x: torch.Tensor, device) -> torch.Tensor:
    return x.to(device=device, dtype=torch.float32).contiguous()            # (E,) no-op when already fp32


def device_scalar_pair(step: torch.Tensor, lr_factor, device) -> torch.Tensor:
    """(2,) fp32 [t, s] on the device, built by device ops only (no host read: capturable in a CUDA graph).
    t is exact in fp32 up to 2²⁴ steps."""
    s = lr_factor if isinstance(lr_factor, torch.Tensor) else torch.full((), float(lr_factor), device=device)
    return torch.stack([step.to(device=device, dtype=torch.float32).reshape(()),
                        s.to(device=device, dtype=torch.float32).reshape(())])


def multi_adamw_triton(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps: float, weight_decay, max_norm,
                       active, step: int, lr_factor: float = 1.0, *, max_partials: int = MAX_PARTIALS) -> None:
    """The Triton path of `multi_adamw_` (tests call it directly). max_partials: norm partials per member.
    `step` may be a 0-dim integer tensor on the device (and `lr_factor` a 0-dim tensor): the kernel then reads both
    from device memory, so a captured CUDA graph replays with the values of each step (ftcore.graphs)."""
    _check(param, grad, exp_avg, exp_avg_sq, {"lr": lr, "beta1": beta1, "beta2": beta2,
                                             "weight_decay": weight_decay, "max_norm": max_norm, "active": active})
    device_scalars = isinstance(step, torch.Tensor)
    if not device_scalars and step < 1:
        raise ValueError(f"multi_adamw: step must be ≥ 1, got {step}")
    E, P = param.shape
    if E == 0 or P == 0:
        return
    dev = param.device
    lr, beta1, beta2, weight_decay = (_vec(x, dev) for x in (lr, beta1, beta2, weight_decay))
    act = active.to(device=dev, dtype=torch.bool).contiguous().view(torch.uint8)   # (E,) u8, a view: no copy
    n_blocks = triton.cdiv(P, BLOCK)
    if max_norm is not None:
        clip = _vec(max_norm, dev)
        chunk = triton.cdiv(n_blocks, min(n_blocks, max_partials)) * BLOCK
        T = triton.cdiv(P, chunk)
        partial = torch.empty((E, T), device=dev, dtype=torch.float32)      # (E, T)
        _sq_norm_kernel[(T, E)](grad, partial, clip, act, P, T, chunk, BLOCK=BLOCK, num_warps=NUM_WARPS)
    else:
        clip, partial, T = lr, exp_avg, 1                                    # unused (HAS_CLIP=False)
        max_partials = 1
    _adamw_update_kernel[(n_blocks, E)](
        param, grad, exp_avg, exp_avg_sq, partial, lr, beta1, beta2, weight_decay, clip, act, P, T,
        float(eps), 1.0 if device_scalars else float(lr_factor), 1 if device_scalars else int(step),
        device_scalar_pair(step, lr_factor, dev) if device_scalars else lr,
        HAS_CLIP=max_norm is not None, BLOCK=BLOCK, T_BLOCK=triton.next_power_of_2(max_partials), num_warps=NUM_WARPS,
        DEVICE_SCALARS=device_scalars)


# ---------------------------------------------------------------- public entry

@torch.no_grad()
def multi_adamw_(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps: float, weight_decay, max_norm,
                 active, step: int, lr_factor: float = 1.0, groups: list | None = None) -> None:
    """In-place AdamW step for every active member of a pack (module docstring for the math).

    param, grad: (E, P) fp32/fp16/bf16, same dtype; exp_avg, exp_avg_sq: (E, P) fp32; lr, beta1, beta2,
    weight_decay, max_norm: (E,) (max_norm[e] ≤ 0: no clipping for e; max_norm=None: none at all);
    active: (E,) bool; step: global step t ≥ 1; lr_factor: schedule multiplier; groups: `hyper_groups` of the
    hyperparameters, for the CPU path (optional; an optimizer passes it to save recomputing it every step).
    Paths: Triton on CUDA (`dispatch.decide`), `multi_adamw_cpu` for fp32 CPU tensors whose members form at most
    CPU_MAX_GROUPS hyperparameter groups, else `multi_adamw_ref` (fp64, many distinct learning rates, a CUDA policy
    of torch) — the last two both recorded as "torch" in `kernels_ops`.
    """
    if dispatch.decide("multi_adamw", param.dtype in (torch.float32, torch.float16, torch.bfloat16),
                       param, grad, exp_avg, exp_avg_sq):
        multi_adamw_triton(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, max_norm,
                           active, step, lr_factor)
    elif cpu_fused_fits(param, grad, exp_avg, exp_avg_sq) and len(
            groups := groups or hyper_groups(lr, beta1, beta2, weight_decay)) <= CPU_MAX_GROUPS:
        multi_adamw_cpu(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, max_norm,
                        active, step, lr_factor, groups)
    else:
        multi_adamw_ref(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, max_norm,
                        active, step, lr_factor)


@torch.no_grad()
def multi_adamw_ref(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps: float, weight_decay, max_norm,
                    active, step: int, lr_factor: float = 1.0) -> None:
    """Plain torch, in place; also the CPU training path, so written with few full-size ops (~10).
    Math in exp_avg's dtype (fp32; fp64 when the tests evaluate it as the oracle); p is rounded once to its
    own dtype. Bias corrections in fp64, like the kernel. Inactive members: their gradient is replaced by 0
    before anything reads it, their β and lr by 1 and 0, so m, v, p stay bit-exact."""
    dt, E = exp_avg.dtype, param.shape[0]

    def col(x):                                                              # (E,) -> (E, 1) in dt
        return x.view(E, 1) if x.dtype == dt else x.to(dt).view(E, 1)

    act = active.view(E, 1)                                                  # (E, 1) bool
    g = torch.where(act, grad if grad.dtype == dt else grad.to(dt), 0.0)     # (E, P)
    if max_norm is not None:
        c = col(max_norm)
        norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)              # (E, 1)
        g.mul_(torch.where(c > 0, (c / (norm + CLIP_EPS)).clamp(max=1.0), 1.0))
    b1 = torch.where(act, col(beta1), 1.0)
    b2 = torch.where(act, col(beta2), 1.0)
    exp_avg.lerp_(g, 1 - b1)                                                 # m ← β1 m + (1 − β1) g
    exp_avg_sq.mul_(b2).addcmul_(g, g * (1 - b2))                            # v ← β2 v + (1 − β2) g²
    bc1 = col(1 - beta1.double() ** step)
    bc2 = col(1 - beta2.double() ** step)
    step_size = torch.where(act, col(lr) * lr_factor, 0.0)                   # (E, 1); 0 for inactive
    denom = (exp_avg_sq / bc2).sqrt_().add_(eps)                             # (E, P)
    upd = (exp_avg / bc1).div_(denom).addcmul_(param if param.dtype == dt else param.to(dt), col(weight_decay))
    p_new = (param if param.dtype == dt else param.to(dt)) - step_size * upd
    param.copy_(torch.where(act, p_new, param))                              # exact for inactive, even NaN/inf p


# ---------------------------------------------------------------- the CPU path

CPU_MAX_GROUPS = 8      # past ~10 groups (one fused call each, ~10 µs) the ~20 ops of the ref are cheaper


def cpu_fused_fits(*tensors: torch.Tensor) -> bool:
    """`multi_adamw_cpu` serves the call: fp32 CPU tensors (the optimizer's master weights) and a torch with the
    fused CPU AdamW op."""
    return (hasattr(torch, "_fused_adamw_") and all(t.device.type == "cpu" and t.dtype == torch.float32
                                                    for t in tensors))


def hyper_groups(*hyper: torch.Tensor) -> list[tuple[tuple, list[int]]]:
    """[((lr, β1, β2, λ), [members]), ...]: the members sharing each hyperparameter tuple (host lists; an
    optimizer computes this once, since its hyperparameters are fixed, and passes it as `groups`)."""
    groups: dict[tuple, list[int]] = {}
    for e, key in enumerate(zip(*(h.tolist() for h in hyper))):
        groups.setdefault(key, []).append(e)
    return list(groups.items())


def active_runs(members: list[int], on: list[bool]) -> list[tuple[int, int]]:
    """The active ones of `members` (increasing) as runs of consecutive rows [a, b)."""
    runs: list[tuple[int, int]] = []
    for e in members:
        if on[e]:
            if runs and runs[-1][1] == e:
                runs[-1] = (runs[-1][0], e + 1)
            else:
                runs.append((e, e + 1))
    return runs


@torch.no_grad()
def multi_adamw_cpu(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps: float, weight_decay, max_norm,
                    active, step: int, lr_factor: float = 1.0, groups: list | None = None) -> None:
    """The CPU training path (fp32): torch's fused CPU AdamW (`torch._fused_adamw_`, the op behind
    `torch.optim.AdamW(fused=True)`: one vectorised pass over p, g, m, v per tensor) once per group of active
    members sharing (lr, β1, β2, weight decay), on row slices [a, b) of the (E, P) buffers (a whole buffer when
    every member is in one group and active); inactive rows are never read or written. Same math as the module
    docstring: torch's decoupled decay p·(1 − η·s·λ) before the Adam step equals the − η·s·λ·p term here, bias
    corrections in double. Per-member clipping scales a copy of the gradient first (one norm per row).
    `groups`: `hyper_groups(lr, beta1, beta2, weight_decay)`, computed here when not given.
    Cost at FTC sizes (E = 16, P = 321; benchmarks/bench_step.py): ~10 µs for one group against ~120 µs for the
    ~20 ops of `multi_adamw_ref`; many distinct learning rates cost ~3 µs per group."""
    E = param.shape[0]
    if max_norm is not None:
        norm = torch.linalg.vector_norm(grad, dim=1, keepdim=True)                       # (E, 1)
        c = max_norm.to(grad.dtype).view(E, 1)
        grad = grad * torch.where(c > 0, (c / (norm + CLIP_EPS)).clamp(max=1.0), 1.0)  # a copy: the caller's grad kept
    on = active.tolist()
    state_step = torch.tensor(float(step))
    for (lr_e, b1, b2, wd), members in groups or hyper_groups(lr, beta1, beta2, weight_decay):
        runs = active_runs(members, on)
        if not runs:
            continue
        if runs == [(0, E)]:
            bufs = [[param], [grad], [exp_avg], [exp_avg_sq]]
        else:
            bufs = [[x[a:b] for a, b in runs] for x in (param, grad, exp_avg, exp_avg_sq)]
        torch._fused_adamw_(*bufs, [], [state_step] * len(runs), lr=lr_e * lr_factor, beta1=b1, beta2=b2,
                            weight_decay=wd, eps=eps, amsgrad=False, maximize=False)


# ---------------------------------------------------------------- ahead-of-time calls
# label: (E, P). A small FTC pack (width 24: P = 10·24 + 1, one norm partial), a LoRA-teacher pack, and a large
# pack (2²⁰ parameters per member: many partials).
AOT_SHAPES = {"ftc pack": (9, 241), "teacher pack": (12, 8 * 8 * 2 + 16), "large pack": (4, 1 << 20)}


def aot_calls() -> list:
    """(label, call): one step with and without clipping on meta tensors at AOT_SHAPES. fp32 params only: the
    optimizer always holds fp32 master weights (train.precision changes the forward, ftcore.fit), so no other
    dtype reaches it."""
    from ftkernels.aot_calls import meta

    def call(E, P, dtype, clip, graphed=False):
        def run():
            vec = meta(E)
            step = torch.empty((), dtype=torch.long, device="meta") if graphed else 7
            multi_adamw_triton(meta(E, P, dtype=dtype), meta(E, P, dtype=dtype), meta(E, P), meta(E, P), vec, vec,
                               vec, 1e-8, vec, vec if clip else None, meta(E, dtype=torch.bool), step,
                               meta() if graphed else 1.0)
        return run
    return [(f"{label} {str(dt)[6:]} clip={clip}", call(*shape, dt, clip)) for label, shape in AOT_SHAPES.items()
            for dt in (torch.float32,) for clip in (True, False)] + \
        [(f"ftc pack graphed clip={clip}", call(*AOT_SHAPES["ftc pack"], torch.float32, clip, True))
         for clip in (True, False)]
