"""Live TensorBoard on a real local Ray, through the real CLI, read with TensorBoard's own loader.

One small capacity sweep (3 groups x 2 seeds, ladder 2, 4, 16; one trial per round) runs as `ftsweep run` in a
subprocess while this test polls DIR/tb: a member's scalars must be readable while its pack is still training (no session end yet,
its run not yet committed to Parquet). One trial dies once after committing (FTCORE_FAULT die_after_commit),
so its members are trained and written twice: their points must not be doubled. Afterwards: runs named by
what varies (`task.n=.../adapter.depth=.../adapter.width=.../seed=...`), one HParams experiment config, the
sweep-level scalars (runs done, thresholds, the fitted exponent) and no file of Tune's own loggers.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from e2e import read_dataset, start_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata, plugin_data_pb2

from analysis.powerlaw import fit_powerlaw

SPEC = """
name: tb_live
model:   {name: mlp, width: 8, depth: 2}
task:    {name: ftc_relabel, dim: 4, k_per_n: 2.0, tol: 0.1}
adapter: {name: additive_relu, depth: 2}
train:   {steps: 800, lr: 2.0e-2, eval_every: 5}
axes:
  task.n: [3, 6, 12]
  adapter.depth: [2]
seeds: 2
search: {kind: capacity, param: adapter.width, ladder: [2, 4, 16], quorum: 0.5}
report: {kind: capacity, x: task.n}
execution: {pack_size: 6}             # one trial per round
"""
TUNE_LOGGER_FILES = ("progress.csv", "result.json", "params.json", "params.pkl")


def _acc(path: Path) -> EventAccumulator:
    acc = EventAccumulator(str(path))
    acc.Reload()
    return acc


def _member_dirs(tb: Path) -> list[Path]:
    return sorted({p.parent for p in tb.rglob("events.out.tfevents.*")} - {tb, tb / "sweep"})


def _committed_run_ids(out: Path) -> set[str]:
    parts = [p for p in (out / "runs").glob("*.parquet") if not p.name.startswith(".")] if (out / "runs").is_dir() else []
    return set(read_dataset(out / "runs").column("run_id").to_pylist()) if parts else set()


def _watch_live(tb: Path, out: Path, proc) -> dict | None:
    """Poll DIR/tb until a member run shows >= 2 evaluations and no session end while its run is uncommitted."""
    while proc.poll() is None:
        for d in _member_dirs(tb):
            try:
                acc = _acc(d)
                plugin = acc.PluginTagToContent(metadata.PLUGIN_NAME)
                steps = [e.step for e in acc.Scalars("fit/max_err")]
            except (KeyError, OSError):
                continue
            if len(steps) >= 2 and metadata.SESSION_END_INFO_TAG not in plugin:
                start = plugin_data_pb2.HParamsPluginData.FromString(plugin[metadata.SESSION_START_INFO_TAG])
                run_id = start.session_start_info.hparams["run_id"].string_value
                if run_id not in _committed_run_ids(out):
                    return {"dir": d, "steps": steps, "run_id": run_id}
        time.sleep(0.05)
    return None


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tb_live")
    (tmp / "spec.yaml").write_text(SPEC)
    (tmp / "faults").mkdir()
    out = tmp / "out"
    proc = start_cli(["run", str(tmp / "spec.yaml"), "--out", str(out)], cwd=tmp,
                     FTCORE_FAULT=f"die_after_commit,times=1,dir={tmp / 'faults'}")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        live = _watch_live(out / "tb", out, proc)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    assert proc.returncode == 0, "".join(lines[-40:])
    return {"out": out, "live": live, "faults": sorted((tmp / "faults").iterdir()), "log": "".join(lines)}


def test_scalars_are_readable_while_the_trial_runs(sweep):
    live = sweep["live"]
    assert live is not None, "no member run was seen mid-training:\n" + sweep["log"][-3000:]
    assert live["steps"] == sorted(live["steps"]) and live["steps"][:2] == [0, 5]
    # the same run after the sweep: those points were a prefix of its whole curve, now ended with a session end
    acc = _acc(live["dir"])
    assert [e.step for e in acc.Scalars("fit/max_err")][:len(live["steps"])] == live["steps"]
    assert metadata.SESSION_END_INFO_TAG in acc.PluginTagToContent(metadata.PLUGIN_NAME)


def test_runs_named_by_what_varies_and_not_doubled_by_a_retry(sweep):
    out = sweep["out"]
    assert len(sweep["faults"]) == 1                                      # one trial died after committing
    runs = read_dataset(out / "runs").to_pandas()
    curves = read_dataset(out / "curves").to_pandas()
    assert runs.run_id.is_unique and set(runs.status) == {"ok"}
    names = {f"task.n={r['task.n']}/adapter.depth=2/adapter.width={r['adapter.width']}/seed={r['seed']}": r.run_id
             for _, r in runs.iterrows()}
    tb = out / "tb"
    assert {str(d.relative_to(tb)) for d in _member_dirs(tb)} == set(names)
    for name, run_id in names.items():
        files = list((tb / name).iterdir())
        assert len(files) == 1 and files[0].name.startswith("events.out.tfevents."), files
        acc = _acc(tb / name)
        steps = [e.step for e in acc.Scalars("fit/max_err")]
        assert steps == sorted(curves[curves.run_id == run_id].step.tolist()), name   # each point once
        start = plugin_data_pb2.HParamsPluginData.FromString(
            acc.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG])
        assert start.session_start_info.hparams["run_id"].string_value == run_id
        assert start.session_start_info.group_name == name.rsplit("/", 1)[0]        # seeds grouped


def test_one_experiment_config(sweep):
    tb = sweep["out"] / "tb"
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1
    content = _acc(tb).PluginTagToContent(metadata.PLUGIN_NAME)
    exp = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.EXPERIMENT_TAG]).experiment
    infos = {h.name: h for h in exp.hparam_infos}
    assert set(infos) == {"task.n", "adapter.depth", "adapter.width", "seed", "run_id"}
    assert [v.number_value for v in infos["task.n"].domain_discrete.values] == [3, 6, 12]
    assert [v.number_value for v in infos["adapter.width"].domain_discrete.values] == [2, 4, 16]
    metrics = {m.name.tag: m.display_name for m in exp.metric_infos}
    assert metrics["fit/success"] == "fit success" and "fit/max_err" in metrics       # the latter from the rows


def test_sweep_level_scalars(sweep):
    runs = read_dataset(sweep["out"] / "runs").to_pandas()
    acc = _acc(sweep["out"] / "tb" / "sweep")
    done = acc.Scalars("sweep/runs_done")
    assert done[-1].value == len(runs) and [e.value for e in done] == sorted(e.value for e in done)
    # a threshold per group: the smallest width at which half the seeds succeeded (success is monotone here)
    ok = runs.assign(s=runs["fit/success"].astype(float)).groupby(["group", "adapter.width"]).s.mean() >= 0.5
    expected = {g: min(w for (g2, w), v in ok.items() if g2 == g and v) for g in runs.group.unique()
                if ok.loc[g].any()}
    tags = acc.Tags()["scalars"]
    found = {t.split("/", 1)[1]: acc.Scalars(t)[-1].value for t in tags if t.startswith("threshold/")}
    assert found == expected
    assert acc.Scalars("search/thresholds_found")[-1].value == len(expected)
    if len(expected) >= 3:
        n = {g: float(g.split("task.n=")[1].split(",")[0]) for g in expected}
        fit = fit_powerlaw([n[g] for g in expected], [expected[g] for g in expected])
        assert acc.Scalars("search/exponent/adapter.depth=2")[-1].value == pytest.approx(fit.exponent, rel=1e-5)
    else:
        assert not any(t.startswith("search/exponent") for t in tags)


def test_no_tune_logger_files(sweep):
    ray_dir = sweep["out"] / "ray"
    assert ray_dir.is_dir()
    stray = [p for p in ray_dir.rglob("*") if p.name in TUNE_LOGGER_FILES or "tfevents" in p.name]
    assert stray == []
