"""No round barrier (issue 17): a real `PackSearcher` over real searches (capacity ladder walks, Optuna studies on a
journal), driven by hand as Tune would drive it (suggest while a slot is free, one trial completing at a time).
A group advances as soon as its own probe's rows are in, whatever another lane runs; groups of one lane (they share
packs) go on together; a probe split across trials waits for all its seeds; decisions (capacity thresholds, Optuna
proposals) and every member's pack do not depend on the order trials complete in; a resume replays them with no
mismatch. Trial results are rows computed from each payload's config (an oracle per
group and seed), so every completion order can be played out without training."""
import json
import math
import random
from collections.abc import Callable

import optuna
import pytest
from ray.tune.search import Searcher

from ftcore.config import member_from_dict
from sweeps.runner import PackSearcher
from sweeps.schema import ExecutionSpec
from sweeps.search.capacity import CapacitySearch
from sweeps.search.kinds import SEARCHES
from sweeps.search.optuna_search import Param
from sweeps.spec import SweepSpec, validate

LADDER = [2, 4, 8, 16, 32, 64, 128]                # a depth-3 additive ReLU needs width >= 2
NEED = {2: 3, 4: 9, 6: 20, 8: 40, 10: 200}      # task.n -> width from which seed 0 succeeds (200: censored)


def capacity_spec(ns=(2, 4, 6, 8, 10), depths=(2, 3), seeds=2, pack_size=0) -> SweepSpec:
    """Groups task.n × adapter.depth: task.n is per-member (one lane per depth: its groups share packs), the
    depth is not (two lanes, never in one pack)."""
    spec = SweepSpec(name="nb", model={"name": "mlp", "width": 4, "depth": 1},
                     adapter={"name": "additive_relu", "depth": 2},
                     task={"name": "ftc_relabel", "dim": 3, "k_per_n": 1.0, "tol": 0.05},
                     train={"steps": 300, "lr": 3e-2, "eval_every": 20},
                     axes={"task.n": list(ns), "adapter.depth": list(depths)}, seeds=seeds,
                     execution=ExecutionSpec(pack_size=pack_size),
                     search=SEARCHES["capacity"].Config(param="adapter.width", ladder=LADDER, quorum=1.0))
    validate(spec)
    return spec


def need(n: int, depth: int, seed: int) -> int:
    """The oracle: seed s of group (task.n=n, adapter.depth=d) succeeds from this width on (seeds differ, so the
    quorum matters; depth 3 needs a little less)."""
    return NEED[n] + 2 * seed - (depth - 2)


def capacity_rows(cfg: dict) -> list[dict]:
    rows = []
    for pack in cfg["packs"]:
        for p in pack:
            m = member_from_dict(p["config"])
            rows.append({"run_id": m.run_id(), "status": "ok", **p["meta"], "adapter.width": m.adapter.width,
                         "fit/success": float(m.adapter.width >= need(m.task.n, m.adapter.depth, m.seed)),
                         "packed_with": ",".join(sorted(member_from_dict(q["config"]).run_id() for q in pack))})
    return rows


def groups_of(cfg: dict) -> set[str]:
    return {p["meta"]["group"] for pack in cfg["packs"] for p in pack}


def members_of(cfg: dict) -> list[dict]:
    return [p for pack in cfg["packs"] for p in pack]


def drive(s: PackSearcher, pick: Callable[[list[str]], str], rows_of=capacity_rows, n0: int = 0,
          stop_after: int | None = None) -> list[dict]:
    """Play Tune: fill the free slots (suggest until None), then complete the trial `pick` chooses among the
    running ones; until FINISHED (or `stop_after` completions). Returns every row the trials reported."""
    running: dict[str, dict] = {}
    rows, n, completed = [], n0, 0
    while stop_after is None or completed < stop_after:
        while len(running) < s.n_slots:
            cfg = s.suggest(f"t{n}")
            if cfg is None:
                break
            if cfg == Searcher.FINISHED:
                assert not running, "finished with trials still running"
                return rows
            running[f"t{n}"] = cfg
            n += 1
        assert running, "told Tune to wait with nothing running"
        tid = pick(sorted(running, key=lambda t: int(t[1:])))
        got = rows_of(running.pop(tid))
        s.on_trial_complete(tid, {"rows": json.dumps(got)})
        rows += got
        completed += 1
    return rows


def oracle_thresholds(spec: SweepSpec) -> dict[str, int | None]:
    """The barrier-independent result: every group's ladder walk against the oracle, one group at a time."""
    out = {}
    for n in spec.axes["task.n"]:
        for d in spec.axes["adapter.depth"]:
            cap = CapacitySearch(["g"], LADDER, quorum=1.0)
            while not cap.done:
                v = cap.pending()["g"]
                cap.record("g", v, [v >= need(n, d, s) for s in spec.seed_list()])
            out[f"task.n={n},adapter.depth={d}"] = cap.threshold("g")
    return out


def test_a_group_advances_while_another_groups_trial_is_still_running(tmp_path):
    """Two groups in two lanes (adapter.depth 2 and 3 never share a pack), one trial each; only one completes (it
    failed after its retries: its group's probe is a failure and moves on): the next suggest hands out exactly that
    group's next probe, one trial for the one free slot, while the other trial still runs."""
    lines = []
    s = PackSearcher(capacity_spec(ns=(4,)), tmp_path, n_slots=2, progress=lines.append)
    a, b = s.suggest("t0"), s.suggest("t1")
    assert isinstance(a, dict) and isinstance(b, dict) and s.suggest("t2") is None    # both slots busy: wait
    assert len(groups_of(a)) == len(groups_of(b)) == 1 and groups_of(a) != groups_of(b)
    s.on_trial_complete("t0", None, error=True)
    nxt = s.suggest("t2")
    assert isinstance(nxt, dict) and s.suggest("t3") is None                  # one free slot, one trial
    assert groups_of(nxt) == groups_of(a) and "t1" in s.outstanding
    widths = {member_from_dict(p["config"]).adapter.width for p in members_of(nxt)}
    assert widths == {4} and {p["meta"]["round"] for p in members_of(nxt)} == {2}     # the group's 2nd probe
    assert [line.split(":")[0] for line in lines if line.startswith("round")] == ["round 1", "round 2"]
    (other,) = groups_of(b)                     # the other group's probe is still in flight: its walk has not moved
    assert s.search.search.state[other].probes == [] and s.search.counts()["rounds"] == 2


def test_groups_that_share_packs_go_on_together(tmp_path):
    """Groups of one lane (task.n is per-member: they share packs) advance together: a group whose probe is in
    waits, parked, for its lane-mates' trial, so each pack's members never depend on which trial finished first."""
    s = PackSearcher(capacity_spec(ns=(2, 4), depths=(2,), pack_size=2), tmp_path, n_slots=2, progress=print)
    a, b = s.suggest("t0"), s.suggest("t1")
    assert groups_of(a) != groups_of(b) and len(groups_of(a) | groups_of(b)) == 2
    s.on_trial_complete("t0", {"rows": json.dumps(capacity_rows(a))})
    assert s.suggest("t2") is None and len(s.search.search.state[min(groups_of(a))].probes) == 1   # decided, parked
    s.on_trial_complete("t1", {"rows": json.dumps(capacity_rows(b))})
    c, d = s.suggest("t2"), s.suggest("t3")
    assert groups_of(c) | groups_of(d) == groups_of(a) | groups_of(b)          # the lane goes on as one


def test_a_probe_split_across_two_trials_waits_for_both(tmp_path):
    """pack_size 1: one group's two seeds run in two trials; the group advances only when the second is in."""
    s = PackSearcher(capacity_spec(ns=(4,), depths=(2,), pack_size=1), tmp_path, n_slots=2, progress=print)
    a, b = s.suggest("t0"), s.suggest("t1")
    (g,) = groups_of(a)
    assert groups_of(b) == {g} and len(members_of(a)) == len(members_of(b)) == 1
    s.on_trial_complete("t0", {"rows": json.dumps(capacity_rows(a))})
    assert s.suggest("t2") is None and s.search.search.state[g].probes == []    # half in: it waits
    assert s.search.waiting() == 1
    s.on_trial_complete("t1", {"rows": json.dumps(capacity_rows(b))})
    assert s.search.search.state[g].probes == [(2, 0, 2)]
    c, d = s.suggest("t2"), s.suggest("t3")                                  # both slots free: two trials
    assert {member_from_dict(p["config"]).adapter.width for p in members_of(c) + members_of(d)} == {4}


@pytest.mark.parametrize("pack_size", [0, 1, 3])
def test_thresholds_and_packs_do_not_depend_on_the_completion_order(tmp_path, pack_size):
    """The same sweep with trials completing oldest first, newest first and at random: the same thresholds (the
    oracle's, each group walked alone), the same probes per group and every member in a pack with the same
    members (what it computes cannot depend on timing); newest first really overlaps waves (a later wave's
    trial completes while an earlier wave's still runs)."""
    spec = capacity_spec(pack_size=pack_size)
    want = oracle_thresholds(spec)
    assert None in want.values() and len(set(want.values())) >= 5              # a censored group; several m*
    results, overlapped = [], []
    rng = random.Random(pack_size)
    orders = {"oldest": lambda ts: ts[0], "newest": lambda ts: ts[-1], "random": rng.choice}
    for name, pick in orders.items():
        s = PackSearcher(spec, tmp_path / name, n_slots=3, progress=print)
        rows = drive(s, pick)
        counts = s.search.counts()
        assert counts["thresholds"] == want, name
        walks = {g: st.probes for g, st in s.search.search.state.items()}
        results.append((walks, sorted((r["run_id"], r["packed_with"]) for r in rows)))
        assert counts["runs"] == len(rows) == sum(n for w in walks.values() for _, _, n in w)
        by_group = {}
        for r in rows:                                   # `round` is the group's own probe index, 1, 2, ...
            by_group.setdefault(r["group"], {}).setdefault(r["round"], set()).add(r["adapter.width"])
        for g, w in walks.items():
            assert by_group[g] == {i: {v} for i, (v, _, _) in enumerate(w, 1)}, g
        overlapped.append(counts["rounds"] > max(len(w) for w in walks.values()))
    assert results[0] == results[1] == results[2]
    assert overlapped[1]                     # newest first: more waves than the longest walk (waves interleaved)


def test_resume_replays_without_mismatch_and_reaches_the_same_thresholds(tmp_path):
    """Interrupted after a few trials (waves overlapping), resumed from the recorded rows: no mismatch, no recorded
    run handed out again, the recorded ones replayed as soon as a wave names them, the same thresholds and the same
    runs in all as an undisturbed sweep."""
    spec = capacity_spec(pack_size=3)
    undisturbed = PackSearcher(spec, tmp_path / "ref", n_slots=2, progress=print)
    all_rows = drive(undisturbed, lambda ts: ts[-1])
    first = PackSearcher(spec, tmp_path / "a", n_slots=2, progress=print)
    before = drive(first, lambda ts: ts[-1], stop_after=5)
    recorded = {r["run_id"]: r for r in before}
    lines = []
    resumed = PackSearcher(spec, tmp_path / "a", n_slots=2, progress=lines.append, recorded=recorded)
    handed = []

    def rows_of(cfg):
        handed.extend(member_from_dict(p["config"]).run_id() for p in members_of(cfg))
        return capacity_rows(cfg)
    after = drive(resumed, lambda ts: ts[0], rows_of=rows_of, n0=100)
    assert not resumed.mismatch and resumed.finished and resumed.resumed == len(recorded)
    assert not set(handed) & set(recorded)
    assert any("already recorded" in line for line in lines)
    assert resumed.search.counts()["thresholds"] == undisturbed.search.counts()["thresholds"]
    assert recorded and after
    assert sorted(list(recorded) + [r["run_id"] for r in after]) == sorted(r["run_id"] for r in all_rows)


def test_a_resume_that_replays_a_whole_lane_packs_the_other_lane_as_before(tmp_path):
    """Auto pack size shares the slots among the lanes (n_slots // lanes): a resume whose recorded rows cover one lane
    entirely still counts that lane, so the other lane's members train in the same packs as in an undisturbed run."""
    spec = capacity_spec(ns=(2, 4, 6, 8))
    undisturbed = drive(PackSearcher(spec, tmp_path / "ref", n_slots=4, progress=print), lambda ts: ts[0])
    recorded = {r["run_id"]: r for r in undisturbed if r["group"].endswith("adapter.depth=2")}
    assert recorded and len(recorded) < len(undisturbed)
    resumed = PackSearcher(spec, tmp_path / "ref", n_slots=4, progress=print, recorded=recorded)
    after = drive(resumed, lambda ts: ts[0], n0=100)
    assert {r["run_id"] for r in after} == {r["run_id"] for r in undisturbed} - set(recorded)
    packed = {r["run_id"]: r["packed_with"] for r in undisturbed}
    assert all(r["packed_with"] == packed[r["run_id"]] for r in after)


# ------------------------------------------------------------------ Optuna: per-group batches

def optuna_spec(seeds=2) -> SweepSpec:
    """Two tuned groups that cannot share a pack (model.width is not per-member) and one untuned group."""
    spec = SweepSpec(name="nbo", model={"name": "mlp", "width": 4, "depth": 2, "last_activation": False},
                     adapter={"name": "lora", "rank": 1, "tune_bias": True},
                     task={"name": "lora_teacher", "n_val": 100, "n_test": 200, "batch_size": 64},
                     train={"steps": 60, "eval_every": 30, "early_stop": False, "method": "adam"},
                     axes={"model.width": [4, 8], "train.schedule": ["constant", "cosine"]}, seeds=seeds,
                     search=SEARCHES["optuna"].Config(only={"train.schedule": "constant"}, n_trials=4, batch=2,
                                                      params={"train.lr": Param(low=1e-3, high=1e-1, log=True)}))
    validate(spec)
    return spec


def bowl_rows(cfg: dict) -> list[dict]:
    rows = []
    for p in members_of(cfg):
        m = member_from_dict(p["config"])
        rows.append({"run_id": m.run_id(), "status": "ok", **p["meta"], "train.lr": m.train.lr,
                     "val/mse": (math.log10(m.train.lr) + 2) ** 2 + 0.01 * m.seed})
    return rows


def journal(out, spec, group) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "optuna" / "journal.log")))
    return optuna.load_study(study_name=f"{spec.name}:{group}", storage=storage)


def test_optuna_asks_a_groups_next_batch_once_its_own_batch_is_told(tmp_path):
    spec = optuna_spec()
    s = PackSearcher(spec, tmp_path / "o", n_slots=2, progress=print)
    first = []
    while isinstance(cfg := s.suggest(f"t{len(first)}"), dict):
        first.append(cfg)
    tuned = sorted(g for g in s.search.tuned)
    assert len(tuned) == 2 and len(s.search.untuned) == 2
    by_group = {g: [i for i, c in enumerate(first) if g in groups_of(c)] for g in tuned}
    assert all(len(ix) == 1 for ix in by_group.values()) and by_group[tuned[0]] != by_group[tuned[1]]
    # complete every first-wave trial except the one holding tuned[1]'s batch
    for i, cfg in enumerate(first):
        if i not in by_group[tuned[1]]:
            s.on_trial_complete(f"t{i}", {"rows": json.dumps(bowl_rows(cfg))})
    nxt = s.suggest("t10")
    assert isinstance(nxt, dict) and groups_of(nxt) == {tuned[0]}            # untuned groups ran once, in wave 1
    assert {p["meta"]["optuna.trial"] for p in members_of(nxt)} == {2, 3}
    assert {p["meta"]["round"] for p in members_of(nxt)} == {2} and len(members_of(nxt)) == 2 * 2
    assert s.suggest("t11") is None                                          # tuned[1]'s batch is not told yet
    assert [t.state.name for t in journal(tmp_path / "o", spec, tuned[0]).trials] == ["COMPLETE"] * 2 + ["RUNNING"] * 2
    assert [t.state.name for t in journal(tmp_path / "o", spec, tuned[1]).trials] == ["RUNNING"] * 2
    # the rest, in another order: each study ends with n_trials told, the same proposals as a wave-by-wave run
    pending = {"t10": nxt, **{f"t{i}": first[i] for i in by_group[tuned[1]]}}
    for tid in ["t10", *[t for t in pending if t != "t10"]]:
        s.on_trial_complete(tid, {"rows": json.dumps(bowl_rows(pending[tid]))})
    rest = drive(s, lambda ts: ts[-1], rows_of=bowl_rows, n0=20)
    assert s.finished and {(r["group"], r["optuna.trial"]) for r in rest} == {(tuned[1], 2), (tuned[1], 3)}
    ref = PackSearcher(spec, tmp_path / "ref", n_slots=1, progress=print)
    drive(ref, lambda ts: ts[0], rows_of=bowl_rows)
    for g in tuned:
        got, want = journal(tmp_path / "o", spec, g).trials, journal(tmp_path / "ref", spec, g).trials
        assert [t.state.name for t in got] == ["COMPLETE"] * 4
        assert [t.params for t in got] == [t.params for t in want] and [t.value for t in got] == [t.value for t in want]
    assert s.search.counts()["optuna_trials"] == 8 and s.search.counts()["runs"] == 2 * 4 * 2 + 2 * 2

