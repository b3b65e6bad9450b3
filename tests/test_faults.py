"""Faults on a real local Ray, through the real CLI: nothing lost, nothing duplicated.

* worker death: kill -9 the process training a trial mid-pack; Tune retries the trial and the sweep ends
  with exactly the spec's run_ids, all ok;
* driver death: kill -9 `ftsweep run` mid-sweep (a capacity search, so the rounds depend on results);
  `ftsweep resume DIR` finishes without re-running recorded runs, and the run_id set equals an undisturbed
  run's.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grid_ids import grid_run_ids
from sweeps.spec import load_spec

pytestmark = pytest.mark.slow

ONE_TRIAL_GRID = """
name: one_trial
model:   {name: mlp, width: 8, depth: 2}
task:    {name: ftc_relabel, dim: 4, k_per_n: 2.0, tol: 0.1}
adapter: {name: additive_relu, depth: 2, width: 8}
train:   {steps: 3000, lr: 2.0e-2, eval_every: 10, early_stop: false}
axes:
  task.n: [8, 12]
seeds: 2
execution: {pack_size: 8}
"""

CAPACITY = """
name: resumable
model:   {name: mlp, width: 8, depth: 2}
task:    {name: ftc_relabel, dim: 4, k_per_n: 2.0, tol: 0.1}
adapter: {name: additive_relu, depth: 2}
train:   {steps: 300, lr: 2.0e-2, eval_every: 20}
axes:
  task.n: [3, 12]
  adapter.depth: [2, 3]
seeds: 2
search: {kind: capacity, param: adapter.width, ladder: [2, 4, 8, 16], quorum: 0.5}
report: {kind: capacity, x: task.n, curve_by: [adapter.depth]}
"""


def runs_table(out: Path) -> pa.Table:
    parts = sorted((out / "runs").glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")


def ray_processes() -> dict[int, str]:
    """pid -> command line of every `ray::` process (worker/actor titles) on this machine."""
    out = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd.startswith("ray::"):
            out[int(d.name)] = cmd
    return out


def kill_orphans(before: set[int]) -> None:
    """A SIGKILLed driver takes its raylet and workers with it, but Ray's agents live on: clean them up."""
    for pid in set(ray_processes()) - before:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start(args: list[str], cwd: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, text=True, bufsize=1,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **env})


def read_until(proc: subprocess.Popen, pattern: str, timeout: float = 400) -> list[str]:
    """Lines of `proc` up to and including the first one matching `pattern`."""
    lines, t0 = [], time.time()
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return lines
        assert time.time() - t0 < timeout, "".join(lines[-40:])
    raise AssertionError(f"{pattern!r} never printed; exit {proc.wait()}:\n" + "".join(lines[-40:]))


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def ftsweep(args: list[str], cwd: Path) -> str:
    return finish(start(args, cwd))


def test_killed_trial_worker_is_retried(tmp_path):
    spec = tmp_path / "one.yaml"
    spec.write_text(ONE_TRIAL_GRID)
    out = tmp_path / "out"
    expected = set(grid_run_ids(spec))
    before = set(ray_processes())
    proc = start(["run", str(spec), "--out", str(out)], tmp_path, FTCORE_PROGRESS_S="0")
    lines = read_until(proc, r"trial (\S+): pack 1/1 at step")
    trial_id = re.search(r"trial (\S+): pack", lines[-1]).group(1)
    workers = [pid for pid, cmd in ray_processes().items() if pid not in before and "ImplicitFunc" in cmd]
    assert len(workers) == 1, ray_processes()
    assert not list((out / "runs").glob("part-*.parquet"))      # mid-pack: nothing committed yet
    os.kill(workers[0], signal.SIGKILL)
    text = "".join(lines) + finish(proc)
    assert not list((out / "runs").glob("part-*-failed.parquet")), text[-3000:]

    runs = runs_table(out).to_pandas()
    assert set(runs.run_id) == expected and runs.run_id.is_unique
    assert set(runs.status) == {"ok"}
    assert set(runs.trial_id) == {trial_id}        # the same trial, run again after its worker died


def test_killed_driver_then_resume_matches_undisturbed_run(tmp_path):
    spec = tmp_path / "cap.yaml"
    spec.write_text(CAPACITY)
    ref = tmp_path / "ref"
    ftsweep(["run", str(spec), "--out", str(ref)], tmp_path)
    expected = runs_table(ref).column("run_id").to_pylist()
    assert len(expected) == len(set(expected))

    out = tmp_path / "out"
    before = set(ray_processes())
    proc = start(["run", str(spec), "--out", str(out)], tmp_path)
    read_until(proc, r"round 2: ")
    read_until(proc, r"trial \S+: \d+ runs")         # a trial of round 2 committed, the round unfinished
    proc.kill()
    proc.wait()
    time.sleep(2)
    kill_orphans(before)
    done_before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("part-*.parquet")}
    n_before = runs_table(out).num_rows
    assert 0 < n_before < len(expected)

    text = ftsweep(["resume", str(out)], tmp_path)
    m = re.search(r"resumed: (\d+) runs were already recorded, (\d+) ran now", text)
    assert m, text[-3000:]
    assert int(m.group(1)) == n_before and int(m.group(2)) == len(expected) - n_before
    assert "already recorded" in text and (out / "report" / "report.md").is_file()
    for name, mtime in done_before.items():                 # recorded parts untouched
        assert (out / "runs" / name).stat().st_mtime_ns == mtime

    ids = runs_table(out).column("run_id").to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == set(expected)


def test_resume_refuses_a_directory_without_a_sweep(tmp_path):
    from sweeps.cli import main
    assert main(["resume", str(tmp_path)]) == 2


def test_resume_names_a_corrupt_part_and_exits_1(tmp_path, capsys):
    from sweeps.cli import main
    from sweeps.spec import spec_to_yaml
    spec = tmp_path / "one.yaml"
    spec.write_text(ONE_TRIAL_GRID)
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    (out / "spec.yaml").write_text(spec_to_yaml(load_spec(spec)))
    (out / "runs" / "part-abc.parquet").write_bytes(b"PAR1 truncated")
    assert main(["resume", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "part-abc.parquet" in err and "resume" in err


def test_sigterm_stops_the_sweep_and_resume_finishes_it(tmp_path):
    """`kill PID` (SIGTERM) mid-sweep: exit 130 naming `ftsweep resume`, no report of a partial sweep, Ray shut
    down (no process left behind); resume then completes the spec's run_ids."""
    spec = tmp_path / "grid.yaml"
    spec.write_text(ONE_TRIAL_GRID.replace("pack_size: 8", "pack_size: 1").replace("steps: 3000", "steps: 1500"))
    out = tmp_path / "out"
    before = set(ray_processes())
    proc = start(["run", str(spec), "--out", str(out)], tmp_path)
    read_until(proc, r"round 1: ")
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, text[-3000:]
    assert f"ftsweep resume {out}" in text and "done:" not in text
    assert not (out / "report").exists()
    time.sleep(3)
    assert not set(ray_processes()) - before, ray_processes()

    ftsweep(["resume", str(out)], tmp_path)
    runs = runs_table(out).to_pandas()
    assert set(runs.run_id) == set(grid_run_ids(spec)) and runs.run_id.is_unique and set(runs.status) == {"ok"}


DIVERGING = """
name: diverging
model:   {name: mlp, width: 8, depth: 2}
task:    {name: ftc_relabel, dim: 4, k_per_n: 2.0, tol: 0.1}
adapter: {name: additive_relu, depth: 2, width: 8}
train:   {steps: 200, eval_every: 20, early_stop: false}
axes:
  train.lr: [2.0e-2, 1.0e+30]
seeds: 2
"""


def test_diverging_members_are_recorded_diverged_not_a_crash(tmp_path):
    """lr = 1e30 blows its members up (inf, then NaN) inside a pack with healthy ones: the sweep exits 0, those
    runs are `diverged` with their NaN metrics kept, the others `ok` and finite, and the report counts them."""
    spec = tmp_path / "div.yaml"
    spec.write_text(DIVERGING)
    out = tmp_path / "out"
    text = ftsweep(["run", str(spec), "--out", str(out)], tmp_path)
    assert "done: 4 member runs" in text, text[-3000:]
    runs = runs_table(out).to_pandas()
    assert set(runs.run_id) == set(grid_run_ids(spec)) and runs.run_id.is_unique
    blown, fine = runs[runs["train.lr"] > 1], runs[runs["train.lr"] < 1]
    assert set(blown.status) == {"diverged"} and set(fine.status) == {"ok"}
    assert blown["train/loss"].isna().all() and fine["train/loss"].notna().all()
    assert "4 runs: ok 2, diverged 2, failed 0" in (out / "report" / "report.md").read_text()


def test_resume_refuses_runs_this_code_does_not_build(tmp_path):
    """Recorded runs whose run_ids this code no longer builds from spec.yaml (here: the saved spec edited, as a
    changed config schema would do): resume exits 2 in one line instead of running the sweep again beside them."""
    spec = tmp_path / "grid.yaml"
    spec.write_text(ONE_TRIAL_GRID.replace("steps: 3000", "steps: 60"))
    out = tmp_path / "out"
    ftsweep(["run", str(spec), "--out", str(out)], tmp_path)
    saved = out / "spec.yaml"
    saved.write_text(saved.read_text().replace("steps: 60", "steps: 61"))
    parts = sorted(p.name for p in (out / "runs").iterdir())
    proc = start(["resume", str(out)], tmp_path)
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("ftsweep: error:")]
    assert len(errors) == 1 and "none of its 4 recorded runs" in errors[0] and "Traceback" not in text
    assert sorted(p.name for p in (out / "runs").iterdir()) == parts
