"""`execution.workers_per_trial: 2` on a real local Ray, through the real CLI: one trial's pack trains on two
Ray Train workers (gloo), each its rows of every member's batch, gradients all-reduced; the rows equal those of
the same pack trained in one process by `ftcore.fit`, up to float summation order. One trial, one tiny pack: a
Ray Train start with two workers costs ~15-25 s on 2 CPUs (DESIGN.md §6)."""
import math
import time
from pathlib import Path

import pytest
from e2e import ftsweep, read_dataset

pytestmark = pytest.mark.slow

TINY = """
name: tiny_dp
model:   {name: mlp, width: 8, depth: 2}
task:    {name: ftc_relabel, dim: 4, n: 8, tol: 0.1}
adapter: {name: additive_relu, depth: 2, width: 4}
train:   {steps: 60, lr: 2.0e-2, eval_every: 20, early_stop: false}
seeds: 2
search: {kind: grid}
"""


def read_rows(d: Path) -> list[dict]:
    return read_dataset(d).to_pylist()


def one_process_rows(spec_path: Path) -> list[dict]:
    """The reference: the spec's members trained in this process by `ftcore.fit`, one pack, as the default
    worker trains them (tests/test_packed_vs_unpacked.py shows the default worker's rows are fit's)."""
    import ftcore
    from sweeps.grid import build_member
    from sweeps.spec import load_spec
    spec = load_spec(spec_path)
    members = [build_member(spec, p, s) for p in spec.grid_points() for s in spec.seed_list()]
    return [{"run_id": r.run_id, "status": r.status, "steps": r.steps, **r.metrics} for r in ftcore.fit(members)]


def test_two_train_workers_per_trial_give_the_rows_of_one(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    t0 = time.perf_counter()
    ftsweep("run", str(spec), "--out", str(tmp_path / "dp"), "execution.worker=train",
            "execution.workers_per_trial=2", cwd=tmp_path)
    print(f"wall: workers_per_trial=2 {time.perf_counter() - t0:.1f} s")
    dp, one = read_rows(tmp_path / "dp" / "runs"), one_process_rows(spec)
    assert list((tmp_path / "dp" / "ray").glob("train-*")), "no Ray Train run directory"
    by_id = {r["run_id"]: r for r in one}
    assert len(dp) == len(one) == 2 and by_id.keys() == {r["run_id"] for r in dp}
    assert len({r["trial_id"] for r in dp}) == 1                      # one trial: the two workers took both slots
    for r in dp:
        ref = by_id[r["run_id"]]
        assert r["status"] == ref["status"] == "ok" and r["steps"] == ref["steps"]
        for key in ("fit/max_err", "train/loss"):
            assert math.isclose(r[key], ref[key], rel_tol=1e-4, abs_tol=1e-7), (key, r[key], ref[key])
    curves = read_rows(tmp_path / "dp" / "curves")
    assert len(curves) == 2 * 4                                          # steps 0, 20, 40, 60 per member, once
