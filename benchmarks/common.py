"""Shared pieces of the packing benchmarks (`bench_packing.py` on CPU, `bench_sweep_gpu.py` on one GPU).

* the workload: a grid over the FTC capacity sweep (`sweeps/ftc_capacity.yaml`) as `key=value` overrides,
  scaled by `--runs`;
* the "plain Ray Tune" side: one member run per Tune trial, written the way a competent Ray Tune user
  writes it (ordinary `nn.Module`s, `torch.optim.AdamW`, a cosine schedule, `ray.tune.report` every
  `eval_every` steps), on exactly ftcore's data for that member (ftcore's own task code builds x, y', tol);
* a fresh local Ray with the same settings for both sides, a memory sampler, and the result tables.

Not a test and not part of the package: run the scripts from the repository root.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import platform
import resource
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = ROOT / "sweeps" / "ftc_capacity.yaml"

# The full grid: 4 N × 2 depths × 8 widths (below and above the measured capacity threshold) × 4 seeds = 256.
FULL_AXES = {"task.n": [16, 32, 64, 128], "adapter.depth": [2, 3],
             "adapter.width": [4, 8, 16, 32, 48, 64, 96, 128]}
FULL_SEEDS = 4
POINT_KEYS = tuple(FULL_AXES)


# -- workload ------------------------------------------------------------------------------------------
def workload(runs: int) -> tuple[dict[str, list[int]], int]:
    """(axes, seeds) with about `runs` member runs.

    >= 256: the full grid with ⌊runs / 64⌋ seeds. Below: the largest halving of the full grid that fits,
    halving seeds first (4 → 2 → 1), then the widths (every other one, so they still span the
    threshold), then N (every other), then the depths.
    """
    axes = {k: list(v) for k, v in FULL_AXES.items()}
    points = math.prod(len(v) for v in axes.values())
    if runs >= points * FULL_SEEDS:
        return axes, runs // points
    seeds = FULL_SEEDS
    while seeds * points > runs:
        if seeds > 1:
            seeds //= 2
        else:
            key = next((k for k in ("adapter.width", "task.n", "adapter.depth") if len(axes[k]) > 1), None)
            if key is None:
                break
            axes[key] = axes[key][::2]
            points = math.prod(len(v) for v in axes.values())
    return axes, seeds


def overrides(axes: dict, seeds: int, steps: int | None = None, extra: list[str] = ()) -> list[str]:
    """The dotlist that turns sweeps/ftc_capacity.yaml into a grid over `axes` × `seeds` of gradient-trained members.

    The shipped spec also has a `train.method: [adam, construction]` axis (pinned here to adam: both sides train
    every member with Adam) and a capacity report (dropped: it needs search.kind capacity, and nothing reports)."""
    out = ["search.kind=grid", f"seeds={seeds}", "report=null", "axes[train.method]=[adam]"]
    for key, values in axes.items():
        # task.n and adapter.depth are already axes (a list override replaces them); adapter.width is the
        # capacity-search parameter, added as a new axis with OmegaConf's bracket key syntax.
        name = key if key != "adapter.width" else f"axes[{key}]"
        out.append(f"{name}=[{','.join(map(str, values))}]")
    if steps is not None:
        out.append(f"train.steps={steps}")
    return out + list(extra)


def load_workload(overrides_: list[str]):
    from sweeps.spec import load_spec
    return load_spec(SPEC_PATH, overrides_)


def member_points(spec) -> list[tuple[dict, int]]:
    """Every (grid point, seed) of the spec, in the order the grid search builds them."""
    return [(point, seed) for point in spec.grid_points() for seed in spec.seed_list()]


def plain_member_dict(base: dict, point: dict, seed: int) -> dict:
    """The nested member config of one point: the spec's sections with the point's values set."""
    d = {s: dict(v) for s, v in base.items()}
    for key, value in point.items():
        section, fld = key.split(".", 1)
        d[section][fld] = value
    d["seed"] = seed
    return d


def check_same_members(spec) -> None:
    """The plain trainable rebuilds each member from (base sections, point, seed): it must be the very
    member config (same run_id) that ftcore's grid search builds."""
    from ftcore.config import member_from_dict
    from sweeps.spec import build_member
    base = spec.base_dict()
    for point, seed in member_points(spec):
        mine = member_from_dict(plain_member_dict(base, point, seed)).run_id()
        if mine != build_member(spec, point, seed).run_id():
            raise SystemExit(f"plain member config differs from ftcore's at {point}, seed {seed}")


# -- the plain side --------------------------------------------------------------------------------------
def plain_problem(member):
    """ftcore's own data for this one member -> (x (K, d), y' (K, 1), tol, frozen f as nn.Sequential)."""
    from torch import nn

    from ftcore.registry import TASKS
    task = TASKS.get_entry(member.task.name)([member.task], member.model, [member.seed])
    packed_f = task.build_base()                  # ftcore's frozen f (member axis of size 1)
    layers = []
    for l in range(packed_f.depth):
        W = packed_f.weights[l][0]                 # (in, out)
        lin = nn.Linear(W.shape[0], W.shape[1], bias=packed_f.biases is not None)
        lin.weight.data.copy_(W.T)
        if lin.bias is not None:
            lin.bias.data.copy_(packed_f.biases[l][0])
        layers.append(lin)
        last = l == packed_f.depth - 1
        if member.model.activation == "relu" and (not last or member.model.last_activation):
            layers.append(nn.ReLU())
    f = nn.Sequential(*layers).requires_grad_(False)
    return task.x[0], task.y[0], float(member.task.tol), f


def plain_g(in_dim: int, width: int, depth: int):
    """The additive ReLU net g as a plain nn.Sequential: m hidden units (depth 2) or ⌈m/2⌉, ⌊m/2⌋
    (depth 3); the last layer starts at zero so f + g = f at step 0."""
    from torch import nn
    hidden = [width] if depth == 2 else [(width + 1) // 2, width // 2]
    dims = [in_dim, *hidden]
    layers = []
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b), nn.ReLU()]
    out = nn.Linear(dims[-1], 1)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    return nn.Sequential(*layers, out)


def train_plain_member(member, device: str = "cpu", report=None) -> dict:
    """One member run in plain PyTorch: full-batch AdamW on f + g, cosine lr, early stop on
    max_j |f(x_j) + g(x_j) − y'_j| < tol, `report(metrics)` every eval_every steps. -> final metrics."""
    import torch
    tr = member.train
    torch.manual_seed(member.seed)
    x, y, tol, f = plain_problem(member)
    g = plain_g(x.shape[1], member.adapter.width, member.adapter.depth)
    x, y, f, g = x.to(device), y.to(device), f.to(device), g.to(device)
    opt = torch.optim.AdamW(g.parameters(), lr=tr.lr, weight_decay=tr.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(tr.steps, 1)) if tr.schedule == "cosine" else None
    metrics: dict = {}
    for step in range(tr.steps + 1):
        if step % tr.eval_every == 0 or step == tr.steps:
            with torch.no_grad():
                err = (f(x) + g(x) - y).abs()
                max_err, loss = float(err.max()), float(err.pow(2).mean())
            finite = math.isfinite(max_err) and math.isfinite(loss)
            success = finite and max_err < tol
            metrics = {"step": step, "fit/max_err": max_err, "fit/success": float(success), "train/loss": loss,
                       "status": "ok" if finite else "diverged"}
            if report is not None:
                report(metrics)
            if success or not finite or step == tr.steps:
                break
        loss = (f(x) + g(x) - y).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tr.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(g.parameters(), tr.grad_clip)
        opt.step()
        if sched is not None:
            sched.step()
    return metrics


def plain_trainable(config: dict) -> None:
    """The Tune function trainable: one member run per trial (torch on one thread, as Ray's docs advise)."""
    import torch
    from ray import tune

    from ftcore.config import member_from_dict
    torch.set_num_threads(1)
    point = {k: config[k] for k in POINT_KEYS}
    member = member_from_dict(plain_member_dict(config["base"], point, config["seed"]))
    train_plain_member(member, config.get("device", "cpu"), report=tune.report)


def plain_param_space(spec, device: str = "cpu") -> dict:
    from ray import tune
    return {**{k: tune.grid_search(list(spec.axes[k])) for k in POINT_KEYS},
            "seed": tune.grid_search(spec.seed_list()), "base": spec.base_dict(), "device": device}


def _progress_callback(total: int, progress):
    """A Tune callback printing every ~10% of finished trials (the plain side's progress line)."""
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self):
            self.done, self.t0 = 0, time.perf_counter()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            if self.done % max(1, total // 10) == 0 or self.done == total:
                progress(f"{self.done}/{total} trials done | {time.perf_counter() - self.t0:.0f}s")

    return Progress()


def run_plain_tune(spec, out_dir: Path, resources: dict, max_concurrent: int, device: str = "cpu",
                   progress=print) -> list[dict]:
    """Run the plain side on the connected Ray. -> one row per member run (run_id, point, seed, final metrics)."""
    import sys

    import ray.cloudpickle
    from ray import tune

    from ftcore.config import member_from_dict
    # The scripts import this file as `common` from benchmarks/; ship its functions by value so the Ray
    # workers need not find it on their sys.path.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    tuner = tune.Tuner(
        tune.with_resources(plain_trainable, resources),
        param_space=plain_param_space(spec, device),
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name="plain", storage_path=str(Path(out_dir).resolve()), verbose=0,
                                  callbacks=[_progress_callback(len(member_points(spec)), progress)]),
    )
    rows = []
    for res in tuner.fit():
        cfg, m = res.config, res.metrics or {}
        point = {k: cfg[k] for k in POINT_KEYS}
        member = member_from_dict(plain_member_dict(cfg["base"], point, cfg["seed"]))
        rows.append({"run_id": member.run_id(), **point, "seed": cfg["seed"],
                     "status": "failed" if res.error else m.get("status", "failed"),
                     "steps": m.get("step"), "fit/max_err": m.get("fit/max_err"),
                     "fit/success": float(m.get("fit/success") or 0.0)})
    return rows


# -- Ray and measurement ---------------------------------------------------------------------------------
def init_local_ray() -> float:
    """A fresh local Ray, the same settings for both sides (those of sweeps.runner.init_ray). -> seconds."""
    import ray
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             _node_ip_address="127.0.0.1")
    elapsed = time.perf_counter() - t0
    if os.environ.get("BENCH_RAY_UP"):                  # tells run_side_process that Ray came up
        Path(os.environ["BENCH_RAY_UP"]).touch()
    return elapsed


class MemorySampler:
    """Peak memory of the local Ray this driver started, sampled every `period` s in a thread.

    Every process of a local Ray (GCS, raylet, agents, workers) descends from the driver. Measured:
    the peak over samples of the summed RSS and PSS of (a) the Ray worker processes (`default_worker.py`:
    Tune trial actors, Train workers) and (b) all descendants. RSS counts shared pages (torch's
    libraries) once per process; PSS splits them, so PSS sums are the honest total. The driver's own
    high-water RSS comes from `resource.getrusage` (`driver_maxrss_mb`).
    """

    def __init__(self, period: float = 0.5):
        import psutil  # vendored by Ray: import ray first
        self.psutil, self.period = psutil, period
        self.me = psutil.Process()
        self.kind: dict[int, bool] = {}
        self.peak = {"workers_rss_mb": 0.0, "workers_pss_mb": 0.0, "all_rss_mb": 0.0, "all_pss_mb": 0.0,
                     "max_workers": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _is_worker(self, p) -> bool:
        if p.pid not in self.kind:
            try:
                self.kind[p.pid] = any("default_worker.py" in a for a in p.cmdline())
            except (self.psutil.Error, OSError):
                return False
        return self.kind[p.pid]

    def sample(self) -> None:
        tot = {"workers_rss_mb": 0.0, "workers_pss_mb": 0.0, "all_rss_mb": 0.0, "all_pss_mb": 0.0}
        n_workers = 0
        for p in self.me.children(recursive=True):
            try:
                mem = p.memory_full_info()
            except (self.psutil.Error, OSError):
                continue
            rss, pss = mem.rss / 2**20, getattr(mem, "pss", mem.rss) / 2**20
            tot["all_rss_mb"] += rss
            tot["all_pss_mb"] += pss
            if self._is_worker(p):
                n_workers += 1
                tot["workers_rss_mb"] += rss
                tot["workers_pss_mb"] += pss
        for k, v in tot.items():
            self.peak[k] = max(self.peak[k], round(v, 1))
        self.peak["max_workers"] = max(self.peak["max_workers"], n_workers)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period)


def driver_maxrss_mb() -> float:
    """High-water RSS of this process (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def machine() -> dict:
    import torch
    try:
        import ray
        ray_version = ray.__version__
    except ImportError:
        ray_version = ""
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(), "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "ray": ray_version}


# -- one side per process, and the tables ---------------------------------------------------------------
def run_side_process(script: str, side: str, work: Path, args: list[str]) -> dict:
    """Run one side in a fresh Python process (its own local Ray, its own driver high-water RSS):
    `script --side SIDE --work WORK --result FILE ARGS`. -> the side's result dict, or {"error": ...}."""
    import subprocess
    import sys
    result, ray_up = work / f"{side}.json", work / f"{side}.ray_up"
    for attempt in (1, 2):
        rc = subprocess.call([sys.executable, script, "--side", side, "--work", str(work), "--result", str(result), *args],
                             env={**os.environ, "BENCH_RAY_UP": str(ray_up)})
        if result.exists():
            return json.loads(result.read_text())
        if ray_up.exists() or attempt == 2:
            break
        # ray.init aborts the process when the GCS does not come up in time (a loaded machine): once more.
        print(f"[{side}] the side process died before ray.init finished (exit {rc}); retrying once", flush=True)
    return {"error": f"side process exited {rc} without a result"}


def run_sides(script: str, work: Path, child_args: list[str], labels: dict[str, str],
              skip_plain: bool) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """Run each side of a benchmark in its own process (fresh local Ray); -> (summaries, rows) per side."""
    summ, rows = {}, {}
    for side in [s for s in labels if not (s == "plain" and skip_plain)]:
        print(f"\n== {labels[side]} ==", flush=True)
        res = run_side_process(script, side, work, child_args)
        summ[side], rows[side] = summarize(res), res.get("rows", [])
        if "error" in res:
            print(f"{labels[side]} FAILED: {res['error']}", flush=True)
    return summ, rows


def side_result(fn, *a) -> dict:
    """Call a side inside its child process; any failure becomes its result (the table says why)."""
    try:
        res = fn(*a)
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        res = {"error": f"{type(e).__name__}: {e}"}
    res["driver_maxrss_mb"] = driver_maxrss_mb()
    return res


def summarize(res: dict) -> dict:
    """The table row of one side from its child's result (rows with point, status, fit/success)."""
    if "error" in res:
        return {"error": res["error"]}
    rows, wall = res["rows"], res["wall_s"]
    fits = fit_fractions(rows)
    return {"member_runs": len(rows), "ray_init_s": round(res["ray_init_s"], 2), "wall_s": round(wall, 2),
            "runs_per_min": round(len(rows) / wall * 60, 1), "driver_maxrss_mb": res["driver_maxrss_mb"],
            **{f"peak_{k}": v for k, v in res["memory"].items()},
            "status": {s: sum(r.get("status") == s for r in rows) for s in ("ok", "diverged", "failed")},
            "fit_total": [sum(c[0] for c in fits.values()), len(rows)], "fit_by_depth_width": fits,
            **{k: res[k] for k in ("settings", "counts", "gpu_mem_peak_mb") if k in res}}


TABLE = [("member runs", "member_runs", "{}"), ("ray.init s (apart)", "ray_init_s", "{:.2f}"),
         ("wall s (init -> rows)", "wall_s", "{:.1f}"), ("member-runs / min", "runs_per_min", "{:.1f}"),
         ("driver max RSS MB", "driver_maxrss_mb", "{:.0f}"), ("Ray workers peak RSS MB", "peak_workers_rss_mb", "{:.0f}"),
         ("Ray workers peak PSS MB", "peak_workers_pss_mb", "{:.0f}"), ("all Ray procs peak PSS MB", "peak_all_pss_mb", "{:.0f}"),
         ("Ray workers (max)", "peak_max_workers", "{}"), ("GPU memory used peak MB", "gpu_mem_peak_mb", "{:.0f}")]


def print_table(summ: dict[str, dict], labels: dict[str, str]) -> None:
    """Both sides side by side: throughput, memory, outcomes; then each side's settings."""
    names = list(summ)
    print(f"\n{'':<28}" + "".join(f"{labels[n]:>18}" for n in names))
    for label, key, fmt in TABLE:
        if any(key in summ[n] for n in names):
            print(f"{label:<28}" + "".join(f"{fmt.format(summ[n][key]) if key in summ[n] else '-':>18}" for n in names))
    cells = [f"{s['fit_total'][0]}/{s['fit_total'][1]}" if "fit_total" in s else "-" for s in summ.values()]
    print(f"{'runs that fit':<28}" + "".join(f"{c:>18}" for c in cells))
    cells = ["{ok}/{diverged}/{failed}".format(**s["status"]) if "status" in s else "-" for s in summ.values()]
    print(f"{'ok/diverged/failed':<28}" + "".join(f"{c:>18}" for c in cells))
    for n in names:
        print(f"  {labels[n]}: {summ[n].get('settings') or 'FAILED: ' + summ[n].get('error', '')}")
    print("  memory: driver = getrusage high-water RSS of the side's own driver process; Ray workers = peak of the "
          "summed RSS / PSS of the default_worker.py processes (sampled every 0.5 s); all Ray procs = every process "
          "of the local Ray (GCS, raylet, agents, workers)" + (", GPU = peak nvidia-smi memory.used"
                                                               if any("gpu_mem_peak_mb" in s for s in summ.values()) else ""))


def fit_fractions(rows: list[dict]) -> dict[str, list[int]]:
    """{"depth=D,width=W": [runs that fit, runs]} over rows with adapter.depth, adapter.width, fit/success."""
    out: dict[str, list[int]] = {}
    for r in rows:
        key = f"depth={int(r['adapter.depth'])},width={int(r['adapter.width'])}"
        cell = out.setdefault(key, [0, 0])
        ok = r.get("fit/success")
        cell[0] += int(ok is not None and not (isinstance(ok, float) and math.isnan(ok)) and ok > 0.5)
        cell[1] += 1
    return dict(sorted(out.items(), key=lambda kv: tuple(int(p.split("=")[1]) for p in kv[0].split(","))))


def agreement(a: list[dict], b: list[dict]) -> dict:
    """Per run (joined on run_id): how often both sides agree on fit/success."""
    sa = {r["run_id"]: float(r.get("fit/success") or 0) > 0.5 for r in a}
    sb = {r["run_id"]: float(r.get("fit/success") or 0) > 0.5 for r in b}
    common_ids = sa.keys() & sb.keys()
    same = sum(sa[i] == sb[i] for i in common_ids)
    return {"joined": len(common_ids), "agree": same,
            "only_plain_fit": sum(sa[i] and not sb[i] for i in common_ids),
            "only_packed_fit": sum(sb[i] and not sa[i] for i in common_ids)}


def print_fractions(sides: dict[str, dict]) -> None:
    """Side-by-side fit fractions per (depth, width)."""
    names = list(sides)
    keys = sorted({k for s in sides.values() for k in s}, key=lambda k: tuple(int(p.split("=")[1]) for p in k.split(",")))
    print(f"{'fit/success':<22}" + "".join(f"{n:>16}" for n in names))
    for k in keys:
        cells = []
        for n in names:
            c = sides[n].get(k)
            cells.append(f"{c[0]:>4}/{c[1]:<4} {c[0] / c[1]:4.2f}" if c else "-")
        print(f"{k:<22}" + "".join(f"{c:>16}" for c in cells))


def compare(summ: dict[str, dict], rows: dict[str, list[dict]], labels: dict[str, str]) -> dict:
    """Print the fit fractions side by side, per-run agreement and the ratio packed/plain of member-runs
    per minute (when both sides ran). -> the numbers for the JSON."""
    ok = [n for n in summ if "error" not in summ[n]]
    if ok:
        print()
        print_fractions({labels[n]: summ[n]["fit_by_depth_width"] for n in ok})
    if not {"plain", "packed"} <= set(ok):
        return {}
    agree = agreement(rows["plain"], rows["packed"])
    rate = {n: summ[n]["member_runs"] / summ[n]["wall_s"] for n in ("plain", "packed")}
    ratio = rate["packed"] / rate["plain"]
    print(f"\nfit/success agreement per run (joined on run_id): {agree['agree']}/{agree['joined']} "
          f"(only plain fit: {agree['only_plain_fit']}, only packed fit: {agree['only_packed_fit']}; "
          "the adapter inits differ, so borderline runs may flip)")
    print(f"\nratio packed / plain, member-runs per minute: {ratio:.2f}x")
    return {"ratio_packed_over_plain": round(ratio, 2), "fit_agreement": agree}


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)
