"""`execution.workers_per_trial: 2` on a real local Ray, through the real CLI: one trial's pack trains on two
Ray Train workers (gloo), each its rows of every member's batch, gradients all-reduced; the rows equal those of
the default one-process worker up to float summation order. One trial, one tiny pack: a Ray Train start with two
workers costs ~15-25 s on 2 CPUs (DESIGN.md §6)."""
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


def test_two_train_workers_per_trial_give_the_rows_of_one(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    t0 = time.perf_counter()
    ftsweep("run", str(spec), "--out", str(tmp_path / "dp"), "execution.worker=train",
            "execution.workers_per_trial=2", cwd=tmp_path)
    t1 = time.perf_counter()
    ftsweep("run", str(spec), "--out", str(tmp_path / "one"), cwd=tmp_path)
    print(f"wall: workers_per_trial=2 {t1 - t0:.1f} s, default worker {time.perf_counter() - t1:.1f} s")
    dp, one = (read_rows(tmp_path / d / "runs") for d in ("dp", "one"))
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
