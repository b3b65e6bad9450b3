"""The per-step cost of a pack on CPU: `ftcore.fit` on FTC packs, this tree against an earlier commit, side by side
in one run; and torch.compile of a pack's forward, with its compile time. Not a test.

    .venv/bin/python benchmarks/bench_step.py [--against e119659] [--rounds 5] [--compile] [--json FILE]

Packs (sweeps/ftc_capacity.yaml's task and adapter: dim 8, K = 2N full-batch rows, additive ReLU g; E members of
one width; one thread, as a trial with `execution.cpus_per_trial: 1` runs): E = 1 (the fixed cost of a step:
every op at its smallest), E = 16 at N = 64, width 32 (a typical pack of the sweep) for depths 2 and 3, and
E = 16 at N = 256, width 128 (compute-heavier). `now` is the analytic step (ftcore.fit.analytic_forward) for
these packs; `then` is autograd through the reference ops.

µs per step = (wall of `fit` with S2 steps − wall with S1 steps) / (S2 − S1) (train.steps S, eval_every S: the
evaluations, pack build and result rows cancel), `ftcore.fit` exactly as each tree has it. Each tree runs in its
own child process (`git worktree` of `--against` under the system temp dir, created once and reused), the trees
alternating `--rounds` times; the median is reported, and the ratio then / now (> 1: faster now).
The issue-17 baseline is e119659 (the commit the issue was filed on).

`--compile` (this tree only): the step through autograd (the analytic step switched off: `autograd_us`), and the
same with the adapted model's forward under `torch.compile` (inductor, dynamic=False; AOTAutograd compiles the
backward: `compiled_us`), the first compiled step's seconds, and the break-even step count against autograd's eager
step (compile s / µs saved per step; "never" when the compiled step is slower).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKS = {   # label: (E, N, width, depth)
    "E=1 N=64 m=32 d2 (fixed)": (1, 64, 32, 2),
    "E=16 N=64 m=32 d2": (16, 64, 32, 2),
    "E=16 N=64 m=32 d3": (16, 64, 32, 3),
    "E=16 N=256 m=128 d2": (16, 256, 128, 2),
}
S1, S2 = 100, 700


def ftc_member(ftcore, n: int, width: int, depth: int, seed: int, steps: int):
    return ftcore.member_from_dict({
        "model": {"name": "mlp", "width": 16, "depth": 2},
        "task": {"name": "ftc_relabel", "dim": 8, "n": n, "k_per_n": 2.0, "tol": 0.1},
        "adapter": {"name": "additive_relu", "depth": depth, "width": width},
        "train": {"method": "adam", "steps": steps, "lr": 1e-2, "schedule": "cosine", "eval_every": steps,
                  "early_stop": False},
        "seed": seed})


def step_us(E: int, n: int, width: int, depth: int, compiled: bool = False) -> float:
    """µs per step of `ftcore.fit` (whichever ftcore is importable) on one FTC pack, by differencing two budgets."""
    import torch

    import ftcore
    ftcore.fit([ftc_member(ftcore, n, width, depth, s, 10) for s in range(E)])      # warm-up: first-call costs
    walls = []
    for steps in (S1, S2):
        members = [ftc_member(ftcore, n, width, depth, s, steps) for s in range(E)]
        t0 = time.perf_counter()
        ftcore.fit(members)
        walls.append(time.perf_counter() - t0)
    del torch
    return (walls[1] - walls[0]) / (S2 - S1) * 1e6


def autograd_step(E: int, n: int, width: int, depth: int, compiled: bool) -> dict:
    """This tree's fit step through autograd (the analytic step off), the model's forward eager or under
    torch.compile: {"compile_s": first step's seconds, "us": µs per step}."""
    import torch

    import ftcore
    from ftcore import fit as _  # noqa: F401
    from ftcore.pack import build_pack
    fit_module = sys.modules["ftcore.fit"]
    fit_module.analytic_forward = lambda *a: None                 # autograd's step (this child process only)
    members = [ftc_member(ftcore, n, width, depth, s, S2) for s in range(E)]
    task, model = build_pack(members, torch.float32, "cpu")
    if compiled:
        model.forward = torch.compile(model.forward, dynamic=False)
    opt = fit_module.make_optimizer(model, members)
    active, div = torch.ones(E, dtype=torch.bool), torch.full((E,), -1, dtype=torch.long)

    def run(a, b):
        for t in range(a, b):
            fit_module.train_step(task, model, opt, task.batch(t), active, div, t, 1.0)
    t0 = time.perf_counter()
    run(0, 1)
    compile_s = time.perf_counter() - t0
    run(1, 20)
    t0 = time.perf_counter()
    run(20, 20 + S2 - S1)
    return {"compile_s": round(compile_s, 2), "us": (time.perf_counter() - t0) / (S2 - S1) * 1e6}


def child(args) -> int:
    """One measurement in this process: every pack once (or the compiled variant), JSON on stdout."""
    import torch
    torch.set_num_threads(1)
    if args.child == "compile":
        print(json.dumps({k: {"eager": autograd_step(*v, compiled=False), "compiled": autograd_step(*v, compiled=True)}
                          for k, v in PACKS.items()}))
    else:
        print(json.dumps({k: step_us(*v) for k, v in PACKS.items()}))
    return 0


def worktree(rev: str) -> Path:
    """A checkout of `rev` (created once under the temp dir, detached, reused by later runs)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True, capture_output=True,
                         text=True).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"ftcore-bench-{sha}"
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), sha], check=True,
                       capture_output=True)
    return path


def measure(tree: Path, mode: str = "fit") -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", mode], cwd=tree, env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--against", default="e119659", help="the earlier commit (default: issue 17's baseline)")
    p.add_argument("--rounds", type=int, default=5, help="alternating measurements per tree (median reported)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the pack's forward (this tree)")
    p.add_argument("--json", help="write the table as JSON here")
    p.add_argument("--child", choices=("fit", "compile"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    old = worktree(args.against)
    runs: dict[str, list[dict]] = {"then": [], "now": []}
    for r in range(args.rounds):
        for side, tree in (("then", old), ("now", ROOT)):
            runs[side].append(measure(tree))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    rows = []
    for label in PACKS:
        then, now = (statistics.median(m[label] for m in runs[s]) for s in ("then", "now"))
        rows.append({"pack": label, "then_us": round(then, 1), "now_us": round(now, 1), "ratio": round(then / now, 2)})
    if args.compile:
        comp = measure(ROOT, "compile")
        for row in rows:
            eager, c = comp[row["pack"]]["eager"], comp[row["pack"]]["compiled"]
            saved = eager["us"] - c["us"]
            row.update(autograd_us=round(eager["us"], 1), compiled_us=round(c["us"], 1), compile_s=c["compile_s"],
                       break_even_steps=round(c["compile_s"] * 1e6 / saved) if saved > 0 else "never")
    cols = ["then_us", "now_us", "ratio"] + (["autograd_us", "compiled_us", "compile_s", "break_even_steps"]
                                             if args.compile else [])
    import torch
    print(f"ftcore.fit step on CPU, one thread, µs/step (median of {args.rounds} alternating runs; then = {args.against}, "
          f"now = this tree); torch {torch.__version__}")
    print(f"{'pack':<26}" + "".join(f"{c:>17}" for c in cols))
    for r in rows:
        print(f"{r['pack']:<26}" + "".join(f"{r[c]!s:>17}" for c in cols))
    if args.json:
        Path(args.json).write_text(json.dumps({"against": args.against, "torch": torch.__version__, "rows": rows},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
