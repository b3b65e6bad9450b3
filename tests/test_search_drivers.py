"""Round drivers without Ray: each round is run in-process through the same `run_pack` the workers use,
with real ftcore training and a real Optuna journal on disk."""
import optuna
import pytest

from sweeps.execute import run_pack
from sweeps.plan import plan_packs
from sweeps.runner import sweep_meta
from sweeps.search.base import make_search
from sweeps.spec import SweepSpec, validate


def run_rounds(spec: SweepSpec, out_dir) -> tuple:
    search, rows_all = make_search(spec, out_dir), []
    while (probes := search.next_round()) is not None:
        payloads = [p.payload() for p in probes]
        rows = []
        for pack in plan_packs([p.member for p in probes]):
            rows += run_pack([payloads[i] for i in pack], sweep_meta(spec), f"r{search.round}")[0]
        search.record(rows)
        rows_all += rows
    return search, rows_all


def lora_spec(**search) -> SweepSpec:
    spec = SweepSpec(name="t", model={"name": "mlp", "width": 4, "depth": 2, "last_activation": False},
                     adapter={"name": "lora", "rank": 1, "tune_bias": True},
                     task={"name": "lora_teacher", "n_val": 100, "n_test": 200, "batch_size": 64},
                     train={"steps": 60, "eval_every": 30, "early_stop": False},
                     axes={"train.method": ["construction", "adam"], "adapter.rank": [1, 3]}, seeds=2)
    spec.search.kind = "optuna"
    for k, v in search.items():
        setattr(spec.search, k, v)
    validate(spec)
    return spec


def test_optuna_driver_rounds_and_journal(tmp_path):
    from sweeps.spec import ParamRange
    spec = lora_spec(only={"train.method": "adam"}, params={"train.lr": ParamRange(1e-3, 1e-1, True)},
                     n_trials=3, batch=2)
    search, rows = run_rounds(spec, tmp_path)
    assert search.round == 2                                     # 2 proposals, then 1
    adam = [r for r in rows if r["train.method"] == "adam"]
    assert len(adam) == 2 * 3 * 2                                # ranks x trials x seeds
    assert [r["round"] for r in rows if r["train.method"] == "construction"] == [1] * 4
    for g in {r["group"] for r in adam}:                          # one lr per proposal, shared by its seeds
        assert len({r["train.lr"] for r in adam if r["group"] == g}) == 3
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna" / "journal.log")))
    for s in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
        # the study was told the median over seeds of val/mse for that proposal
        t = study.trials[0]
        vals = sorted(r["val/mse"] for r in adam if r["group"] == s.study_name.split(":", 1)[1]
                      and r["optuna.trial"] == t.number)
        assert t.value == pytest.approx((vals[0] + vals[1]) / 2)


def test_capacity_driver_on_real_training(tmp_path):
    spec = SweepSpec(name="c", model={"name": "mlp", "width": 4, "depth": 1}, adapter={"name": "additive_relu", "depth": 2},
                     task={"name": "ftc_relabel", "dim": 3, "k_per_n": 1.0, "tol": 0.05},
                     train={"steps": 400, "lr": 3e-2, "eval_every": 20}, axes={"task.n": [2, 6]}, seeds=2)
    spec.search.kind, spec.search.param, spec.search.ladder = "capacity", "adapter.width", [1, 2, 4, 8, 16]
    validate(spec)
    search, rows = run_rounds(spec, tmp_path)
    th = search.counts()["thresholds"]
    assert th["task.n=2"] is not None and th["task.n=6"] is not None and th["task.n=2"] <= th["task.n=6"]
    # every recorded probe has all seeds, and the threshold probe really passed
    for g, t in th.items():
        ok = [r["fit/success"] for r in rows if r["group"] == g and r["adapter.width"] == t]
        assert len(ok) == 2 and sum(v > 0.5 for v in ok) >= 1


def run_round(spec: SweepSpec, search, probes) -> list[dict]:
    payloads, rows = [p.payload() for p in probes], []
    for pack in plan_packs([p.member for p in probes]):
        rows += run_pack([payloads[i] for i in pack], sweep_meta(spec), f"r{search.round}")[0]
    return rows


def test_optuna_resume_asks_what_an_undisturbed_study_asks(tmp_path):
    """The driver dies after asking round 2 (its trials RUNNING in the journal, never told); a new driver on
    the same journal runs those proposals again and then asks the same round 3 as an undisturbed run."""
    from sweeps.spec import ParamRange
    spec = lora_spec(only={"train.method": "adam"}, params={"train.lr": ParamRange(1e-3, 1e-1, True)},
                     n_trials=6, batch=2)
    _, undisturbed = run_rounds(spec, tmp_path / "ref")
    expected = sorted(r["run_id"] for r in undisturbed)

    first = make_search(spec, tmp_path / "out")
    rows = run_round(spec, first, first.next_round())
    first.record(rows)
    lost = first.next_round()                       # asked, then the driver dies: nothing told
    assert lost and all("optuna.trial" in p.meta for p in lost)
    del first

    search = make_search(spec, tmp_path / "out")
    again = search.next_round()
    assert sorted(p.member.run_id() for p in again if "optuna.trial" in p.meta) == sorted(p.member.run_id() for p in lost)
    recorded = {r["run_id"]: r for r in rows}          # the runner's replay: recorded rows of this round's probes
    todo = [p for p in again if p.member.run_id() not in recorded]
    replayed = [{**recorded[p.member.run_id()], **p.meta} for p in again if p.member.run_id() in recorded]
    assert replayed and todo
    search.record(replayed + run_round(spec, search, todo))
    while (probes := search.next_round()) is not None:
        rows_n = run_round(spec, search, probes)
        search.record(rows_n)
        rows += rows_n
    got = {r["run_id"] for r in rows} | {p.member.run_id() for p in lost}
    assert sorted(got) == expected
