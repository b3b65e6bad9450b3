"""Load test: sweeps of 500 to 2,000 tiny member runs through the real CLI, and how wall time and the Tune
driver's peak memory grow with the number of runs.

    python benchmarks/load_test.py                     # sizes 500 1000 2000
    python benchmarks/load_test.py --sizes 500 2000 --keep results/load

For each size it runs `ftsweep run tests/load_sweep.yaml seeds=K --out DIR` (4 grid points × K seeds) in a
subprocess, parses the closing line (`done: N member runs in R round(s), W s; driver peak RSS M MiB`),
reads DIR/runs/part-*.parquet back and checks: exactly N rows, unique run_ids, every status ok. Then one
table: runs, the sweep's wall time W (Tune driver, from the searcher's start to the last trial; without
Ray start-up and the report), the whole command's wall time, runs/s, driver peak RSS, and both growth
ratios against the smallest size. "Where the time goes" comes from the CLI's own progress lines (which
carry the elapsed time, to the second): building and planning the round (before "round 1:") vs running
the trials. Exits 1 if any check fails.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "tests" / "load_sweep.yaml"
GRID_POINTS = 4            # task.n × adapter.width in tests/load_sweep.yaml

DONE_RE = re.compile(r"done: (\d+) member runs in (\d+) wave\(s\), ([\d.]+)s; driver peak RSS (\d+) MiB")
ROUND_RE = re.compile(r"\] round 1: .*\| (\d+)m(\d+)s")
TRIAL_RE = re.compile(r"\]   trial \S+: \d+ runs .*\| (\d+)m(\d+)s")


def read_runs(out: Path) -> pa.Table:
    parts = sorted((out / "runs").glob("part-*.parquet"))
    if not parts:
        return pa.table({"run_id": pa.array([], pa.string()), "status": pa.array([], pa.string())})
    return pa.concat_tables([pq.read_table(p, columns=["run_id", "status"]) for p in parts], promote_options="default")


def dir_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def run_size(n_runs: int, out: Path, overrides: list[str] = ()) -> dict:
    if n_runs % GRID_POINTS:
        raise SystemExit(f"--sizes: {n_runs} is not a multiple of the {GRID_POINTS} grid points")
    cmd = [sys.executable, "-m", "sweeps.cli", "run", str(SPEC), f"seeds={n_runs // GRID_POINTS}", *overrides,
           "--out", str(out)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
    total = time.perf_counter() - t0
    res = {"n": n_runs, "total_s": total, "rc": r.returncode, "errors": []}
    m = DONE_RE.search(r.stdout)
    if r.returncode != 0 or not m:
        res["errors"].append(f"exit {r.returncode}, done line {'found' if m else 'missing'}: "
                             f"{(r.stdout[-1500:] + r.stderr[-1500:]).strip()}")
        return res
    res.update(done_runs=int(m.group(1)), rounds=int(m.group(2)), wall_s=float(m.group(3)), rss_mib=int(m.group(4)))
    rm = ROUND_RE.search(r.stdout)
    trials = [int(a) * 60 + int(b) for a, b in TRIAL_RE.findall(r.stdout)]
    if rm:
        res["to_round_s"] = int(rm.group(1)) * 60 + int(rm.group(2))
    if trials:
        res["last_trial_s"] = max(trials)
    res["ray_dir_mib"] = dir_mib(out / "ray")
    runs = read_runs(out)
    ids = runs.column("run_id").to_pylist()
    statuses = set(runs.column("status").to_pylist())
    if res["done_runs"] != n_runs:
        res["errors"].append(f"done line says {res['done_runs']} runs, expected {n_runs}")
    if len(ids) != n_runs:
        res["errors"].append(f"{len(ids)} rows in runs/, expected {n_runs}")
    if len(set(ids)) != len(ids):
        res["errors"].append(f"{len(ids) - len(set(ids))} duplicate run_ids")
    if statuses - {"ok"}:
        res["errors"].append(f"statuses {sorted(map(str, statuses))}, expected only ok")
    return res


def table(results: list[dict]) -> str:
    ok = [r for r in results if "wall_s" in r]
    base = min(ok, key=lambda r: r["n"]) if ok else None
    head = (f"{'runs':>6} {'wall s':>7} {'runs/s':>7} {'cmd s':>6} {'RSS MiB':>8} | {'wall x':>6} {'RSS x':>6} "
            f"{'runs x':>6} | {'to round 1 s':>12} {'trials s':>8} {'ray/ MiB':>8}  check")
    lines = [head, "-" * len(head)]
    for r in results:
        if "wall_s" not in r:
            lines.append(f"{r['n']:>6} {'-':>7} {'-':>7} {r['total_s']:>6.1f}  FAILED: {r['errors'][0][:200]}")
            continue
        to_round = r.get("to_round_s")
        trials = r["last_trial_s"] - to_round if to_round is not None and "last_trial_s" in r else None
        lines.append(
            f"{r['n']:>6} {r['wall_s']:>7.1f} {r['n'] / max(r['wall_s'], 1e-9):>7.1f} {r['total_s']:>6.1f} "
            f"{r['rss_mib']:>8} | {r['wall_s'] / base['wall_s']:>6.2f} {r['rss_mib'] / base['rss_mib']:>6.2f} "
            f"{r['n'] / base['n']:>6.2f} | {'-' if to_round is None else to_round:>12} "
            f"{'-' if trials is None else trials:>8} {r['ray_dir_mib']:>8.1f}  "
            f"{'ok' if not r['errors'] else 'FAILED: ' + '; '.join(r['errors'])[:200]}")
    lines.append(f"wall = the sweep's own time from the done line (driver: search, plan, Tune trials); cmd = the whole "
                 f"command (Ray start-up, sweep, report); ratios are against {base['n'] if base else '-'} runs; "
                 "'to round 1' and 'trials' are the CLI's progress timestamps (1 s resolution); ray/ = Tune's "
                 "experiment files (configs and results of every trial, written by the driver).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000], help="member runs per sweep")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="extra overrides for every size, e.g. execution.pack_size=10 (many small trials)")
    p.add_argument("--keep", help="keep each sweep's output under KEEP/<size> (default: temporary, removed)")
    args = p.parse_args(argv)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ftcore-load-"))
    results = []
    try:
        for n in sorted(args.sizes):
            out = root / str(n)
            if out.exists():
                raise SystemExit(f"{out}: exists; choose another --keep directory")
            print(f"[load_test] {n} member runs -> {out}", flush=True)
            results.append(run_size(n, out, args.overrides))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(table(results))
    failed = [r for r in results if r["errors"]]
    for r in failed:
        print(f"[load_test] {r['n']} runs FAILED: {'; '.join(r['errors'])}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
