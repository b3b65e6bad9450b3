"""Faults on a real local Ray, through the real CLI: nothing lost, nothing duplicated.

* worker death: kill -9 the process training a trial mid-pack; Tune retries the trial and the sweep ends
  with exactly the spec's run_ids, all ok;
* driver death, chaos: kill -9 the driver (`ftsweep run`, then each `ftsweep resume`) at K seeded random points of
  a capacity search (its waves depend on results), resuming after each: recorded runs are never run again nor
  their parts touched, and the last resume ends with exactly an undisturbed run's run_ids and thresholds;
* SIGTERM after some runs were committed: exit 130, those runs kept, resume finishes.

Injected trial faults (a trial that always dies, or dies after committing): tests/test_faults_e2e.py.
"""
import os
import random
import re
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from e2e import finish, kill_driver, process_tree, read_until
from e2e import start_cli as start
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
search: {kind: capacity, param: adapter.width, ladder: [2, 3, 4, 5, 6, 8, 12, 16, 24, 32], quorum: 0.5}
report: {kind: capacity, x: task.n, curve_by: [adapter.depth]}
"""


def runs_table(out: Path) -> pa.Table:
    parts = sorted((out / "runs").glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")


def committed_parts(out: Path) -> dict[str, int]:
    """runs part name -> mtime_ns: what a driver had committed (to check that a later one leaves it alone)."""
    return {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("part-*.parquet")}


def ftsweep(args: list[str], cwd: Path) -> str:
    return finish(start(args, cwd))


def test_killed_trial_worker_is_retried(tmp_path):
    spec = tmp_path / "one.yaml"
    spec.write_text(ONE_TRIAL_GRID)
    out = tmp_path / "out"
    expected = set(grid_run_ids(spec))
    proc = start(["run", str(spec), "--out", str(out)], tmp_path, FTCORE_PROGRESS_S="0")
    lines = read_until(proc, r"trial (\S+): pack 1/1 at step")
    trial_id = re.search(r"trial (\S+): pack", lines[-1]).group(1)
    tree = process_tree(proc.pid)               # this driver's Ray only, not another test's on the machine
    workers = [pid for pid, cmd in tree.items() if cmd.startswith(b"ray::ImplicitFunc")]
    assert len(workers) == 1, tree
    assert not list((out / "runs").glob("part-*.parquet"))      # mid-pack: nothing committed yet
    os.kill(workers[0], signal.SIGKILL)
    text = "".join(lines) + finish(proc)
    assert not list((out / "runs").glob("part-*-failed.parquet")), text[-3000:]

    runs = runs_table(out).to_pandas()
    assert set(runs.run_id) == expected and runs.run_id.is_unique
    assert set(runs.status) == {"ok"}
    assert set(runs.trial_id) == {trial_id}        # the same trial, run again after its worker died


@pytest.fixture(scope="module")
def capacity_reference(tmp_path_factory) -> tuple[Path, Path]:
    """The CAPACITY sweep run once undisturbed: (spec path, output dir), shared by the tests that compare with it."""
    tmp = tmp_path_factory.mktemp("capacity")
    spec = tmp / "cap.yaml"
    spec.write_text(CAPACITY)
    ftsweep(["run", str(spec), "--out", str(tmp / "ref")], tmp)
    return spec, tmp / "ref"


def thresholds(out: Path):
    """Capacity thresholds m* per cell from the Parquet rows (analysis.thresholds, the report's own code)."""
    from analysis.load import read_runs
    from analysis.thresholds import capacity_thresholds
    table, _ = capacity_thresholds(read_runs(out), param="adapter.width", success="fit/success", quorum=0.5,
                                   x="task.n", curve_by=["adapter.depth"], n_boot=20)
    return table.sort_values(["adapter.depth", "x"]).reset_index(drop=True)


CHAOS_KILLS, CHAOS_SEED = 2, 2      # seed 2: kills after the first wave started, and after a commit
EVENT = r"round \d+: \d+ runs \(|trial \S+: \d+ runs"        # a wave with work starts, a trial commits


def kill_at_random_point(proc, rng: random.Random) -> str:
    """Kill the driver after the m-th event (m uniform in 1..3) from the first wave that has work, plus a delay
    uniform in [0, 0.5) s: before a wave's trials start, mid-trial, right after a commit, between waves.
    There is no round barrier (each lane — here depth 2 and depth 3 — advances on its own), so a driver gets
    through a few waves before its kill; a 10-value ladder gives each group ~5 probes (~10 waves in all), more
    than K=2 drivers finish: the driver is asserted alive when it is killed, and work is left for the last resume."""
    m, delay = rng.randint(1, 3), rng.uniform(0, 0.5)
    lines = read_until(proc, r"round \d+: \d+ runs \(")
    for _ in range(m - 1):
        lines += read_until(proc, EVENT)
    time.sleep(delay)
    assert proc.poll() is None, "the sweep ended before the kill point:\n" + "".join(lines[-20:])
    kill_driver(proc)
    return f"after event {m} (+{delay:.2f}s): {lines[-1].strip()}"


def test_chaos_killed_driver_resumed_k_times_matches_undisturbed_run(tmp_path, capacity_reference):
    """K times: kill -9 the driver at a seeded random point, then `ftsweep resume` (itself killed but for the
    last). Runs committed before a kill are never run again and their parts never rewritten; the end is exactly
    the undisturbed run set (no duplicate run_id) and the same thresholds."""
    spec, ref = capacity_reference
    expected = runs_table(ref).column("run_id").to_pylist()
    assert len(expected) == len(set(expected))
    rng = random.Random(CHAOS_SEED)
    out = tmp_path / "out"
    proc = start(["run", str(spec), "--out", str(out)], tmp_path)
    where, seen = [], {}
    for _ in range(CHAOS_KILLS):
        where.append(kill_at_random_point(proc, rng))
        parts = committed_parts(out)
        assert parts.items() >= seen.items(), (where, seen, parts)      # earlier commits untouched
        seen = parts
        proc = start(["resume", str(out)], tmp_path)
    n_before = runs_table(out).num_rows if seen else 0
    assert n_before < len(expected), where
    text = finish(proc)

    m = re.search(r"resumed: (\d+) runs were already recorded, (\d+) ran now", text)
    assert m, text[-3000:]
    assert int(m.group(1)) == n_before and int(m.group(2)) == len(expected) - n_before, (where, text[-3000:])
    assert committed_parts(out).items() >= seen.items()
    assert (out / "report" / "report.md").is_file()
    ids = runs_table(out).column("run_id").to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == set(expected), where
    got, want = thresholds(out), thresholds(ref)
    assert len(want) == 4 and want["threshold"].notna().any()          # a search that found thresholds
    np.testing.assert_array_equal(got["threshold"].to_numpy(), want["threshold"].to_numpy(), err_msg=str(where))
    assert got["probes"].tolist() == want["probes"].tolist()


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
    """`kill PID` (SIGTERM) mid-sweep, after some runs were committed: exit 130 naming `ftsweep resume`, those runs
    kept, no report of a partial sweep, Ray shut down (none of the processes it started left behind); resume then
    completes the spec's run_ids."""
    spec = tmp_path / "grid.yaml"
    spec.write_text(ONE_TRIAL_GRID.replace("pack_size: 8", "pack_size: 1").replace("steps: 3000", "steps: 1500"))
    out = tmp_path / "out"
    proc = start(["run", str(spec), "--out", str(out)], tmp_path)
    read_until(proc, r"round 1: ")
    read_until(proc, r"trial \S+: 1 runs")             # some runs committed: the signal comes mid-sweep
    committed = committed_parts(out)
    tree = process_tree(proc.pid)
    proc.send_signal(signal.SIGTERM)
    text = finish(proc, timeout=120, code=130)
    assert f"ftsweep resume {out}" in text and "done:" not in text
    assert not (out / "report").exists()
    n = int(re.search(r"interrupted: (\d+) runs are recorded", text).group(1))
    assert 1 <= len(committed) <= n < 4, text[-3000:]        # recorded before the signal, and kept
    assert committed_parts(out).items() >= committed.items() and runs_table(out).num_rows == n
    time.sleep(3)
    alive = [pid for pid, cmd in tree.items() if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/cmdline").read_bytes() == cmd]
    assert not alive, {pid: tree[pid] for pid in alive}      # Ray shut down, nothing left behind

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
