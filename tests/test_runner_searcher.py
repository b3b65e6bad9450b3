"""PackSearcher, the Tune Searcher over rounds, driven by hand (no Ray runtime): rounds are handed out as
trials, Tune is told to wait while a round is in flight, a trial that failed after its retries is recorded
as `failed` runs (written to the sink) and counts as failure for the search, and the sweep finishes."""
import json

import pyarrow.parquet as pq
from ray.tune.search import Searcher

from sweeps.execute import execute_trial
from sweeps.runner import PackSearcher
from sweeps.spec import SweepSpec, validate


def tiny_capacity_spec() -> SweepSpec:
    spec = SweepSpec(name="s", model={"name": "mlp", "width": 4, "depth": 1}, adapter={"name": "additive_relu", "depth": 2},
                     task={"name": "ftc_relabel", "dim": 3, "k_per_n": 1.0, "tol": 0.05},
                     train={"steps": 300, "lr": 3e-2, "eval_every": 20}, axes={"task.n": [2, 4]}, seeds=2)
    spec.search.kind, spec.search.param, spec.search.ladder = "capacity", "adapter.width", [1, 2, 4, 8, 16]
    validate(spec)
    return spec


def test_rounds_waiting_and_failed_trials(tmp_path):
    lines = []
    s = PackSearcher(tiny_capacity_spec(), tmp_path, n_slots=2, progress=lines.append)
    n, finished, first = 0, False, True
    while not finished:
        in_flight = {}
        while True:                                  # Tune asks until it is told to wait (None) or stop
            cfg = s.suggest(f"t{n}")
            if cfg is None:
                break
            if cfg == Searcher.FINISHED:
                finished = True
                break
            in_flight[f"t{n}"] = cfg
            n += 1
        assert finished or in_flight                 # never "wait" with nothing in flight
        for tid, cfg in in_flight.items():
            if first:                                # the very first trial dies after all its retries
                s.on_trial_complete(tid, None, error=True)
                first = False
                continue
            rows = execute_trial(cfg["packs"], cfg["out"], tid, cfg["sweep_meta"])
            s.on_trial_complete(tid, {"rows": json.dumps(rows)})
    failed = pq.read_table(tmp_path / "runs" / "part-t0-failed.parquet").to_pandas()
    assert len(failed) > 0 and set(failed["status"]) == {"failed"}
    assert s.search.counts()["rounds"] >= 2 and any(line.startswith("round 1:") for line in lines)
    # the failed probes were failures to the search: those groups recorded 0 successes and moved on
    for g in set(failed["group"]):
        value, n_success, _ = s.search.search.state[g].probes[0]
        assert value == 1 and n_success == 0 and len(s.search.search.state[g].probes) > 1
