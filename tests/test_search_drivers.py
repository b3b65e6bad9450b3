"""Round drivers without Ray: each round is run in-process through the same `run_pack` the workers use,
with real ftcore training and a real Optuna journal on disk."""
import optuna
import pytest

from sweeps.execute import run_pack
from sweeps.plan import plan_packs
from sweeps.runner import sweep_meta
from sweeps.search.kinds import SEARCHES, make_search
from sweeps.search.optuna_search import Param
from sweeps.spec import SweepSpec, validate


def run_rounds(spec: SweepSpec, out_dir) -> tuple:
    search, rows_all = make_search(spec, out_dir), []
    while (probes := search.next_round()) is not None:
        rows = []
        for pack in plan_packs([p.member for p in probes]):
            rows += run_pack([probes[i] for i in pack], sweep_meta(spec), f"r{search.round}")[0]
        search.record(rows)
        rows_all += rows
    return search, rows_all


def lora_spec(**search) -> SweepSpec:
    spec = SweepSpec(name="t", model={"name": "mlp", "width": 4, "depth": 2, "last_activation": False},
                     adapter={"name": "lora", "rank": 1, "tune_bias": True},
                     task={"name": "lora_teacher", "n_val": 100, "n_test": 200, "batch_size": 64},
                     train={"steps": 60, "eval_every": 30, "early_stop": False},
                     axes={"train.method": ["construction", "adam"], "adapter.rank": [1, 3]}, seeds=2,
                     search=SEARCHES["optuna"].Config(**search))
    validate(spec)
    return spec


def test_optuna_driver_rounds_and_journal(tmp_path):
    spec = lora_spec(only={"train.method": "adam"}, params={"train.lr": Param(low=1e-3, high=1e-1, log=True)},
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
                     train={"steps": 400, "lr": 3e-2, "eval_every": 20}, axes={"task.n": [2, 6]}, seeds=2,
                     search=SEARCHES["capacity"].Config(param="adapter.width", ladder=[1, 2, 4, 8, 16]))
    validate(spec)
    search, rows = run_rounds(spec, tmp_path)
    th = search.counts()["thresholds"]
    assert th["task.n=2"] is not None and th["task.n=6"] is not None and th["task.n=2"] <= th["task.n=6"]
    # every recorded probe has all seeds, and the threshold probe really passed
    for g, t in th.items():
        ok = [r["fit/success"] for r in rows if r["group"] == g and r["adapter.width"] == t]
        assert len(ok) == 2 and sum(v > 0.5 for v in ok) >= 1


def run_round(spec: SweepSpec, search, probes) -> list[dict]:
    rows = []
    for pack in plan_packs([p.member for p in probes]):
        rows += run_pack([probes[i] for i in pack], sweep_meta(spec), f"r{search.round}")[0]
    return rows


def test_optuna_resume_asks_what_an_undisturbed_study_asks(tmp_path):
    """The driver dies after asking round 2 (its trials RUNNING in the journal, never told); a new driver on
    the same journal runs those proposals again and then asks the same round 3 as an undisturbed run — with the
    same `round` (the group's batch index) on every run as the undisturbed run, not restarting at 1."""
    spec = lora_spec(only={"train.method": "adam"}, params={"train.lr": Param(low=1e-3, high=1e-1, log=True)},
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
    want_round = {r["run_id"]: r["round"] for r in undisturbed}
    assert {r["run_id"]: r["round"] for r in rows} == {r["run_id"]: want_round[r["run_id"]] for r in rows}
    reasked = [p for p in again if "optuna.trial" in p.meta]
    assert reasked and {p.meta["round"] for p in reasked} == {2} == {want_round[p.member.run_id()] for p in reasked}
    assert max(want_round.values()) == 3 and 3 in {r["round"] for r in rows}


# ------------------------------------------------------------------ Optuna as Optuna users know it (issue 16, item 4)

import importlib.util  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402

import pandas as pd  # noqa: E402

from analysis.pareto_report import fronts, objectives, pareto_mask, proposals  # noqa: E402
from ftcore.fields import coerce  # noqa: E402

OPTUNA = SEARCHES["optuna"].Config
RANK = {"type": "int", "low": 1, "high": 4}
LR = {"low": 1e-3, "high": 1e-1, "log": True}


def rank_spec(axes=None, seeds=2, **search) -> SweepSpec:
    """LoRA on a width-4 MLP with adapter.rank searched (not an axis): tiny real training."""
    search = {"params": {"adapter.rank": RANK, "train.lr": LR}, **search}
    spec = SweepSpec(name="r", model={"name": "mlp", "width": 4, "depth": 2, "last_activation": False},
                     adapter={"name": "lora", "rank": 1, "tune_bias": True},
                     task={"name": "lora_teacher", "n_val": 100, "n_test": 100, "batch_size": 64},
                     train={"steps": 40, "eval_every": 20, "early_stop": False}, axes=axes or {}, seeds=seeds,
                     search=coerce(OPTUNA, search, "search"))
    validate(spec)
    return spec


def journal_study(out, spec, group=""):
    backend = optuna.storages.journal.JournalFileBackend(str(out / "optuna" / "journal.log"))
    storage = optuna.storages.JournalStorage(backend)
    return optuna.load_study(study_name=f"{spec.name}:{group}", storage=storage)


def test_param_schema_float_int_categorical_and_old_ranges():
    cfg = coerce(OPTUNA, {"params": {"train.lr": {"low": 1e-4, "high": 1e-2},                 # the old schema
                                     "train.weight_decay": {"low": 0.0, "high": 0.1, "log": False, "step": 0.05},
                                     "adapter.rank": {"type": "int", "low": "1", "high": 8.0},
                                     "train.schedule": {"type": "categorical", "choices": ["constant", "cosine"]}}},
                 "search")
    lr, wd, rank, sched = (cfg.params[k].distribution() for k in cfg.params)
    assert lr == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)          # float, log by default
    assert wd == optuna.distributions.FloatDistribution(0.0, 0.1, step=0.05)
    assert rank == optuna.distributions.IntDistribution(1, 8) and cfg.params["adapter.rank"].low == 1
    assert sched == optuna.distributions.CategoricalDistribution(["constant", "cosine"])
    assert cfg.objectives() == [("val/mse", "min")]
    two = coerce(OPTUNA, {"params": {"train.lr": LR}, "metrics": ["val/mse", "n_trainable"],
                          "directions": ["minimize", "max"]}, "search")
    assert two.objectives() == [("val/mse", "min"), ("n_trainable", "max")]
    # the columns every row carries: unchanged for one objective (pinned), three more for several
    assert set(cfg.columns()) == {"search.kind", "search.param", "search.success", "search.quorum",
                                  "search.ladder_size"}
    assert two.columns()["search.directions"] == "min,max" and two.columns()["search.params"] == "train.lr"


def categorical(**fields) -> dict:
    return {"params": {"train.schedule": {"type": "categorical", **fields}}}


BAD_SECTIONS = [
    ({"params": {"train.lr": {"type": "normal", "low": 1, "high": 2}}}, "search.params.train.lr.type: must be one of"),
    ({"params": {"adapter.rank": {"type": "int", "low": 1.5, "high": 4}}},
     "search.params.adapter.rank.low: must be an integer"),
    ({"params": {"adapter.rank": {"type": "int", "low": 1, "high": 8, "log": True, "step": 2}}},
     "search.params.adapter.rank.step: must be 1 when log"),
    ({"params": {"train.lr": {"low": 1e-3, "high": 1e-1, "step": 1e-3}}},
     "search.params.train.lr.step: must be unset when log"),
    ({"params": {"train.lr": {"low": 0.0, "high": 1.0, "log": False, "step": 0.3}}}, "high - low a multiple of step"),
    ({"params": {"train.lr": {"low": 0.1, "high": 0.01}}}, "search.params.train.lr: must be low < high"),
    ({"params": {"train.lr": {"high": 0.1}}}, "search.params.train.lr: must be {low, high}"),
    (categorical(), "search.params.train.schedule.choices: must be a non-empty list"),
    (categorical(choices=[1, 1]), "search.params.train.schedule.choices: must be distinct"),
    (categorical(choices=[1, 2], low=1), "search.params.train.schedule.low: must be unset"),
    (categorical(choices=[[1], 2]), "search.params.train.schedule.choices: must be scalars"),
    ({"params": {"train.lr": LR}, "directions": ["min", "min"]}, "search.metrics: must be one metric per entry"),
    ({"params": {"train.lr": LR}, "metrics": ["val/mse", "n_trainable"], "directions": ["min"]},
     "search.directions: must be min or max for each of search.metrics (2)"),
    ({"params": {"train.lr": LR}, "metrics": ["a", "b"], "directions": ["min", "up"]},
     "search.directions[1]: must be min or max"),
    ({"params": {"train.lr": LR}, "sampler": "nsga"}, "search.sampler: must be one of tpe, gp, random, cmaes"),
    ({"params": {"train.lr": LR}, "sampler": "cmaes", "metrics": ["a", "b"], "directions": ["min", "min"]},
     "search.sampler: must be tpe, gp or random with 2 objectives"),
]


@pytest.mark.parametrize("section,message", BAD_SECTIONS,
                         ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD_SECTIONS)])
def test_a_bad_search_section_is_one_line(section, message):
    with pytest.raises(ValueError) as e:
        coerce(OPTUNA, section, "search")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cmaes_runs_when_its_package_is_installed_and_is_refused_naming_it_otherwise(tmp_path):
    section = {"params": {"train.lr": LR, "train.weight_decay": {"low": 1e-5, "high": 1e-2}}, "sampler": "cmaes"}
    if importlib.util.find_spec("cmaes") is None:
        with pytest.raises(ValueError, match=r"search.sampler: cmaes needs the 'cmaes' package, which is not"):
            coerce(OPTUNA, section, "search")
        return
    probes = make_search(rank_spec(**section, seeds=1, n_trials=2, batch=2), tmp_path).next_round()
    assert len(probes) == 2


@pytest.mark.parametrize("params,axes,message", [
    ({"adapter.rank": RANK}, {"adapter.rank": [1, 2]}, "search.params.adapter.rank: is a grid axis too"),
    ({"adapter.width": RANK}, None, "adapter.width: unknown key; valid:"),       # LoRA has a rank, not a width
    ({"adapter.name": {"type": "categorical", "choices": ["lora", "delta"]}}, None,
     "search.params.adapter.name: must be a field other than a registry name"),
    ({"lr": LR}, None, "search.params.lr: must be named by a dotted field of model, adapter, task, train"),
    ({"seed": RANK}, None, "search.params.seed: must be named by a dotted field"),
    ({"adapter.rank": {"type": "int", "low": 1, "high": 8}}, None, "adapter.rank: must be <= model.width=4"),
])
def test_a_param_the_members_cannot_take_is_refused_at_validation(params, axes, message):
    """Refused before any run, in one line: by the section's own checks (ValueError, a SpecError once the loader
    has it), the spec's (a param that is an axis) or the member configs built at every param's ends."""
    with pytest.raises(ValueError) as e:
        rank_spec(axes=axes, params=params)
    assert message in str(e.value) and "\n" not in str(e.value)


def objective_rows(probes, f) -> list[dict]:
    """Result rows of a round without training: each member scored by f(member) (a real study still learns)."""
    return [{**p.meta, "run_id": p.member.run_id(), "status": "ok", "val/mse": f(p.member)} for p in probes]


def bowl(m) -> float:
    return (math.log10(m.train.lr) + 2) ** 2 + 0.1 * m.adapter.rank + 0.01 * m.seed


@pytest.mark.parametrize("sampler", ["tpe", "gp", "random", "cmaes"])
def test_every_sampler_is_seeded_and_proposes_whole_batches(tmp_path, sampler):
    """Two drivers on fresh journals ask the same proposals round after round (seeded by group and trial number);
    tpe lies about the running trials of a batch (constant liar)."""
    if sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
        pytest.skip("cmaes is not installed (its refusal is tested above)")
    spec = rank_spec(sampler=sampler, n_trials=6, batch=3, seeds=1)
    asked = []
    for d in ("a", "b"):
        search, seen = make_search(spec, tmp_path / d), []
        while (probes := search.next_round()) is not None:
            seen.append(sorted((p.meta["optuna.trial"], p.member.adapter.rank, p.member.train.lr) for p in probes))
            assert len(probes) == 3
            search.record(objective_rows(probes, bowl))
        asked.append(seen)
        study = journal_study(tmp_path / d, spec)
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6
        ranks = [t.params["adapter.rank"] for t in study.trials]
        assert all(1 <= r <= 4 and isinstance(r, int) for r in ranks)
    assert asked[0] == asked[1] and len(asked[0]) == 2
    if sampler == "tpe":
        assert search._sampler("", 3)._constant_liar


def test_int_and_categorical_params_pack_by_their_per_member_fields(tmp_path):
    """adapter.rank and train.lr are per-member: a batch of proposals x seeds shares packs (ranks through the padding
    masks); train.schedule is not: proposals split into one pack per schedule. Real training, one study."""
    spec = rank_spec(params={"adapter.rank": RANK, "train.lr": LR,
                             "train.schedule": {"type": "categorical", "choices": ["constant", "cosine"]}},
                     n_trials=4, batch=4, sampler="random", seeds=2)
    search = make_search(spec, tmp_path)
    probes = search.next_round()
    members = [p.member for p in probes]
    packs = plan_packs(members, overhead=spec.execution.pack_overhead)
    assert len({m.train.schedule for m in members}) == 2 and len(packs) == 2      # one pack per schedule
    assert any(len({members[i].adapter.rank for i in pack}) > 1 for pack in packs)     # mixed ranks in one pack
    rows = []
    for pack in packs:
        rows += run_pack([probes[i] for i in pack], sweep_meta(spec), "r1")[0]
    search.record(rows)
    assert {r["status"] for r in rows} == {"ok"}
    by_rank = {r["adapter.rank"]: r["n_trainable"] for r in rows}
    assert all(by_rank[a] < by_rank[b] for a in by_rank for b in by_rank if a < b)    # each member its own rank
    for t in journal_study(tmp_path, spec).trials:
        vals = [r["val/mse"] for r in rows if r["optuna.trial"] == t.number]
        assert t.state.name == "COMPLETE" and t.value == pytest.approx(statistics.median(vals))
        assert {(r["adapter.rank"], r["train.schedule"]) for r in rows if r["optuna.trial"] == t.number} == \
            {(t.params["adapter.rank"], t.params["train.schedule"])}


def test_two_directions_tell_both_medians_and_the_report_front_is_optunas(tmp_path):
    """A multi-objective study over (val/mse, n_trainable), both min, with real training: every trial is told the
    medians over seeds of both; the Pareto front the report computes from the rows is study.best_trials."""
    spec = rank_spec(metrics=["val/mse", "n_trainable"], directions=["min", "min"], n_trials=6, batch=3)
    search, rows = run_rounds(spec, tmp_path)
    study = journal_study(tmp_path, spec)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    for t in study.trials:
        mine = [r for r in rows if r["optuna.trial"] == t.number]
        assert len(mine) == 2 and t.values == pytest.approx([statistics.median(r["val/mse"] for r in mine),
                                                             statistics.median(r["n_trainable"] for r in mine)])
    runs = pd.DataFrame(rows)
    objs = objectives(runs)
    assert objs == [("val/mse", "min"), ("n_trainable", "min")]
    done = fronts(proposals(runs, objs), objs)
    assert set(done.loc[done["front"], "trial"]) == {t.number for t in study.best_trials}
    assert len(done) == 6 and list(done.columns[:4]) == ["group", "trial", "n_seeds", "outcome"]


def test_pareto_mask_against_a_brute_force_definition():
    rng = __import__("numpy").random.default_rng(0)
    vals = rng.integers(0, 5, size=(40, 3)).astype(float)          # ties on purpose
    dirs = ["min", "max", "min"]
    sign = [1, -1, 1]
    def dominates(a, b):
        a, b = [x * s for x, s in zip(a, sign)], [x * s for x, s in zip(b, sign)]
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))
    want = [not any(dominates(vals[j], vals[i]) for j in range(len(vals))) for i in range(len(vals))]
    assert pareto_mask(vals, dirs).tolist() == want and 0 < sum(want) < len(vals)


def test_invalid_pruned_and_failed_proposals_are_told_as_optuna_states(tmp_path):
    """model.width (not per-member) and adapter.rank searched together: a proposal with rank > width is told FAIL
    at once, with the reason, and counts against n_trials; a proposal whose seeds were pruned is PRUNED with its
    median at the earliest pruned step as the last intermediate value; a diverged seed makes FAIL."""
    spec = rank_spec(params={"model.width": {"type": "categorical", "choices": [2, 4]}, "adapter.rank": RANK},
                     sampler="random", n_trials=16, batch=16, seeds=2)
    search = make_search(spec, tmp_path)
    probes = search.next_round()
    study = journal_study(tmp_path, spec)
    assert len(study.trials) == 16
    bad = [t for t in study.trials if t.params["adapter.rank"] > t.params["model.width"]]
    assert bad and search.counts()["invalid_proposals"] == len(bad)
    for t in bad:
        assert t.state.name == "FAIL" and "adapter.rank: must be <= model.width=2" in t.user_attrs["invalid"]
    good = sorted({p.meta["optuna.trial"] for p in probes})
    assert len(probes) == 2 * len(good) == 2 * (16 - len(bad))
    pruned, failed, ok = good[:3]
    rows = []
    for p in probes:
        n, s = p.meta["optuna.trial"], p.member.seed
        status = {pruned: "pruned", failed: "diverged" if s else "ok"}.get(n, "ok")
        rows.append({**p.meta, "status": status, "val/mse": 0.5 + s, "steps": 10 + 10 * s})
    search.record(rows)
    states = {t.number: t for t in journal_study(tmp_path, spec).trials}
    assert states[pruned].state.name == "PRUNED" and states[pruned].intermediate_values == {10: 1.0}
    assert states[failed].state.name == "FAIL" and states[ok].state.name == "COMPLETE" and states[ok].value == 1.0
    runs = pd.DataFrame([{**r, "sweep": "r", "search.kind": "optuna"} for r in rows])
    assert objectives(runs) is None                                 # one objective: no Pareto section
