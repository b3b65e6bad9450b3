"""The compute floor of `bench_packing`: the matmul FLOPs of the member runs that actually trained, over this
CPU's measured matmul throughput at the members' own (small) shapes.

FLOP model (matmul FLOPs only, 2·M·N·P for an (M×N)@(N×P) product — what torch.utils.flop_counter counts; ReLU,
bias adds, masks, the loss and the AdamW update are elementwise, O(K·m) and O(params), and are left out, so the
floor is a lower bound). One FTC member (ftcore/tasks/ftc_relabel.py, ftcore/models/mlp.py,
ftcore/adapters/additive_relu.py), K = task.k = ⌈k_per_n·N⌉ rows, full batch every step:

    f: dims [d, D, ..., D, 1]  (model.depth linear layers of model.width D; frozen)
    g: dims [d, m, 1]          (adapter.depth 2: m = adapter.width hidden units)
       dims [d, ⌈m/2⌉, ⌊m/2⌋, 1] (adapter.depth 3)
    forward of a layer a→b on K rows:   2·K·a·b
    training step of g:  forward + weight gradients (2·K·a·b per layer) + input gradients of every layer but the
                         first (x is data: no gradient) = 3× forward − 2·K·d·m₁   (≈ the usual "3× forward")
    evaluation (every eval_every steps, at step 0 and at the last step): forward of g
    f(x): once per run — x is fixed (full batch), so f(x) is a constant; ftcore computes it once per pack
          (Adapter.frozen_output), the plain side recomputes it every step (extra work, above the floor)

A member run that stopped after s optimizer steps (the `steps` of its row: the evaluation step at which it
succeeded or diverged, else train.steps) took s training steps and ⌈s / eval_every⌉ + 1 evaluations.

Throughput: torch on one thread (each side runs one torch thread per trial, os.cpu_count() trials at a time),
timed on the members' first-layer products (K×d)@(d×m₁) — the bulk of their FLOPs — for the workload's K and
widths, batched (torch.bmm over 64 copies, so that the per-call dispatch cost is amortised and what is timed is
the arithmetic at these shapes); beside it, the same shapes one torch.mm call each (dispatch-bound) and a 512²
GEMM (the big-GEMM peak). The floor uses the batched small-shape number:

    floor s = total FLOPs / (small-shape FLOP/s × os.cpu_count())
"""
from __future__ import annotations

import math
import os
import time


def mlp_dims(in_dim: int, width: int, depth: int, out_dim: int = 1) -> list[int]:
    """The frozen f's layer sizes (ftcore.models.mlp.PackedMLP.dims): [in, width × (depth − 1), out]."""
    return [in_dim] + [width] * (depth - 1) + [out_dim]


def adapter_dims(in_dim: int, m: int, depth: int, out_dim: int = 1) -> list[int]:
    """g's layer sizes (ftcore.adapters.additive_relu.hidden_sizes): [d, m, 1] or [d, ⌈m/2⌉, ⌊m/2⌋, 1]."""
    hidden = [m] if depth == 2 else [(m + 1) // 2, m // 2]
    return [in_dim, *hidden, out_dim]


def forward_flops(rows: int, dims: list[int]) -> int:
    """Matmul FLOPs of one forward of a dense net with layer sizes `dims` on `rows` rows: Σ 2·rows·a·b."""
    return sum(2 * rows * a * b for a, b in zip(dims, dims[1:]))


def train_step_flops(rows: int, dims: list[int]) -> int:
    """Forward + backward matmul FLOPs of one training step of a net whose input needs no gradient:
    forward, every layer's weight gradient (same FLOPs as its forward) and every layer's input gradient
    but the first's = 3 × forward − 2·rows·dims[0]·dims[1]."""
    return 3 * forward_flops(rows, dims) - 2 * rows * dims[0] * dims[1]


def n_evals(steps: int, eval_every: int) -> int:
    """Evaluations of a run that took `steps` optimizer steps: at 0, every eval_every, and at the stop."""
    return math.ceil(steps / eval_every) + 1


def ftc_member_flops(member, steps: int) -> dict[str, int]:
    """Matmul FLOPs of one FTC member run (a ftcore MemberConfig) that took `steps` optimizer steps.
    -> {"train": g's training steps, "eval": g's evaluation forwards, "base": f(x) once, "total": their sum}."""
    K, d = member.task.k, member.task.dim
    g = adapter_dims(d, member.adapter.width, member.adapter.depth)
    f = mlp_dims(d, member.model.width, member.model.depth)
    out = {"train": steps * train_step_flops(K, g),
           "eval": n_evals(steps, member.train.eval_every) * forward_flops(K, g),
           "base": forward_flops(K, f)}
    out["total"] = sum(out.values())
    return out


def rows_flops(rows: list[dict], member_of) -> int:
    """Total matmul FLOPs of the member runs in `rows` (dicts with `steps`); member_of(row) -> MemberConfig.
    A row without steps (a failed trial) counts nothing."""
    return sum(ftc_member_flops(member_of(r), row_steps(r))["total"] for r in rows if row_steps(r) is not None)


def row_steps(row: dict) -> int | None:
    """The optimizer steps a row's run took, or None (a failed trial: no steps recorded, or NaN from Parquet)."""
    s = row.get("steps")
    return None if s is None or (isinstance(s, float) and math.isnan(s)) else int(s)


# -- throughput --------------------------------------------------------------------------------------------
def _best_rate(fn, flops: float, min_s: float = 0.02, repeats: int = 3) -> tuple[float, float]:
    """(FLOP/s, seconds per call) of fn, best of `repeats` timings of ≥ min_s each."""
    fn()
    n = 1
    while True:                                   # calls per timing so that one timing lasts ≥ min_s
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_s:
            break
        n *= 2
    best = dt / n
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return flops / best, best


def matmul_throughput(ks: list[int], dim: int, widths: list[int], batch: int = 64) -> dict:
    """This CPU's fp32 matmul throughput on one torch thread (restored after), in GFLOP/s:
    `small_batched` — Σ FLOPs / Σ time of torch.bmm over `batch` copies of (K×dim)@(dim×w) for every K in ks and
    w in widths (the floor's number); `small_single` — the same shapes, one torch.mm each (dispatch-bound);
    `gemm_512` — one 512×512 @ 512×512 torch.mm."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fl_b = t_b = fl_s = t_s = 0.0
        for k in ks:
            for w in widths:
                a, b = torch.randn(batch, k, dim), torch.randn(batch, dim, w)
                fl = 2.0 * k * dim * w
                _, dt = _best_rate(lambda a=a, b=b: torch.bmm(a, b), batch * fl)
                fl_b, t_b = fl_b + batch * fl, t_b + dt
                _, dt = _best_rate(lambda a=a[0], b=b[0]: torch.mm(a, b), fl)
                fl_s, t_s = fl_s + fl, t_s + dt
        big = torch.randn(512, 512)
        gemm, _ = _best_rate(lambda: torch.mm(big, big), 2.0 * 512 ** 3)
    finally:
        torch.set_num_threads(threads)
    return {"small_batched_gflops": round(fl_b / t_b / 1e9, 2), "small_single_gflops": round(fl_s / t_s / 1e9, 2),
            "gemm_512_gflops": round(gemm / 1e9, 2), "threads": 1, "shapes": {"K": ks, "dim": dim, "width": widths},
            "batch": batch}


def floor_seconds(total_flops: float, gflops: float, cores: int | None = None) -> float:
    """The compute floor: total FLOPs / (FLOP/s of one thread × cores)."""
    return total_flops / (gflops * 1e9 * (cores or os.cpu_count()))
