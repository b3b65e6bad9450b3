"""Injected trial faults (FTCORE_FAULT, sweeps/faults.py) on a real local Ray, through the real CLI.

* retries exhausted: one trial dies before training on every attempt -> its members are recorded `failed`
  beside the other trials' `ok` ones -> `ftsweep resume` (fault off) runs exactly those members again and ends
  with every run `ok` and no failed part left;
* die after commit: one trial dies once after its rows are committed, before it reports them (Tune's retry
  reports them), another on every attempt (its retries run out after its rows were committed) -> each run_id
  recorded once and `ok`, none lost, no failed part shadowing committed rows;
  (these three faults share one sweep: the `faulted` fixture)
* the switch itself: its grammar, refused values (exit 2 before anything is written or dropped), and that it
  reaches the workers of the local Ray that `ftsweep run` starts (the firing records name a worker's pid).
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from e2e import finish, read_dataset, start_cli
from grid_ids import grid_run_ids

from sweeps import faults

# 4 members in 2 trials of 2 (one pack each, one per task.n), ~3 s of training in all
TWO_TRIALS = """
name: two_trials
model:   {name: mlp, width: 8, depth: 2}
task:    {name: ftc_relabel, dim: 4, k_per_n: 2.0, tol: 0.1}
adapter: {name: additive_relu, depth: 2, width: 8}
train:   {steps: 60, lr: 2.0e-2, eval_every: 10, early_stop: false}
axes:
  task.n: [8, 12]
seeds: 2
execution: {pack_size: 2}
"""


THREE_TRIALS = TWO_TRIALS.replace("task.n: [8, 12]", "task.n: [8, 12, 16]")      # 6 members, 3 trials


def sweep(tmp_path: Path) -> tuple[Path, list[str]]:
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_TRIALS)
    return spec, grid_run_ids(spec)


def firings(where: Path, position: int = 0) -> list[dict]:
    """The firing records of the `position`-th fault of FTCORE_FAULT, in order."""
    return [json.loads(p.read_text()) for p in sorted(where.glob(f"fault-{position}-*.json"))]


def failed_parts(out: Path) -> list[Path]:
    return [p for p in (out / "runs").glob("part-*.parquet") if "failed" in p.name]


# --------------------------------------------------------------------------- the switch
@pytest.mark.parametrize("text, why", [
    ("dei", "unknown mode 'dei'"), ("die_before_commit", "unknown mode"), ("DIE", "unknown mode"),
    ("die,foo=1", "unknown option 'foo=1'"), ("die,run", "unknown option 'run'"), ("die,", "unknown option ''"),
    ("die,run=ZZ", "not a lowercase hex"), ("die,run=", "not a lowercase hex"), ("die,run=ab,run=cd", "run given twice"),
    ("die,times=0,dir=/tmp", "times='0'"), ("die,times=²,dir=/tmp", "times="), ("die,times=1", "times= needs dir="),
    ("die,dir=relative", "not an absolute path"), ("die;", "unknown mode ''"), ("die;dei", "unknown mode 'dei'"),
])
def test_a_malformed_fault_is_refused_not_ignored(text, why):
    with pytest.raises(faults.FaultError, match=why) as e:
        faults.parse(text)
    assert str(e.value).startswith(f"FTCORE_FAULT={text!r}") and "die, die_after_commit" in str(e.value)


def test_grammar():
    assert faults.parse("die") == [faults.Fault("die")]
    assert faults.parse("die_after_commit,run=0a1f,times=2,dir=/x") == [faults.Fault("die_after_commit", "0a1f", 2, "/x")]
    assert faults.parse(" die , dir=/x ") == [faults.Fault("die", dir="/x")]
    assert faults.parse("die,run=ab;die_after_commit") == [faults.Fault("die", "ab"),
                                                           faults.Fault("die_after_commit", position=1)]


def test_off_unless_set(monkeypatch):
    """Unset or empty: no fault, and `inject` returns at once (it is called twice per trial)."""
    monkeypatch.delenv("FTCORE_FAULT", raising=False)
    assert faults.from_env() == [] and faults.check_env() == []
    faults.inject("start", [[{"config": None}]], "t")            # would fail if it looked at the payload
    monkeypatch.setenv("FTCORE_FAULT", "")
    assert faults.from_env() == []
    faults.inject("committed", [[{"config": None}]], "t")


def test_times_are_counted_across_processes(tmp_path):
    """`times=N` allows N firings however many processes race for them: each claims a file with O_EXCL."""
    fault = faults.Fault("die", times=2, dir=str(tmp_path))
    claims = [fault._claim({"trial_id": f"t{i}"}) for i in range(4)]
    assert claims == [True, True, False, False]
    assert [f["trial_id"] for f in firings(tmp_path)] == ["t0", "t1"]


def test_a_matching_trial_dies_by_sigkill_and_others_do_not(tmp_path):
    """`strike` kills its own process (SIGKILL: no cleanup, as the OOM killer would) only at its point and only
    for a trial holding a member whose run_id starts with `run=`. (The payload -> run_ids step, `pack_run_ids`,
    runs for real in the end-to-end tests below.)"""
    ids = ["0a1b2c3d4e5f6071", "1b2c3d4e5f607182"]
    code = """
import sys
from sweeps import faults
faults.pack_run_ids = lambda packs: sys.argv[2].split(",")
for f in faults.parse(sys.argv[1]):
    f.strike("committed", [], "t7")    # not its point
    f.strike("start", [], "t7")
print("survived", flush=True)
"""

    def strike(text):
        return subprocess.run([sys.executable, "-c", code, text, ",".join(ids)], capture_output=True, text=True,
                              timeout=120)
    dead = strike(f"die,run=1b2c,dir={tmp_path}")
    assert dead.returncode == -9 and "survived" not in dead.stdout, dead.stderr[-2000:]
    assert [(f["mode"], f["trial_id"], f["run_ids"]) for f in firings(tmp_path)] == [("die", "t7", ids)]
    alive = strike("die,run=2b2c")
    assert alive.returncode == 0 and "survived" in alive.stdout, alive.stderr[-2000:]
    late = strike("die_after_commit,run=0a")
    assert late.returncode == -9 and "survived" not in late.stdout, late.stderr[-2000:]


@pytest.mark.parametrize("cmd", ["run", "resume"])
def test_a_bad_fault_value_stops_the_cli_before_it_writes(tmp_path, monkeypatch, capsys, cmd):
    """`ftsweep run/resume` with a malformed FTCORE_FAULT: exit 2, one line, no directory made, and resume drops
    nothing (its failed parts are still there)."""
    from sweeps.cli import main
    from sweeps.spec import load_spec, spec_to_yaml
    spec, _ = sweep(tmp_path)
    out = tmp_path / "out"
    if cmd == "resume":
        (out / "runs").mkdir(parents=True)
        (out / "spec.yaml").write_text(spec_to_yaml(load_spec(spec)))
        (out / "runs" / "part-abc-failed.parquet").write_bytes(b"PAR1")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    monkeypatch.setenv("FTCORE_FAULT", "die_after_comit")
    assert main(["run", str(spec), "--out", str(out)] if cmd == "run" else ["resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ftsweep: error: FTCORE_FAULT='die_after_comit': unknown mode")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --------------------------------------------------------------------------- end to end
# One faulted sweep (a CLI run costs ~10 s of Ray start and shutdown), three trials, three faults, max_failures=1:
#   A (holds ids[0]) dies before training on both attempts: retries exhausted -> recorded `failed`;
#   B (ids[2]) dies once after committing: Tune's retry trains it again and replaces its own part, then reports;
#   C (ids[4]) dies after committing on both attempts: the `failed` rows the searcher then makes for its members
#     must not shadow (nor duplicate) the rows it committed.
# The two tests below may run in either order: the second resumes the sweep, which re-runs A only and leaves
# B's and C's parts untouched (asserted there), and those are what the first one reads.
@pytest.fixture(scope="module")
def faulted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faulted")
    spec = tmp / "three.yaml"
    spec.write_text(THREE_TRIALS)
    ids, out, fired = grid_run_ids(spec), tmp / "out", tmp / "fired"
    fired.mkdir()
    fault = (f"die,run={ids[0][:8]},dir={fired};die_after_commit,run={ids[2][:8]},times=1,dir={fired};"
             f"die_after_commit,run={ids[4][:8]},dir={fired}")
    text = finish(start_cli(["run", str(spec), "--out", str(out), "execution.max_failures=1"], tmp,
                            FTCORE_FAULT=fault))
    shots = [firings(fired, j) for j in range(3)]
    assert [len(f) for f in shots] == [2, 1, 2], (shots, text[-3000:])
    trials = [set(f[0]["run_ids"]) for f in shots]
    assert not (trials[0] & trials[1] or trials[1] & trials[2] or trials[0] & trials[2]), trials     # 3 trials
    return {"tmp": tmp, "ids": ids, "out": out, "fired": fired, "shots": shots, "text": text,
            "parts": {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("part-*.parquet")}}


@pytest.mark.slow
def test_death_after_commit_neither_duplicates_nor_loses_a_run(faulted):
    ids, out, (_, once, always) = faulted["ids"], faulted["out"], faulted["shots"]
    assert len({s["trial_id"] for s in always}) == 1            # both attempts of one trial
    runs = read_dataset(out / "runs").to_pandas()
    assert runs.run_id.is_unique and set(runs.run_id) == set(ids) and len(runs) == len(ids)
    for died in (once[0], always[0]):
        mine = runs[runs.run_id.isin(died["run_ids"])]
        assert len(mine) == len(died["run_ids"]) and set(mine.status) == {"ok"}
        assert set(mine.trial_id) == {died["trial_id"]}         # committed by the trial that died (its last attempt)
        parts = [p for p in (out / "runs").glob("part-*.parquet") if died["trial_id"] in p.name]
        assert len(parts) == 1 and "failed" not in parts[0].name
        assert faulted["parts"][parts[0].name] == parts[0].stat().st_mtime_ns
    curves = read_dataset(out / "curves").to_pandas()
    assert not curves.duplicated(["run_id", "step"]).any() and set(curves.run_id) == set(runs[runs.status == "ok"].run_id)


@pytest.mark.slow
def test_exhausted_retries_record_failed_members_then_resume_runs_them(faulted):
    ids, out, fired, (doomed_shots, _, _) = faulted["ids"], faulted["out"], faulted["fired"], faulted["shots"]
    assert "fault injection ON" in faulted["text"]
    # every attempt (max_failures=1: 2) of the one trial holding ids[0] died, in a Ray worker: the variable got there
    assert len({s["trial_id"] for s in doomed_shots}) == 1
    assert all(ids[0] in s["run_ids"] and s["process"].startswith("ray::") for s in doomed_shots), doomed_shots
    doomed = set(doomed_shots[0]["run_ids"])
    assert failed_parts(out)
    runs = read_dataset(out / "runs").to_pandas()
    assert set(runs.run_id) == set(ids) and runs.run_id.is_unique
    assert set(runs[runs.status == "failed"].run_id) == doomed and set(runs[runs.status != "failed"].status) == {"ok"}
    assert set(runs[runs.status == "failed"].trial_id) == {doomed_shots[0]["trial_id"]}
    kept = {n: t for n, t in faulted["parts"].items() if "failed" not in n}

    text = finish(start_cli(["resume", str(out)], faulted["tmp"]))
    assert "fault injection ON" not in text
    assert f"resumed: {len(ids) - len(doomed)} runs were already recorded, {len(doomed)} ran now" in text, text[-3000:]
    assert not failed_parts(out) and [len(firings(fired, j)) for j in range(3)] == [2, 1, 2]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("part-*.parquet") if p.name in kept} == kept
    runs = read_dataset(out / "runs").to_pandas()
    assert set(runs.run_id) == set(ids) and runs.run_id.is_unique and set(runs.status) == {"ok"}
    assert f"{len(ids)} runs: ok {len(ids)}, diverged 0, failed 0" in (out / "report" / "report.md").read_text()
