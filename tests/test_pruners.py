"""Pruning (issue 16, item 3): the median and successive-halving rules on synthetic rows (sweeps/pruners.py), inside
`ftcore.fit`, the `search.pruner*` fields' checks through load_spec and `ftsweep validate`, the counts of steps
saved, and a tiny grid over train.lr with hopeless members on a real local Ray: the same best configuration with
fewer steps, pruned rows recorded as such."""
import math
from pathlib import Path

import pytest
import yaml

import ftcore
from ftcore.config import member_from_dict
from sweeps.probe import Probe
from sweeps.pruners import auto_min_steps, make_pruner, rungs
from sweeps.search.base import RoundSearch
from sweeps.spec import SpecError, load_spec

LRS = [1e-6, 3e-6, 1e-5, 3e-3, 1e-2, 3e-2]          # the first three cannot learn in 60 steps: hopeless


def member(lr: float, seed: int = 0, steps: int = 60):
    return member_from_dict({"model": {"name": "mlp", "width": 8, "depth": 2}, "adapter": {"name": "full"},
                             "task": {"name": "lora_teacher", "batch_size": 16, "n_val": 32, "n_test": 32},
                             "train": {"steps": steps, "lr": lr, "eval_every": 10, "early_stop": False},
                             "seed": seed})


def pack(n_configs: int, seeds: int = 1, steps: int = 60) -> list[Probe]:
    """Probes of `n_configs` configurations (lr 1e-3 · (i+1)) × `seeds`, seeds of one configuration adjacent."""
    return [Probe(member(1e-3 * (i + 1), s, steps)) for i in range(n_configs) for s in range(seeds)]


def payload(rule: str, **kw) -> dict:
    return {"rule": rule, "metric": "val/mse", "mode": "min", "min_steps": 20, "min_configs": 3, "eta": 3, **kw}


def rows(step: int, values: dict[int, float], metric: str = "val/mse") -> dict[int, dict]:
    return {e: {"step": step, metric: v, "train/loss": 1.0} for e, v in values.items()}


# --------------------------------------------------------------------------- the rules on synthetic rows
def test_no_payload_no_pruner_and_unknown_rule_refused():
    assert make_pruner(None, pack(3)) is None and make_pruner({}, pack(3)) is None
    with pytest.raises(ValueError, match="search.pruner"):
        make_pruner({"rule": "hyperband"}, pack(3))


def test_median_prunes_configurations_below_the_median_after_warmup_only():
    prune = make_pruner(payload("median"), pack(5))
    values = {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4, 4: 0.5}
    assert prune(0, rows(0, values)) == []
    assert prune(10, rows(10, values)) == []                     # warm-up: min_steps 20
    assert prune(20, rows(20, values)) == [3, 4]                 # median 0.3: strictly worse ones (0.3 stays)
    # the pruned ones stay in the pool at their last value: the survivors are not halved again at each step
    assert prune(30, rows(30, {0: 0.1, 1: 0.2, 2: 0.3})) == []
    assert prune(40, rows(40, {0: 0.09, 1: 0.19, 2: 0.45})) == []   # best-so-far: 2's is still 0.3
    # a survivor at the median is kept, and pruned once the others pull the median below it
    p2 = make_pruner(payload("median"), pack(5))
    assert p2(20, rows(20, {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.3, 4: 0.5})) == [4]
    assert p2(30, rows(30, {0: 0.1, 1: 0.2, 2: 0.2, 3: 0.3})) == [3]


def test_median_mode_max_and_non_finite_is_worst():
    prune = make_pruner(payload("median", metric="val/acc", mode="max"), pack(5))
    got = prune(20, rows(20, {0: 0.9, 1: 0.8, 2: 0.7, 3: float("nan"), 4: 0.95}, "val/acc"))
    assert got == [2, 3]                                         # median 0.8: 0.7 and the NaN are worse


def test_median_judges_a_configuration_by_the_median_over_its_seeds_and_prunes_all_its_seeds():
    """3 configurations × 2 seeds (members 2c, 2c+1). Configuration 1 has one bad seed: its median over seeds
    (0.25) is below the pool's median, so neither seed is pruned; configuration 2's seeds go together."""
    prune = make_pruner(payload("median"), pack(3, seeds=2))
    got = prune(20, rows(20, {0: 0.1, 1: 0.3, 2: 0.05, 3: 0.45, 4: 0.4, 5: 0.5}))
    assert got == [4, 5]                       # values 0.2, 0.25, 0.45 -> median 0.25 -> configuration 2 only


def test_too_few_configurations_never_pruned():
    prune = make_pruner(payload("median"), pack(2, seeds=3))      # 2 configurations < min_configs 3
    assert prune(20, rows(20, {e: float(e) for e in range(6)})) == []
    sh = make_pruner(payload("successive_halving", min_configs=2, eta=2), pack(2))
    assert sh(20, rows(20, {0: 0.5, 1: 0.1})) == [0]


def test_cohorts_compare_only_configurations_that_agree_on_prune_by():
    """Two cohorts (train.steps is the same, so cohorts by `group` meta): 3 configurations each. The second cohort's
    are all worse than the first's, yet each cohort loses only its own worse half."""
    probes = pack(6)
    for i, p in enumerate(probes):
        p.meta["group"] = "a" if i < 3 else "b"
    values = {0: 0.1, 1: 0.2, 2: 0.3, 3: 1.1, 4: 1.2, 5: 1.3}
    assert make_pruner(payload("median", by=["group"]), probes)(20, rows(20, values)) == [2, 5]
    assert make_pruner(payload("median", by=[]), probes)(20, rows(20, values)) == [3, 4, 5]     # one cohort of 6
    assert make_pruner(payload("median", by=["train.lr"]), probes)(20, rows(20, values)) == []  # cohorts of 1
    sh = make_pruner(payload("successive_halving", by=["group"]), probes)
    assert sh(20, rows(20, values)) == [1, 2, 4, 5]                                          # 3 -> 1 in each


def test_successive_halving_rungs_keep_the_top_third_ties_by_pack_position():
    prune = make_pruner(payload("successive_halving", min_steps=10, min_configs=2), pack(9, steps=100))
    values = {e: 0.1 * (e % 3) for e in range(9)}                 # three-way ties: 0, 0.1, 0.2
    assert prune(0, rows(0, values)) == []
    assert prune(10, rows(10, values)) == [1, 2, 4, 5, 7, 8]      # 9 -> 3: the 0.0s, in pack order
    assert prune(20, rows(20, {0: 0.3, 3: 0.2, 6: 0.2})) == []    # no rung between 10 and 30
    assert prune(30, rows(30, {0: 0.3, 3: 0.2, 6: 0.2})) == [3, 6]  # best-so-far all 0.0: a tie, pack order wins
    assert prune(90, rows(90, {3: 0.1})) == []                    # one configuration left: nothing to halve


def test_successive_halving_rungs_passed_between_evaluations_cut_in_turn():
    prune = make_pruner(payload("successive_halving", min_steps=5, min_configs=2), pack(9, steps=100))
    assert prune(20, rows(20, {e: e / 10 for e in range(9)})) == list(range(1, 9))   # rungs 5 and 15: 9 -> 3 -> 1


def test_rungs_and_auto_minimum():
    assert rungs(7, 3, 60) == [7, 21] and rungs(10, 2, 80) == [10, 20, 40] and rungs(5, 3, 5) == []
    assert auto_min_steps("successive_halving", 60, 3) == 7 and auto_min_steps("median", 60, 3) == 7
    assert auto_min_steps("successive_halving", 100, 2) == 25 and auto_min_steps("median", 1, 3) == 1


def test_metric_missing_fails_naming_the_valid_ones_but_train_loss_waits_for_step_one():
    prune = make_pruner(payload("median", metric="val/los"), pack(3))
    with pytest.raises(ValueError, match=r"search.prune_metric: 'val/los' is not a metric .*valid: .*val/mse"):
        prune(0, rows(0, {0: 0.1, 1: 0.2, 2: 0.3}))
    prune = make_pruner(payload("median", metric="train/loss"), pack(3))
    assert prune(0, {e: {"step": 0, "val/mse": 0.1} for e in range(3)}) == []


def test_decisions_are_a_function_of_the_rows():
    """Data-parallel ranks see identical rows: two pruners fed the same rows decide the same."""
    feeds = [(s, rows(s, {e: math.sin(e * s + 1.0) for e in range(6)})) for s in range(0, 60, 10)]
    a, b = (make_pruner(payload("median", min_steps=10), pack(6)) for _ in range(2))
    assert [a(s, r) for s, r in feeds] == [b(s, r) for s, r in feeds]


# --------------------------------------------------------------------------- inside ftcore.fit
def test_fit_prunes_the_hopeless_members_and_leaves_the_others_as_they_were():
    probes = [Probe(member(lr, s)) for lr in LRS for s in (0, 1)]
    members = [p.member for p in probes]
    plain = ftcore.fit(members)
    for rule in ("median", "successive_halving"):
        results = ftcore.fit(members, on_eval=make_pruner(payload(rule, min_steps=0), probes))
        pruned = [i for i, r in enumerate(results) if r.status == "pruned"]
        assert set(range(6)) <= set(pruned), rule                  # every seed of lr 1e-6, 3e-6, 1e-5
        assert all(results[i].steps == 10 and results[i].curve[-1]["step"] == 10 for i in pruned)
        assert all(results[i].metrics == {k: v for k, v in results[i].curve[-1].items() if k != "step"}
                   for i in pruned)                                  # its metrics: its last evaluation
        kept = [i for i in range(12) if i not in pruned]
        assert {10, 11} <= set(kept)                               # the best lr trains to the end, as alone
        for i in kept:
            assert results[i].status == "ok" and results[i].steps == 60
            assert results[i].metrics["val/mse"] == pytest.approx(plain[i].metrics["val/mse"], rel=1e-4)


# --------------------------------------------------------------------------- counts
def test_counts_report_pruned_runs_and_steps_saved():
    search = RoundSearch.__new__(RoundSearch)
    RoundSearch.__init__(search, None)
    search.record([{"status": "ok", "steps": 60, "train.steps": 60},
                   {"status": "pruned", "steps": 10, "train.steps": 60},
                   {"status": "pruned", "steps": 20.0, "train.steps": 60.0},
                   {"status": "failed", "train.steps": 60},                  # a failed trial's row: no steps
                   {"status": "ok", "steps": float("nan"), "train.steps": 60}])
    assert search.counts() == {"rounds": 0, "runs": 5, "pruned": 2, "steps": 90, "steps_saved": 90}


# --------------------------------------------------------------------------- the search section's fields
TINY = {"name": "tiny_prune",
        "model": {"name": "mlp", "width": 8, "depth": 2},
        "task": {"name": "lora_teacher", "batch_size": 16, "n_val": 32, "n_test": 32},
        "adapter": {"name": "full"},
        "train": {"steps": 60, "lr": 1.0e-2, "eval_every": 10, "early_stop": False},
        "axes": {"train.lr": LRS},
        "seeds": 2,
        "execution": {"pack_size": 12}}


def write_spec(tmp_path: Path, search: dict | None = None, **kw) -> Path:
    path = tmp_path / "tiny_prune.yaml"
    path.write_text(yaml.safe_dump({**TINY, **({"search": search} if search else {}), **kw}))
    return path


BAD = [({"pruner": "mediam"}, "search.pruner: must be none | median | successive_halving (got 'mediam')"),
       ({"pruner": "median", "prune_mode": "max"}, "search.prune_mode: must be set together with search.prune_metric"),
       ({"pruner": "median", "prune_metric": "val/mse", "prune_mode": "up"}, "search.prune_mode: must be min or max"),
       ({"pruner": "successive_halving", "prune_eta": 1}, "search.prune_eta: must be >= 2 (got 1)"),
       ({"pruner": "median", "prune_min_configs": 1}, "search.prune_min_configs: must be >= 2"),
       ({"pruner": "median", "prune_min_steps": -1}, "search.prune_min_steps: must be >= 0"),
       ({"pruner": "median", "prune_min_steps": 60}, "search.prune_min_steps: must be below train.steps (60)"),
       ({"pruner": "median", "prune_eta": "three"}, "search.prune_eta: must be an integer"),
       ({"pruner": "median", "prune_by": ["adapter.rnk"]}, "search.prune_by: adapter.rnk is not a field of this sweep"),
       ({"pruner": "median", "prune_by": ["train.lr", "train.lr"]}, "search.prune_by: must be distinct column names"),
       ({"kind": "capacity", "param": "adapter.width", "ladder": [2, 4], "pruner": "median"},
        "search.pruner: must be none for search.kind=capacity (its thresholds need every probe's outcome)")]


@pytest.mark.parametrize("search,message", BAD, ids=[m.split(":")[0] + "-" + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_pruning_fields_are_one_line_errors(tmp_path, search, message):
    kw = {}
    if search.get("kind") == "capacity":
        kw = {"adapter": {"name": "additive_relu", "depth": 2}, "task": {"name": "ftc_relabel", "dim": 4},
              "axes": {"task.n": [4]}}
    with pytest.raises(SpecError) as e:
        load_spec(write_spec(tmp_path, search, **kw))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_ftsweep_validate_exits_2_with_the_line(tmp_path, capsys):
    from sweeps.cli import main
    path = write_spec(tmp_path, {"pruner": "median"})
    assert main(["validate", str(path)]) == 0
    capsys.readouterr()
    assert main(["validate", str(path), "search.pruner=asha"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "search.pruner: must be none | median | successive_halving (got 'asha')" in err[0]


def test_payload_columns_and_the_default_metric(tmp_path):
    plain = load_spec(write_spec(tmp_path)).search
    assert plain.pruner_payload() is None and "search.pruner" not in plain.columns()
    s = load_spec(write_spec(tmp_path, {"pruner": "successive_halving", "prune_eta": 2})).search
    assert s.pruner_payload() == {"rule": "successive_halving", "metric": "train/loss", "mode": "min",
                                  "min_steps": 0, "min_configs": 3, "eta": 2, "by": []}
    assert s.columns()["search.pruner"] == "successive_halving" and s.columns()["search.prune_metric"] == "train/loss"
    s = load_spec(write_spec(tmp_path, {"pruner": "median"}), ["search.prune_metric=val/acc", "search.prune_mode=max"])
    assert s.search.pruner_payload()["metric"] == "val/acc" and s.search.pruner_payload()["mode"] == "max"
    # an override back to none turns it off; switching kind keeps the shared fields (capacity then refuses them)
    assert load_spec(write_spec(tmp_path, {"pruner": "median"}), ["search.pruner=none"]).search.pruner_payload() is None


def test_optuna_prunes_on_its_own_objective_by_default(tmp_path):
    optuna = {"kind": "optuna", "params": {"train.lr": {"low": 1e-4, "high": 1e-1}}, "metric": "val/mse",
              "mode": "min", "pruner": "median"}
    s = load_spec(write_spec(tmp_path, optuna, axes={})).search
    assert s.pruner_payload()["metric"] == "val/mse" and s.pruner_payload()["mode"] == "min"
    assert s.pruner_payload()["by"] == ["group"]                 # one study's proposals, not another grid point's
    with pytest.raises(SpecError, match="search.pruner: must be none"):
        load_spec(write_spec(tmp_path, {**optuna, "pruner": "asha"}, axes={}))


# --------------------------------------------------------------------------- end to end on a real local Ray
@pytest.mark.slow
def test_pruned_grid_finds_the_same_best_lr_with_fewer_steps(tmp_path):
    """One local Ray, two sweeps of the same grid (6 lrs × 2 seeds, 60 steps, one pack): without a pruner and with
    the median rule (successive halving inside fit: test_fit_prunes_the_hopeless_members...; each sweep costs ~9 s
    of Tune on 2 CPUs). Best configuration: the lr with the lowest median over seeds of the final val/mse among
    ok runs. Pruning keeps it, trains fewer steps, and records the hopeless lrs pruned."""
    import ray
    from e2e import read_dataset

    from sweeps.runner import init_ray, run_sweep
    started = init_ray(None)
    try:
        results = {}
        for pruner in ("none", "median"):
            spec = load_spec(write_spec(tmp_path, {"pruner": pruner, "prune_metric": "val/mse"} if pruner != "none"
                                        else None))
            out = tmp_path / pruner
            counts = run_sweep(spec, str(out), progress=lambda _: None)
            runs = read_dataset(out / "runs").to_pandas()
            results[pruner] = (counts, runs)
    finally:
        if started:
            ray.shutdown()

    def best_lr(runs):
        ok = runs[runs.status == "ok"]
        return ok.groupby("train.lr")["val/mse"].median().idxmin()

    counts0, runs0 = results["none"]
    assert set(runs0.status) == {"ok"} and runs0.steps.sum() == 12 * 60 and counts0["pruned"] == 0
    assert best_lr(runs0) == 3e-2
    counts, runs = results["median"]
    assert len(runs) == 12 and best_lr(runs) == best_lr(runs0)
    pruned = runs[runs.status == "pruned"]
    assert len(pruned) == 6 and set(pruned["train.lr"]) == {1e-6, 3e-6, 1e-5}   # every seed of the hopeless lrs
    assert (pruned.steps < 60).all() and (runs[runs.status == "ok"].steps == 60).all()
    assert set(runs["search.pruner"]) == {"median"}
    assert runs.steps.sum() < runs0.steps.sum()
    assert counts["pruned"] == len(pruned) and counts["steps"] == runs.steps.sum()
    assert counts["steps_saved"] == (pruned["train.steps"] - pruned.steps).sum() == runs0.steps.sum() - counts["steps"]
    curves = read_dataset(tmp_path / "median" / "curves").to_pandas()
    last = curves.groupby("run_id").step.max()
    assert (last[pruned.run_id].values == pruned.steps.values).all()     # frozen: no curve point after the stop
