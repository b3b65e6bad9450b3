"""sweeps.tensorboard: events read back with TensorBoard's own readers, no mocks.

Two readers: the classic EventAccumulator (what the brief names), and the HParams plugin's
backend over the data provider the TensorBoard server uses, which proves the dashboard
gets one session per run, the hparam columns and the final metric values.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import (
    api_pb2,
    backend_context,
    get_experiment,
    list_session_groups,
    metadata,
    plugin_data_pb2,
)

from sweeps.tensorboard import (
    LiveRun,
    RunNames,
    SweepScalars,
    check_run_name,
    run_name,
    write_experiment_config,
    write_run_events,
)

HPARAMS = {"adapter.rank": 4, "train.lr": 3e-3, "task.name": "ftc_relabel", "fit.strict": True,
           "adapter.width": None, "search.range": [1, 1024]}


def _curves(run_id: str, steps: int = 4) -> list[dict]:
    rows = [{"run_id": run_id, "step": 10 * s, "train/loss": 1.0 / (s + 1), "fit/success": s >= 2,
             "val/loss": None if s % 2 else 2.0 / (s + 1), "note": "str is skipped"}
            for s in range(steps)]
    return rows[::-1]  # out of order on purpose: the writer sorts by step


def _write(root: Path, run_id: str = "r0", **hp) -> Path:
    finals = {"train/loss": 0.125, "fit/success": True, "fit/acc": 0.75, "bad": None}
    return write_run_events(root, run_id, _curves(run_id), {**HPARAMS, **hp}, finals)


def _acc(path: Path) -> EventAccumulator:
    acc = EventAccumulator(str(path))
    acc.Reload()
    return acc


def _scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


# ------------------------------------------------------------------ EventAccumulator
def test_scalars_round_trip(tmp_path):
    _write(tmp_path)
    acc = _acc(tmp_path / "r0")
    assert set(acc.Tags()["scalars"]) == {"train/loss", "fit/success", "val/loss", "fit/acc"}
    loss = _scalars(acc, "train/loss")
    assert [s for s, _ in loss] == [0, 10, 20, 30, 30]  # curve, then the final value
    assert [v for _, v in loss] == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.125], rel=1e-6)
    # final == last curve value: no second point at the last step
    assert _scalars(acc, "fit/success") == [(0, 0.0), (10, 0.0), (20, 1.0), (30, 1.0)]
    assert _scalars(acc, "val/loss") == [(0, 2.0), (20, pytest.approx(2 / 3))]  # None skipped
    assert _scalars(acc, "fit/acc") == [(30, 0.75)]  # final-only metric at the last step


def test_hparams_session_in_the_run_directory(tmp_path):
    write_run_events(tmp_path, "r0", _curves("r0"), HPARAMS, {"train/loss": 0.1},
                     status="diverged", group="cfg-a")
    content = _acc(tmp_path / "r0").PluginTagToContent(metadata.PLUGIN_NAME)
    assert set(content) == {metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG}
    start = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.SESSION_START_INFO_TAG])
    hp = start.session_start_info.hparams
    assert hp["adapter.rank"].number_value == 4 and hp["train.lr"].number_value == 3e-3
    assert hp["task.name"].string_value == "ftc_relabel"
    assert hp["fit.strict"].WhichOneof("kind") == "bool_value" and hp["fit.strict"].bool_value
    assert hp["search.range"].string_value == "[1, 1024]"
    assert "adapter.width" not in hp  # None is skipped, not written as a fake value
    assert start.session_start_info.group_name == "cfg-a"
    end = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.SESSION_END_INFO_TAG])
    assert end.session_end_info.status == api_pb2.STATUS_FAILURE


def test_experiment_config_at_root(tmp_path):
    write_experiment_config(tmp_path, {"adapter.rank": [4, 8, None], "train.lr": (1e-4, 1e-2),
                                       "fit.strict": [True, False], "mixed": [1, "a"], "free": []},
                            ["train/loss", "fit/acc"])
    content = _acc(tmp_path).PluginTagToContent(metadata.PLUGIN_NAME)
    exp = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.EXPERIMENT_TAG]).experiment
    infos = {h.name: h for h in exp.hparam_infos}
    assert [v.number_value for v in infos["adapter.rank"].domain_discrete.values] == [4, 8]
    assert infos["train.lr"].domain_interval.max_value == 1e-2
    assert infos["fit.strict"].type == api_pb2.DATA_TYPE_BOOL
    assert [v.string_value for v in infos["mixed"].domain_discrete.values] == ["1", "a"]
    assert infos["free"].type == api_pb2.DATA_TYPE_UNSET
    assert [m.name.tag for m in exp.metric_infos] == ["train/loss", "fit/acc"]


# ------------------------------------------------------------------ files on disk
def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_layout_no_stray_dirs_and_retry_replaces(tmp_path):
    write_experiment_config(tmp_path, {"adapter.rank": [4, 8]}, ["train/loss"])
    for run_id in ("r0", "r1"):
        _write(tmp_path, run_id)
    _write(tmp_path, "r0")  # a retried pack rewrites r0
    write_experiment_config(tmp_path, {"adapter.rank": [4, 8, 16]}, ["train/loss"])  # resume
    tree = _tree(tmp_path)
    dirs = [p for p in tree if (tmp_path / p).is_dir()]
    assert dirs == ["r0", "r1"]  # no timestamped add_hparams subdirectories
    assert all(Path(p).name.startswith("events.out.tfevents.") for p in tree if p not in dirs)
    assert [len(list((tmp_path / d).iterdir())) for d in ["r0", "r1"]] == [1, 1]
    assert len([p for p in tree if "/" not in p and p not in dirs]) == 1  # one experiment file
    assert len(_acc(tmp_path / "r0").Scalars("train/loss")) == 5  # not doubled by the retry


def test_no_handles_or_threads_left(tmp_path):
    _write(tmp_path, "warmup")
    fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
    _write(tmp_path)
    write_experiment_config(tmp_path, {"a": [1]}, ["train/loss"])
    assert len(os.listdir("/proc/self/fd")) == fds and threading.active_count() == threads


def test_refusals(tmp_path):
    for bad in ["", "../x", "a/b", ".hidden"]:
        with pytest.raises(ValueError, match="run_id"):
            write_run_events(tmp_path, bad, [], {}, {})
    with pytest.raises(TypeError, match="not supported"):
        write_run_events(tmp_path, "r0", [], {"x": object()}, {})
    assert list(tmp_path.iterdir()) == []


def test_no_ray_no_torch_imported():
    code = ("import sys, sweeps.sink, sweeps.tensorboard; "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "[]", out.stderr


# ------------------------------------------------------------------ HParams dashboard
def _dashboard(root: Path):
    """The HParams plugin backend over the server's data provider: (experiment, groups)."""
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(root))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(root))
    tb_context = base_plugin.TBContext(data_provider=provider, logdir=str(root))
    backend = backend_context.Context(tb_context)
    ctx = context.RequestContext()
    exp = get_experiment.Handler(ctx, backend, "", api_pb2.GetExperimentRequest()).run()
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=100, aggregation_type=api_pb2.AGGREGATION_AVG,
        allowed_statuses=[api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_UNKNOWN])
    groups = list_session_groups.Handler(ctx, backend, "", request).run().session_groups
    return exp, {g.name: g for g in groups}


@pytest.mark.parametrize("with_config", [False, True])
def test_dashboard_shows_each_run_as_a_session(tmp_path, with_config):
    """Per-run sessions alone give the columns; an experiment config only declares them."""
    _write(tmp_path, "r0", **{"adapter.rank": 4})
    _write(tmp_path, "r1", **{"adapter.rank": 8})
    if with_config:
        write_experiment_config(tmp_path, {k: [] for k in HPARAMS} | {"adapter.rank": [4, 8]},
                                ["train/loss", "fit/acc", "fit/success"])
    exp, groups = _dashboard(tmp_path)
    if with_config:  # the declared domain, not one inferred from the sessions
        rank = next(h for h in exp.hparam_infos if h.name == "adapter.rank")
        assert [v.number_value for v in rank.domain_discrete.values] == [4, 8]
    columns = {h.name for h in exp.hparam_infos}
    assert {"adapter.rank", "train.lr", "task.name", "fit.strict"} <= columns
    assert {"train/loss", "fit/acc", "fit/success"} <= {m.name.tag for m in exp.metric_infos}
    assert set(groups) == {"r0", "r1"}
    assert groups["r1"].hparams["adapter.rank"].number_value == 8
    metrics = {m.name.tag: (m.training_step, m.value) for m in groups["r0"].metric_values}
    assert metrics["train/loss"] == (30, 0.125)  # the final metric, not the curve's last point
    assert metrics["fit/acc"] == (30, 0.75) and metrics["fit/success"] == (30, 1.0)
    assert [s.status for s in groups["r0"].sessions] == [api_pb2.STATUS_SUCCESS]


# ------------------------------------------------------------------ URIs (sweeps.storage)
def test_events_via_file_uri(tmp_path):
    root = f"file://{tmp_path}/tb"
    first = _write(root, "r0")
    assert isinstance(first, str) and first.startswith(f"{root}/r0/events.out.tfevents.")
    again = _write(root, "r0")  # retry replaces the older file
    assert again != first and [p.name for p in (tmp_path / "tb" / "r0").iterdir()] == [
        again.rsplit("/", 1)[1]]
    write_experiment_config(root, {"adapter.rank": [4, 8]}, ["train/loss"])
    acc = _acc(tmp_path / "tb" / "r0")
    assert [s for s, _ in _scalars(acc, "train/loss")] == [0, 10, 20, 30, 30]
    assert _scalars(acc, "fit/acc") == [(30, 0.75)]
    content = _acc(tmp_path / "tb").PluginTagToContent(metadata.PLUGIN_NAME)
    assert set(content) == {metadata.EXPERIMENT_TAG}
    tree = _tree(tmp_path / "tb")  # one run dir, one file in it, one experiment file
    files = [p for p in tree if p != "r0"]
    assert len(tree) == 3 and "r0" in tree and (tmp_path / "tb" / "r0").is_dir()
    assert all(Path(p).name.startswith("events.out.tfevents.") for p in files)


def test_plain_path_return_type_unchanged(tmp_path):
    assert _write(tmp_path, "r0").parent == tmp_path / "r0"
    assert write_experiment_config(str(tmp_path), {}, []).parent == tmp_path


# ------------------------------------------------------------------ run names
def test_run_names_say_what_varies_and_stay_unique():
    name = run_name("adapter.depth=2,task.n=16", {"adapter.width": 8}, 0)
    assert name == "adapter.depth=2/task.n=16/adapter.width=8/seed=0"
    assert run_name("", {"train.lr": 0.0031622776}, 3) == "train.lr=0.003162/seed=3"
    # a value with a comma, a slash and spaces: one component, filesystem-safe
    odd = run_name("model.dims=[4, 8],task.name=a/b", {}, 1)
    assert odd == "model.dims=_4,_8_/task.name=a_b/seed=1"
    check_run_name(odd)
    names = RunNames()
    assert names.name("aaaaaaaaaaaaaaaa", name) == name
    assert names.name("aaaaaaaaaaaaaaaa", name) == name                      # the same run_id: the same name
    assert names.name("bbbbbbbbbbbbbbbb", name) == name + ",run_id=bbbbbbbb"  # same visible values: disambiguated
    for bad in ["", "a//b", "../x", "a/.hidden", "sweep/seed=0", "a b", "x/"]:
        with pytest.raises(ValueError, match="run name"):
            check_run_name(bad)


def test_whole_file_under_a_nested_name(tmp_path):
    path = write_run_events(tmp_path, "r0", _curves("r0"), HPARAMS, {}, name="task.n=4/seed=0")
    assert path.parent == tmp_path / "task.n=4" / "seed=0"
    assert [s for s, _ in _scalars(_acc(path.parent), "train/loss")] == [0, 10, 20, 30]


# ------------------------------------------------------------------ live runs
def _live_rows(steps: int, scale: float = 1.0) -> list[dict]:
    return [{"step": 10 * s, "train/loss": scale / (s + 1), "fit/success": s >= 2} for s in range(steps)]


def test_live_run_is_readable_while_training_and_a_retry_does_not_double(tmp_path):
    name = "task.n=4/seed=0"
    run = LiveRun(tmp_path, name, {**HPARAMS, "run_id": "r0"}, group="task.n=4")
    assert not (tmp_path / "task.n=4").exists()                 # nothing before the first evaluation
    rows = _live_rows(3)
    for i, row in enumerate(rows):
        run.add(row)
        acc = _acc(tmp_path / name)                             # a reader while the run is still open
        assert [s for s, _ in _scalars(acc, "train/loss")] == [10 * s for s in range(i + 1)]
    assert set(acc.PluginTagToContent(metadata.PLUGIN_NAME)) == {metadata.SESSION_START_INFO_TAG}
    path = run.close({"train/loss": 0.2, "fit/acc": 0.5}, "pruned")
    acc = _acc(tmp_path / name)
    assert _scalars(acc, "fit/acc") == [(20, 0.5)] and _scalars(acc, "train/loss")[-1] == (20, pytest.approx(0.2))
    end = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_END_INFO_TAG])
    assert end.session_end_info.status == api_pb2.STATUS_UNKNOWN         # pruned: stopped by the search, not failed
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG])
    assert start.session_start_info.hparams["run_id"].string_value == "r0"
    # a retry: a new file replaces the old one at its first evaluation, the points are not doubled
    retry = LiveRun(tmp_path, name, {**HPARAMS, "run_id": "r0"})
    retry.add(_live_rows(1, scale=7.0)[0])
    assert path.exists() is False and len(list((tmp_path / name).iterdir())) == 1
    assert _scalars(_acc(tmp_path / name), "train/loss") == [(0, 7.0)]
    retry.abort()


def test_a_torn_tail_hides_only_the_torn_record(tmp_path):
    """A worker killed mid-write leaves part of a record: every complete record still reads back."""
    run = LiveRun(tmp_path, "r0", HPARAMS)
    for row in _live_rows(3):
        run.add(row)
    path = run.file.path
    run.abort()
    data = path.read_bytes()
    run2 = LiveRun(tmp_path / "other", "r0", HPARAMS)
    run2.add(_live_rows(1)[0])
    record = run2.file.path.read_bytes()
    run2.abort()
    path.write_bytes(data + record[: len(record) // 2])        # half of one more record, as a kill leaves it
    assert [s for s, _ in _scalars(_acc(tmp_path / "r0"), "train/loss")] == [0, 10, 20]


def test_live_run_at_a_uri_is_one_upload_at_close(tmp_path):
    root = f"file://{tmp_path}/tb"
    run = LiveRun(root, "a=1/seed=0", HPARAMS)
    for row in _live_rows(3):
        run.add(row)
    assert not (tmp_path / "tb").exists()                      # an object store: nothing until the pack ends
    path = run.close({"train/loss": 0.1}, "ok")
    assert isinstance(path, str) and path.startswith(f"{root}/a=1/seed=0/events.out.tfevents.")
    assert [s for s, _ in _scalars(_acc(tmp_path / "tb" / "a=1" / "seed=0"), "train/loss")] == [0, 10, 20, 20]


@pytest.mark.parametrize("uri", [False, True])
def test_sweep_scalars(tmp_path, uri):
    root = f"file://{tmp_path}" if uri else tmp_path
    board = SweepScalars(root)
    board.add(2, {"sweep/runs_done": 2, "search/exponent": 0.5})
    acc = _acc(tmp_path / "sweep")
    assert _scalars(acc, "sweep/runs_done") == [(2, 2.0)]
    board.add(4, {"sweep/runs_done": 4, "ignored": "text"})
    assert _scalars(_acc(tmp_path / "sweep"), "sweep/runs_done") == [(2, 2.0), (4, 4.0)]
    board.close()
    assert len(list((tmp_path / "sweep").iterdir())) == 1
    again = SweepScalars(root)                                 # a resumed driver starts the curves anew
    again.add(1, {"sweep/runs_done": 1})
    again.close()
    assert _scalars(_acc(tmp_path / "sweep"), "sweep/runs_done") == [(1, 1.0)]


def test_experiment_config_display_names_and_string_column(tmp_path):
    write_experiment_config(tmp_path, {"run_id": str, "seed": [0, 1]}, {"fit/success": "fit success"})
    content = _acc(tmp_path).PluginTagToContent(metadata.PLUGIN_NAME)
    exp = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.EXPERIMENT_TAG]).experiment
    infos = {h.name: h for h in exp.hparam_infos}
    assert infos["run_id"].type == api_pb2.DATA_TYPE_STRING and not infos["run_id"].HasField("domain_discrete")
    assert [(m.name.tag, m.display_name) for m in exp.metric_infos] == [("fit/success", "fit success")]


# ------------------------------------------------------------------ driver + workers, no Ray runtime
def test_a_searcher_and_its_trials_write_the_whole_board(tmp_path):
    """PackSearcher (the driver) names the runs and writes the experiment config and sweep scalars; the trials'
    execute_trial (the workers) write each member live under its name. Driven by hand, as Tune would."""
    import json

    from ray.tune.search import Searcher

    from sweeps.execute import execute_trial
    from sweeps.runner import PackSearcher
    from sweeps.search.kinds import SEARCHES
    from sweeps.spec import SweepSpec, validate

    spec = SweepSpec(name="s", model={"name": "mlp", "width": 4, "depth": 1},
                     adapter={"name": "additive_relu", "depth": 2},
                     task={"name": "ftc_relabel", "dim": 3, "k_per_n": 1.0, "tol": 0.05},
                     train={"steps": 200, "lr": 3e-2, "eval_every": 20}, axes={"task.n": [2, 4]}, seeds=2,
                     search=SEARCHES["capacity"].Config(param="adapter.width", ladder=[1, 2, 4, 8]))
    validate(spec)
    searcher, rows, n = PackSearcher(spec, tmp_path, n_slots=2, progress=lambda line: None), [], 0
    while (cfg := searcher.suggest(f"t{n}")) != Searcher.FINISHED:
        assert cfg is not None
        trial = execute_trial(cfg["packs"], cfg["out"], f"t{n}", cfg["sweep_meta"])
        searcher.on_trial_complete(f"t{n}", {"rows": json.dumps(trial)})
        rows += trial
        n += 1
    searcher.board.close()
    tb = tmp_path / "tb"
    for r in rows:
        name = f"task.n={r['task.n']}/adapter.width={r['adapter.width']}/seed={r['seed']}"
        content = _acc(tb / name).PluginTagToContent(metadata.PLUGIN_NAME)
        start = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.SESSION_START_INFO_TAG])
        assert start.session_start_info.hparams["run_id"].string_value == r["run_id"]
        assert metadata.SESSION_END_INFO_TAG in content
    board = _acc(tb / "sweep")
    assert board.Scalars("sweep/runs_done")[-1].value == len(rows)
    thresholds = searcher.search.counts()["thresholds"]
    found = {t.split("/", 1)[1]: board.Scalars(t)[-1].value for t in board.Tags()["scalars"] if t.startswith("threshold/")}
    assert found == {g: v for g, v in thresholds.items() if v is not None} and found
    exp, _ = _dashboard(tb)
    assert {h.name for h in exp.hparam_infos} == {"task.n", "adapter.width", "seed", "run_id"}
