"""Member-runs per minute of the FTC sweep on ONE GPU: packed ftcore vs one member run per Tune trial with
fractional GPUs. Not a test. Without CUDA it prints one line and exits 0.

    .venv/bin/python benchmarks/bench_sweep_gpu.py [--runs 256] [--k NCPUS] [--packed-slots 1] [--out DIR]
                                                    [--skip-plain] [--steps N] [--device cuda|cpu]
                                                    [--packed-override execution.KEY=VALUE ...]

How ftcore selects the device: `ftcore.fit(members, device=...)` trains a pack on that device (packs are
built on the CPU from the members' generators, then moved); `sweeps.runner.run_sweep` trains on CUDA
when the spec has `execution.gpus_per_trial > 0` (the trial's actor gets {"CPU": cpus_per_trial,
"GPU": gpus_per_trial}; concurrent trials = min(CPUs / cpus_per_trial, GPUs / gpus_per_trial)).

Workload: the grid of bench_packing.py (sweeps/ftc_capacity.yaml, task.n × adapter.depth × adapter.width
× seeds, 256 member runs by default, the shipped 3000-step budget; `--runs` scales it the same way).

* plain: bench_packing's plain trainable (common.plain_trainable: nn.Module f and g, AdamW, cosine,
  tune.report every eval_every steps) with device="cuda", `tune.with_resources(trainable, {"CPU": 1,
  "GPU": 1/k})`, max_concurrent_trials=k (default k = the node's CPU count), reuse_actors=True.
* packed: `run_sweep` with the overrides of bench_packing plus `execution.gpus_per_trial=1/S`
  (`--packed-slots S`, default 1: one trial owns the GPU and trains its packs one after another;
  S > 1 lets S trials share the GPU so their Python dispatch overlaps).

Both sides run in their own process on a fresh local Ray (bench_packing's settings). Printed: device
model, date, both rates, the ratio packed/plain, host memory (common.MemorySampler) and the peak
`memory.used` of the GPU from nvidia-smi (sampled every 0.5 s; it includes each process's CUDA context).
`--device cpu` runs the same script logic with no GPU (plain: {"CPU": 1}; packed: gpus_per_trial=0), to
check the script on a CPU-only machine; its numbers are not GPU numbers.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import bench_packing
import common

SIDES = {"plain": "plain Tune 1/k GPU", "packed": "ftcore packed"}


class GpuMemSampler:
    """Peak `nvidia-smi --query-gpu=memory.used` (MiB, all processes on the GPU), sampled in a thread."""

    def __init__(self, period: float = 0.5):
        self.exe, self.period, self.peak = shutil.which("nvidia-smi"), period, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.exe:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.exe:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run([self.exe, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                     check=False, capture_output=True, text=True, timeout=10).stdout
                self.peak = max(self.peak or 0.0, float(out.split()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            self._stop.wait(self.period)


def run_child(args) -> dict:
    work, cuda = Path(args.work), args.device == "cuda"
    with GpuMemSampler() as gpu:
        if args.side == "plain":
            resources = {"CPU": 1, **({"GPU": 1 / args.k} if cuda else {})}
            res = bench_packing.side_plain(args, work, args.device, resources, args.k)
        else:
            gpus = 1 / args.packed_slots if cuda else 0
            res = bench_packing.side_packed(args, work, [f"execution.gpus_per_trial={gpus}"])
    if gpu.peak is not None:
        res["gpu_mem_peak_mb"] = gpu.peak
    return res


def main(argv=None) -> int:
    import os

    import torch
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--runs", type=int, default=256, help="member runs (bench_packing's grid, scaled)")
    p.add_argument("--k", type=int, default=os.cpu_count(), help="concurrent plain trials, each {CPU: 1, GPU: 1/k}")
    p.add_argument("--packed-slots", type=int, default=1, help="concurrent packed trials sharing the GPU (gpus_per_trial=1/S)")
    p.add_argument("--out", default="results/bench_sweep_gpu", help="directory for bench_sweep_gpu.json and the records")
    p.add_argument("--skip-plain", action="store_true", help="run the ftcore side only")
    p.add_argument("--worker", choices=("tune", "train"), help="execution.worker of the packed side (default: the spec's)")
    p.add_argument("--steps", type=int, help="override train.steps on both sides (development only; default 3000)")
    p.add_argument("--packed-override", action="append", metavar="execution.KEY=VALUE",
                   help="extra execution.* override for the packed side (repeatable), e.g. execution.max_waste=4")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: check the script without a GPU")
    p.add_argument("--side", choices=tuple(SIDES), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.side:                                   # a child process: one side, its result to --result
        common.write_json(Path(args.result), common.side_result(run_child, args))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_sweep_gpu: needs a CUDA GPU (torch.cuda.is_available() is False); nothing was run.")
        return 0
    if args.k < 1 or args.packed_slots < 1:
        print("bench_sweep_gpu: --k and --packed-slots must be >= 1", file=sys.stderr)
        return 2
    if any(not o.startswith("execution.") or "=" not in o for o in args.packed_override or []):
        print("bench_sweep_gpu: --packed-override takes execution.KEY=VALUE", file=sys.stderr)
        return 2

    from sweeps.spec import SpecError
    try:
        spec = common.load_workload(bench_packing.workload_overrides(args))
    except SpecError as e:
        print(f"bench_sweep_gpu: {e}", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU only ({os.cpu_count()} cores; --device cpu)"
    out = Path(args.out)
    work = out / time.strftime("run-%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    n_runs = len(common.member_points(spec))
    print(f"device: {device} | {time.strftime('%Y-%m-%d %H:%M:%S %Z')} | torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}) | {os.cpu_count()} CPUs", flush=True)
    print(f"workload: {n_runs} member runs = {spec.axes} × {spec.seeds} seeds; train {spec.train}; records in {work}",
          flush=True)
    child_args = ["--runs", str(args.runs), "--k", str(args.k), "--packed-slots", str(args.packed_slots),
                  "--device", args.device] + (["--steps", str(args.steps)] if args.steps else []) \
        + (["--worker", args.worker] if args.worker else []) \
        + [f"--packed-override={o}" for o in args.packed_override or []]
    summ, rows = common.run_sides(__file__, work, child_args, SIDES, args.skip_plain)
    print(f"\ndevice: {device}")
    common.print_table(summ, SIDES)
    report = {"bench": "bench_sweep_gpu", "device": device, "machine": common.machine(),
              "workload": {"member_runs": n_runs, "axes": spec.axes, "seeds": spec.seeds, "train": spec.train},
              "k": args.k, "packed_slots": args.packed_slots, "sides": summ, "records": str(work),
              **common.compare(summ, rows, SIDES)}
    common.write_json(work / "rows.json", rows)
    common.write_json(work / "bench_sweep_gpu.json", report)
    common.write_json(out / "bench_sweep_gpu.json", report)
    print(f"table: {out / 'bench_sweep_gpu.json'}")
    return 0 if all("error" not in s for s in summ.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
