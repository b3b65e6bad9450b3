"""Benchmark the fused LoRA linear (ftkernels.lora_linear) against PEFT-style eager code and torch.compile.

    python benchmarks/bench_kernels.py                 # CUDA: full table (bf16, fwd+bwd train step)
    python benchmarks/bench_kernels.py --no-compile    # skip the torch.compile column
    TRITON_INTERPRET=1 python benchmarks/bench_kernels.py --smoke   # CPU: tiny sizes, checks it runs

One train step of one LoRA linear: y = x W + s (x A) B, then backward with grads for x, A (down), B (up);
W frozen. (a) the fused Triton kernels; (b) eager PEFT LoraLayer style: F.linear base + lora_B(lora_A(x)) * s
as separate ops (no dropout); (c) torch.compile of (b). Each row: median times, speed-ups of (a), the fused
kernels' minimum traffic and useful FLOPs as achieved bandwidth / FLOP/s, the roofline floor
max(bytes / peak_bw, flops / peak_flops) and fused time / floor. Then the grouped kernel (one pack of
members with mixed ranks) vs a Python loop of eager single-adapter steps. Not a test (no test_ prefix).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU via the Triton interpreter")
    p.add_argument("--peak-bw", type=float, default=3.35, help="peak memory bandwidth, TB/s (H100 SXM)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s (H100 SXM)")
    p.add_argument("--M", type=int, nargs="+", default=[4096, 65536])
    p.add_argument("--d", type=int, nargs="+", default=[512, 1024, 4096])
    p.add_argument("--r", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--members", type=int, default=64, help="grouped benchmark: members in the pack")
    p.add_argument("--group-M", type=int, default=1024)
    p.add_argument("--group-d", type=int, default=512)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (c)")
    return p.parse_args(argv)


def _timer(cuda: bool):
    """Median time of fn() in ms: triton.testing.do_bench on CUDA, perf_counter on CPU (smoke)."""
    if cuda:
        import triton.testing

        return lambda fn, grads: triton.testing.do_bench(fn, grad_to_none=grads, return_mode="median")

    def cpu(fn, grads, reps=3):
        times = []
        for _ in range(reps):
            for g in grads:
                g.grad = None
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    return cpu


def _traffic_flops(M, K, N, R, nbytes):
    """Minimum bytes of the fused kernels (x and dy read twice, y and dx written once, z and g written and
    read once, W/down/up read twice, their grads written) and the useful FLOPs of fwd+bwd."""
    act = 3 * M * K + 3 * M * N + 4 * M * R
    weights = 2 * K * N + 4 * (K * R + R * N)
    flops = 4 * M * K * N + 6 * M * R * (K + N)
    return (act + weights) * nbytes, flops


def _single_row(L, torch, F, M, d, r, dtype, device, timer, compile_, peaks):
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(M, d, device=device, dtype=dtype, generator=g).requires_grad_()
    W_nk = (torch.randn(d, d, device=device, generator=g) * d ** -0.5).to(dtype)        # nn.Linear layout
    W_kn = W_nk.t().contiguous()                                                        # ours: (in, out)
    A = (torch.randn(r, d, device=device, generator=g) * d ** -0.5).to(dtype).requires_grad_()  # lora_A.weight
    B = (torch.randn(d, r, device=device, generator=g) * r ** -0.5).to(dtype).requires_grad_()  # lora_B.weight
    dy = torch.randn(M, d, device=device, dtype=dtype, generator=g)
    s = 2.0

    def eager(x, A, B):
        return F.linear(x, W_nk) + F.linear(F.linear(x, A), B) * s

    def fused(x, A, B):
        return L.lora_linear_triton(x, W_kn, None, A.t(), B.t(), s)

    def step(fn):
        return lambda: fn(x, A, B).backward(dy)

    fns = {"fused": fused, "eager": eager}
    if compile_:
        fns["compile"] = torch.compile(eager, dynamic=False)
    with torch.no_grad():
        y_e, y_f = eager(x, A, B), fused(x, A, B)
        err = ((y_f.float() - y_e.float()).abs().max() / y_e.float().abs().max()).item()
    times = {}
    for name, fn in fns.items():
        step(fn)()                      # warm-up: JIT / compile outside the timing
        step(fn)()
        times[name] = timer(step(fn), [x, A, B])
    nbytes, flops = _traffic_flops(M, d, d, r, torch.finfo(dtype).bits // 8)
    floor_ms = max(nbytes / (peaks[0] * 1e12), flops / (peaks[1] * 1e12)) * 1e3
    t = times["fused"]
    comp = times.get("compile")
    return (f"{M:>6} {d:>5} {r:>3} | {t:8.3f} {times['eager']:8.3f} {comp if comp else float('nan'):8.3f} | "
            f"{times['eager'] / t:5.2f}x {(comp / t if comp else float('nan')):5.2f}x | "
            f"{nbytes / t / 1e9:7.1f} {flops / t / 1e9:7.1f} | {floor_ms:7.3f} {t / floor_ms:6.3g}x | {err:.1e}")


def _grouped_rows(L, torch, E, M, d, dtype, device, timer):
    g = torch.Generator(device=device).manual_seed(1)
    R = 64
    ranks = torch.linspace(1, R, E).round().to(torch.int32)                            # mixed 1..64
    x = torch.randn(E, M, d, device=device, dtype=dtype, generator=g).requires_grad_()
    W = (torch.randn(E, d, d, device=device, generator=g) * d ** -0.5).to(dtype)
    down = (torch.randn(E, d, R, device=device, generator=g) * d ** -0.5).to(dtype).requires_grad_()
    up = (torch.randn(E, R, d, device=device, generator=g) * R ** -0.5).to(dtype).requires_grad_()
    scale = torch.full((E,), 2.0, device=device)
    dy = torch.randn(E, M, d, device=device, dtype=dtype, generator=g)
    # the loop baseline: each member a separate eager LoRA step with its own true-rank adapter
    xs = [x[e].detach().clone().requires_grad_() for e in range(E)]
    downs = [down[e, :, :r].detach().clone().requires_grad_() for e, r in enumerate(ranks.tolist())]
    ups = [up[e, :r].detach().clone().requires_grad_() for e, r in enumerate(ranks.tolist())]
    ranks_dev = ranks.to(device)

    def grouped():
        L.grouped_lora_linear_triton(x, W, None, down, up, scale, ranks_dev).backward(dy)

    def grouped_ref():
        L.grouped_lora_linear_ref(x, W, None, down, up, scale, ranks_dev).backward(dy)

    def loop():
        for e in range(E):
            L.lora_linear_ref(xs[e], W[e], None, downs[e], ups[e], 2.0).backward(dy[e])

    times = {}
    for name, fn, grads in (("grouped", grouped, [x, down, up]), ("masked bmm", grouped_ref, [x, down, up]),
                            ("loop", loop, xs + downs + ups)):
        fn()
        times[name] = timer(fn, grads)
    t = times["grouped"]
    return [f"  {name:<11} {ms:9.3f} ms   grouped speed-up {ms / t:6.2f}x" for name, ms in times.items()]


def main(argv=None) -> int:
    args = _args(argv)
    import torch
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("bench_kernels: no CUDA device; nothing to benchmark (use --smoke for a CPU interpreter check)")
        return 0
    if args.smoke:                                           # tiny sizes, no torch.compile
        args.M, args.d, args.r = [8], [16, 32], [1, 16]
        args.members, args.group_M, args.group_d, args.no_compile = 4, 16, 16, True
    if not cuda:
        os.environ.setdefault("TRITON_INTERPRET", "1")      # must precede the kernels import
    import torch.nn.functional as F

    from ftkernels import lora_linear as L
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32        # bf16 is wrong in the interpreter
    gpu = torch.cuda.get_device_name() if cuda else "CPU (Triton interpreter smoke run)"
    print(f"# {gpu} | {datetime.datetime.now().isoformat(timespec='seconds')} | torch {torch.__version__} | "
          f"{str(dtype).removeprefix('torch.')} | peaks {args.peak_bw} TB/s, {args.peak_tflops} TFLOP/s")
    print("# train step of one LoRA linear (fwd + bwd: dx, d_down, d_up; W frozen), median ms")
    print(f"{'M':>6} {'d':>5} {'r':>3} | {'fused':>8} {'eager':>8} {'compile':>8} | {'vs_eag':>6} {'vs_cmp':>6} | "
          f"{'GB/s':>7} {'GFLOP/s':>7} | {'floor':>7} {'/floor':>6} | rel.err")
    timer = _timer(cuda)
    for M in args.M:
        for d in args.d:
            for r in args.r:
                print(_single_row(L, torch, F, M, d, r, dtype, device, timer, not args.no_compile,
                                  (args.peak_bw, args.peak_tflops)), flush=True)
                if cuda:
                    torch.cuda.empty_cache()
    print(f"# grouped: {args.members} members, ranks 1..64 (padded to 64), M={args.group_M}, d={args.group_d}")
    for line in _grouped_rows(L, torch, args.members, args.group_M, args.group_d, dtype, device, timer):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
