"""Headline CPU benchmark: the same FTC capacity workload as plain Ray Tune (one member run per trial) and
as one packed ftcore sweep. Not a test.

    .venv/bin/python benchmarks/bench_packing.py [--runs 256] [--out DIR] [--skip-plain] [--worker tune|train]
                                                  [--steps N]   # N < 3000 only to try the script out

Workload (both sides, identical member configs, checked by run_id): sweeps/ftc_capacity.yaml as a grid —
task.n ∈ {16, 32, 64, 128} × adapter.depth ∈ {2, 3} × adapter.width ∈ {4, 8, 16, 32, 48, 64, 96, 128}
× 4 seeds = 256 member runs; the shipped budget: train.steps 3000, lr 1e-2, cosine, eval_every 50,
tol 0.1, k_per_n 2 (K = 2N), early stop on fit/success. `--runs R` scales it (common.workload): R ≥ 256
keeps the grid with ⌊R/64⌋ seeds; R < 256 halves seeds (4 → 2 → 1), then widths (every other), then N,
then depths, to the largest sub-grid ≤ R. One plain member run takes 0.03–2 s on one core of the 2-core
dev machine (early stop vs the full 3000 steps), so the default plain side stays well under 15 minutes.

(a) "plain Ray Tune" — what a competent Ray Tune user writes (common.plain_trainable): a function
    trainable builds the frozen f (ftcore's own f weights copied into nn.Linear/ReLU) and g as ordinary
    nn.Modules (nn.Sequential Linear-ReLU-Linear, or two hidden layers ⌈m/2⌉, ⌊m/2⌋, last layer zero),
    gets x, y', tol from ftcore's FtcRelabel for that one member, trains f + g full-batch with
    torch.optim.AdamW(lr, weight_decay=0) + CosineAnnealingLR, early-stops on max |f + g − y'| < tol and
    calls ray.tune.report every eval_every steps. Best standard settings: Tuner(with_resources(trainable,
    {"CPU": 1}), param_space = grid_search over the points and seeds, TuneConfig(num_samples=1,
    max_concurrent_trials=ncpus, reuse_actors=True)), torch.set_num_threads(1) in the trainable.
(b) "ftcore packed" — the same points as one sweep through the real stack: load_spec(ftc_capacity.yaml,
    [search.kind=grid, axes, seeds, execution.worker=..., --packed-override ...]) -> sweeps.runner.run_sweep
    -> read the runs back from Parquet (analysis.load.read_runs). The planner packs points of different
    (N, width) together while the padding stays within max_waste × own cost + pack_overhead (sweeps/plan.py).

Each side runs in its own Python process on a fresh local Ray (ray.init(num_cpus=os.cpu_count(),
include_dashboard=False, _node_ip_address="127.0.0.1"), same logging settings). Wall time runs from
after ray.init to the rows in hand; ray.init is reported apart. Memory: see common.MemorySampler.
Adapter inits differ (nn.Module init vs ftcore's per-member generators), so outcomes are compared
statistically: the fraction of runs that fit per (depth, width), and per-run agreement on fit/success.
Compute floor (benchmarks/floor.py): each side's member runs' matmul FLOPs (from the `steps` of its own rows:
Tune's last report on the plain side, the Parquet rows on the packed side) over this CPU's measured one-thread
matmul throughput at the members' shapes × os.cpu_count(); printed per side beside the ratio as wall s,
member-runs / min and "× floor" (wall / floor), and stored under sides.<side>.floor and "floor" in the JSON.
Writes DIR/bench_packing.json (DIR defaults to results/bench_packing) and keeps each side's records in
DIR/run-<timestamp>/{plain,packed}.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import common
import floor

SIDES = {"plain": "plain Ray Tune", "packed": "ftcore packed"}


def workload_overrides(args) -> list[str]:
    axes, seeds = common.workload(args.runs)
    return common.overrides(axes, seeds, args.steps)


def packed_overrides(args) -> list[str]:
    extra = list(getattr(args, "packed_override", None) or [])
    return workload_overrides(args) + ([f"execution.worker={args.worker}"] if args.worker else []) + extra


# -- the compute floor (benchmarks/floor.py) -------------------------------------------------------------------
def compute_floor(spec, summ: dict[str, dict], rows: dict[str, list[dict]]) -> dict:
    """Measure this CPU's matmul throughput at the workload's shapes, then per side that ran: its member runs'
    matmul FLOPs, floor s = FLOPs / (small-shape FLOP/s × cores) and × floor = wall / floor (written into
    summ[side]["floor"]). Prints the block and returns the throughput for the JSON."""
    from ftcore.config import member_from_dict
    ok = [n for n in summ if "error" not in summ[n]]
    if not ok:
        return {}
    base, members = spec.base_dict(), {}

    def member_of(r):
        key = (*(int(r[k]) for k in common.POINT_KEYS), int(r["seed"]))
        if key not in members:
            point = {k: int(r[k]) for k in common.POINT_KEYS}
            members[key] = member_from_dict(common.plain_member_dict(base, point, key[-1]))
        return members[key]

    ms = [member_of({**p, "seed": s}) for p, s in common.member_points(spec)]
    tp = floor.matmul_throughput(sorted({m.task.k for m in ms}), ms[0].task.dim,
                                 sorted({floor.adapter_dims(1, m.adapter.width, m.adapter.depth)[1] for m in ms}))
    cores = os.cpu_count()
    for n in ok:
        fl = floor.rows_flops(rows[n], member_of)
        fs = floor.floor_seconds(fl, tp["small_batched_gflops"], cores)
        summ[n]["floor"] = {"matmul_gflop": round(fl / 1e9, 3), "floor_s": round(fs, 4),
                            "x_floor": round(summ[n]["wall_s"] / fs, 1) if fs > 0 else None,   # None: no steps
                            "steps": sum(floor.row_steps(r) or 0 for r in rows[n])}
    print(f"\ncompute floor (benchmarks/floor.py): matmul FLOPs of the member runs as they trained (their own steps) "
          f"/ ({tp['small_batched_gflops']:.2f} GFLOP/s, one thread, small shapes batched × {cores} cores); "
          f"same CPU, one thread: {tp['small_single_gflops']:.2f} GFLOP/s one small torch.mm per call, "
          f"{tp['gemm_512_gflops']:.2f} GFLOP/s 512² GEMM")
    print(f"{'':<28}" + "".join(f"{SIDES[n]:>18}" for n in ok))
    for label, get, fmt in [("optimizer steps (all runs)", lambda s: s["floor"]["steps"], "{}"),
                            ("matmul GFLOP", lambda s: s["floor"]["matmul_gflop"], "{:.2f}"),
                            ("floor s", lambda s: s["floor"]["floor_s"], "{:.3g}"),
                            ("wall s", lambda s: s["wall_s"], "{:.1f}"),
                            ("member-runs / min", lambda s: s["runs_per_min"], "{:.1f}"),
                            ("x floor (wall / floor)", lambda s: s["floor"]["x_floor"], "{:.1f}")]:
        print(f"{label:<28}" + "".join(f"{'-' if get(summ[n]) is None else fmt.format(get(summ[n])):>18}" for n in ok))
    return {**tp, "cores": cores, "used": "small_batched_gflops"}


# -- one side, in a child process (bench_sweep_gpu.py reuses these with a device) -----------------------------
def side_plain(args, work: Path, device: str = "cpu", resources: dict | None = None, concurrent: int | None = None) -> dict:
    spec = common.load_workload(workload_overrides(args))
    common.check_same_members(spec)
    concurrent = concurrent or os.cpu_count()
    resources = resources or {"CPU": 1}
    init_s = common.init_local_ray()
    import ray
    with common.MemorySampler() as mem:
        t0 = time.perf_counter()
        rows = common.run_plain_tune(spec, work / "plain", resources, concurrent, device,
                                     progress=lambda m: print(f"[plain] {m}", flush=True))
        wall = time.perf_counter() - t0
    ray.shutdown()
    return {"rows": rows, "wall_s": wall, "ray_init_s": init_s, "memory": mem.peak,
            "settings": f"function trainable per member run on {device}, with_resources {resources}, "
                        f"max_concurrent_trials={concurrent}, reuse_actors=True, torch.set_num_threads(1), "
                        f"tune.report every {spec.train['eval_every']} steps"}


def side_packed(args, work: Path, extra: list[str] = ()) -> dict:
    import json

    from sweeps.spec import SpecError
    try:
        spec = common.load_workload(packed_overrides(args) + list(extra))
    except SpecError as e:
        return {"error": f"the sweep spec refuses the packed side's overrides: {e}"}
    from analysis.load import read_runs
    from sweeps.runner import run_sweep
    out = work / "packed"
    init_s = common.init_local_ray()
    import ray
    with common.MemorySampler() as mem:
        t0 = time.perf_counter()
        counts = run_sweep(spec, out, progress=lambda m: print(f"[packed] {m}", flush=True))
        df = read_runs(out)
        wall = time.perf_counter() - t0
    ray.shutdown()
    keep = ["run_id", *common.POINT_KEYS, "seed", "status", "steps", "fit/max_err", "fit/success", "pack_size",
            "device", "kernels_impl"]
    rows = json.loads(df[[c for c in keep if c in df.columns]].to_json(orient="records"))
    ex = spec.execution
    worker = getattr(ex, "worker", "train (runner without execution.worker)")
    train_runs = len(list((out / "ray").glob("train-*")))       # Ray Train runs the trials launched
    ran_on = sorted({f"{r.get('device', 'cpu')}/{r.get('kernels_impl', '?')}" for r in rows})
    return {"rows": rows, "wall_s": wall, "ray_init_s": init_s, "memory": mem.peak, "counts": counts,
            "settings": f"sweeps.runner.run_sweep, execution.worker={worker}, cpus_per_trial={ex.cpus_per_trial}, "
                        f"gpus_per_trial={getattr(ex, 'gpus_per_trial', 0)}, pack_size={ex.pack_size or 'auto'}, "
                        f"max_waste={ex.max_waste}; "
                        f"device/kernels: {', '.join(ran_on)}; Ray Train runs launched: {train_runs}"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--runs", type=int, default=256, help="member runs (scales the grid; see the docstring)")
    p.add_argument("--out", default="results/bench_packing", help="directory for bench_packing.json and the records")
    p.add_argument("--skip-plain", action="store_true", help="run the ftcore side only")
    p.add_argument("--worker", choices=("tune", "train"), help="execution.worker of the packed side (default: the spec's)")
    p.add_argument("--steps", type=int, help="override train.steps on both sides (development only; default 3000)")
    p.add_argument("--packed-override", action="append", metavar="execution.KEY=VALUE",
                   help="extra execution.* override for the packed side (repeatable), e.g. execution.max_waste=4")
    p.add_argument("--side", choices=tuple(SIDES), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.side:                                   # a child process: one side, its result to --result
        fn = side_plain if args.side == "plain" else side_packed
        common.write_json(Path(args.result), common.side_result(fn, args, Path(args.work)))
        return 0

    if any(not o.startswith("execution.") or "=" not in o for o in args.packed_override or []):
        print("bench_packing: --packed-override takes execution.KEY=VALUE (member configs must stay the same)",
              file=sys.stderr)
        return 2
    from sweeps.spec import SpecError
    try:
        spec = common.load_workload(workload_overrides(args))
    except SpecError as e:
        print(f"bench_packing: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    work = out / time.strftime("run-%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    n_runs = len(common.member_points(spec))
    print(f"workload: {n_runs} member runs = {spec.axes} × {spec.seeds} seeds; train {spec.train}; "
          f"task {spec.task}; records in {work}", flush=True)
    child_args = ["--runs", str(args.runs)] + (["--steps", str(args.steps)] if args.steps else []) \
        + (["--worker", args.worker] if args.worker else []) \
        + [f"--packed-override={o}" for o in args.packed_override or []]
    summ, rows = common.run_sides(__file__, work, child_args, SIDES, args.skip_plain)
    common.print_table(summ, SIDES)
    compared = common.compare(summ, rows, SIDES)
    floor_tp = compute_floor(spec, summ, rows)
    report = {"bench": "bench_packing", "machine": common.machine(),
              "workload": {"member_runs": n_runs, "axes": spec.axes, "seeds": spec.seeds, "train": spec.train,
                           "task": spec.task},
              "sides": summ, "floor": floor_tp, "records": str(work), **compared}
    common.write_json(work / "rows.json", rows)
    common.write_json(work / "bench_packing.json", report)
    common.write_json(out / "bench_packing.json", report)
    print(f"table: {out / 'bench_packing.json'}")
    return 0 if all("error" not in s for s in summ.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
