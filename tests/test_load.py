"""Load test: a grid sweep of 2,000 tiny member runs (tests/load_sweep.yaml, 4 grid points × 500 seeds) completes
on a real local Ray through the real CLI; every run is recorded exactly once, with the run_ids the spec implies
and status ok. Timings are measured by benchmarks/load_test.py, not asserted here (~35 s on 2 CPUs)."""
import functools
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from grid_ids import grid_run_ids

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent
SPEC = ROOT / "tests" / "load_sweep.yaml"
N_RUNS = 2000
OVERRIDES = [f"seeds={N_RUNS // 4}"]


@functools.cache
def expected_run_ids() -> tuple[str, ...]:
    """Every grid point × seed of the spec, built as the grid search builds them (no training; ~10 s: cached)."""
    return tuple(grid_run_ids(SPEC, OVERRIDES))


def test_spec_implies_the_run_count():
    ids = expected_run_ids()
    assert len(ids) == N_RUNS and len(set(ids)) == N_RUNS


def test_sweep_of_2000_member_runs(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(SPEC), *OVERRIDES, "--out", str(out)],
                       check=False, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    done = re.search(r"done: (\d+) member runs in (\d+) wave\(s\), [\d.]+s; driver peak RSS \d+ MiB", r.stdout)
    assert done and int(done.group(1)) == N_RUNS, r.stdout[-3000:]

    parts = sorted((out / "runs").glob("part-*.parquet"))
    assert parts
    runs = pa.concat_tables([pq.read_table(p, columns=["run_id", "status"]) for p in parts], promote_options="default")
    ids = runs.column("run_id").to_pylist()
    assert len(ids) == N_RUNS
    assert len(set(ids)) == N_RUNS
    assert set(ids) == set(expected_run_ids())
    assert set(runs.column("status").to_pylist()) == {"ok"}
