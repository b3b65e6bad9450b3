"""PackSearcher, the Tune Searcher over waves, driven by hand (no Ray runtime): waves are handed out as trials,
Tune is told to wait while nothing can run (every group in flight, or every slot busy), a trial that failed
after its retries is recorded as `failed` runs (written to the sink) and counts as failure for the search, and
the sweep finishes. The barrier-free behaviour itself (a group advancing while another's trial runs) is
tests/test_no_barrier.py."""
import json

import pyarrow.parquet as pq
from ray.tune.search import Searcher

from sweeps.execute import execute_trial
from sweeps.runner import PackSearcher
from sweeps.search.kinds import SEARCHES
from sweeps.spec import SweepSpec, validate


def tiny_capacity_spec() -> SweepSpec:
    spec = SweepSpec(name="s", model={"name": "mlp", "width": 4, "depth": 1}, adapter={"name": "additive_relu", "depth": 2},
                     task={"name": "ftc_relabel", "dim": 3, "k_per_n": 1.0, "tol": 0.05},
                     train={"steps": 300, "lr": 3e-2, "eval_every": 20}, axes={"task.n": [2, 4]}, seeds=2,
                     search=SEARCHES["capacity"].Config(param="adapter.width", ladder=[1, 2, 4, 8, 16]))
    validate(spec)
    return spec


def test_waves_waiting_and_failed_trials(tmp_path):
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
    failed = pq.read_table(*(tmp_path / "runs").glob("part-t0.*-failed.parquet")).to_pandas()   # <trial>.<driver>
    assert len(failed) > 0 and set(failed["status"]) == {"failed"}
    assert s.search.counts()["rounds"] >= 2 and any(line.startswith("round 1:") for line in lines)
    assert not s.outstanding and not s.queue and s.search.waiting() == 0
    # the failed probes were failures to the search: those groups recorded 0 successes and moved on
    for g in set(failed["group"]):
        value, n_success, _ = s.search.search.state[g].probes[0]
        assert value == 1 and n_success == 0 and len(s.search.search.state[g].probes) > 1


def first_round(s: PackSearcher) -> list[dict]:
    """Every payload of the wave Tune is handed first (the searcher asked until it says wait)."""
    payloads, n = [], 0
    while isinstance(cfg := s.suggest(f"t{n}"), dict):
        payloads += [p for pack in cfg["packs"] for p in pack]
        n += 1
    return payloads


def row_of(payload: dict, **metrics) -> dict:
    from ftcore.config import member_from_dict
    return {"run_id": member_from_dict(payload["config"]).run_id(), "status": "ok", **payload["meta"], **metrics}


def test_resume_with_runs_this_spec_does_not_build_is_a_mismatch(tmp_path):
    spec = tiny_capacity_spec()
    stranger = {"run_id": "0" * 16, "status": "ok", "fit/success": 1.0}
    s = PackSearcher(spec, tmp_path, n_slots=2, progress=print, recorded={stranger["run_id"]: stranger})
    assert s.suggest("t0") == Searcher.FINISHED and s.mismatch
    # one genuine run of wave 1 recorded: no mismatch, the rest of the wave is handed out
    genuine = row_of(first_round(PackSearcher(spec, tmp_path / "ref", 2, print))[0], **{"fit/success": 1.0})
    s = PackSearcher(spec, tmp_path, n_slots=2, progress=print, recorded={genuine["run_id"]: genuine})
    assert len(first_round(s)) == 2 * 2 - 1 and not s.mismatch and s.resumed == 1


def test_resumed_optuna_study_past_its_first_batch_is_not_a_mismatch(tmp_path):
    """A study whose first batch was told before the driver died resumes with its second batch: none of the
    recorded runs is in that wave, and that is right (Optuna is exempt from the first-wave check)."""
    from pathlib import Path

    from sweeps.spec import load_spec
    spec = load_spec(Path(__file__).parent.parent / "sweeps" / "lora_rank.yaml",
                     ["model.width=4", "model.depth=2", "task.target_depth=1", "seeds=1", "train.method=adam",
                      "adapter.rank=2", "task.pretrained=[false]", "search.n_trials=4", "search.batch=2"])
    s = PackSearcher(spec, tmp_path, n_slots=1, progress=print)
    told = [row_of(p, **{"val/mse": 0.1 * i}) for i, p in enumerate(first_round(s), 1)]
    assert len(told) == 2
    s.on_trial_complete("t0", {"rows": json.dumps(told)})
    (study,) = s.search.studies.values()
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2     # told as the trial completed
    resumed = PackSearcher(spec, tmp_path, n_slots=1, progress=print, recorded={r["run_id"]: r for r in told})
    nxt = first_round(resumed)
    assert not resumed.mismatch and len(nxt) == 2 and {p["meta"]["optuna.trial"] for p in nxt} == {2, 3}
