"""End to end on a real local Ray, through the real CLI: capacity search and Optuna + construction sweeps,
Parquet read back, TensorBoard events read back with TensorBoard's own reader, the Optuna journal reopened,
and the report written. Each sweep costs a Ray start plus ~20 s per round on 2 CPUs: kept to few rounds."""
import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from e2e import ftsweep, read_dataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent

TINY_FTC = """
name: tiny_ftc
model:   {name: mlp, width: 8, depth: 2}
task:    {name: ftc_relabel, dim: 4, k_per_n: 2.0, tol: 0.1}
adapter: {name: additive_relu, depth: 2}
train:   {steps: 400, lr: 2.0e-2, eval_every: 20}
axes:
  task.n: [3, 12]
  adapter.depth: [2, 3]
seeds: 2
search: {kind: capacity, param: adapter.width, ladder: [2, 4, 8, 16], quorum: 0.5}
report: {kind: capacity, x: task.n, curve_by: [adapter.depth], theory: {"adapter.depth=2": 1.0, "adapter.depth=3": 0.5}}
"""


def test_capacity_sweep_end_to_end(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_FTC)
    out = tmp_path / "out"
    r = ftsweep("run", str(spec), "--out", str(out), cwd=tmp_path)
    assert "round 1:" in r.stdout and "capacity search:" in r.stdout       # progress was shown
    assert r.stdout.strip().splitlines()[-1].endswith("report.md")

    runs = read_dataset(out / "runs").to_pandas()
    assert runs.run_id.is_unique and set(runs.status) == {"ok"}
    assert {"adapter.width", "task.n", "task.k", "fit/success", "fit/max_err", "n_trainable", "kernels_impl",
            "schema_version", "trial_id", "group", "round"} <= set(runs.columns)
    assert (runs["task.k"] == 2 * runs["task.n"]).all()
    # every probe ran all seeds; rounds were packs: fewer trials than probes
    per_probe = runs.groupby(["group", "adapter.width"]).size()
    assert (per_probe == 2).all()
    assert runs.trial_id.nunique() < len(per_probe)

    curves = read_dataset(out / "curves").to_pandas()
    assert set(curves.run_id) == set(runs.run_id) and "fit/max_err" in curves

    row = runs.iloc[0]
    run_id = row.run_id                    # TensorBoard names a run by what varies (the run_id is an hparam)
    name = (f"task.n={row['task.n']}/adapter.depth={row['adapter.depth']}/adapter.width={row['adapter.width']}"
            f"/seed={row['seed']}")
    acc = EventAccumulator(str(out / "tb" / name))
    acc.Reload()
    assert "fit/max_err" in acc.Tags()["scalars"]
    steps = [e.step for e in acc.Scalars("fit/max_err")]
    assert steps == sorted(curves[curves.run_id == run_id].step.tolist())
    assert "hparams" in acc.PluginTagToContent("hparams") or acc.PluginTagToContent("hparams")

    fits = json.loads((out / "report" / "fits.json").read_text())
    assert {f["group"] for f in fits} == {"adapter.depth=2", "adapter.depth=3"}
    assert {f["range"] for f in fits} == {"all", "upper"}                   # the power law is checked over both
    for f in fits:
        assert f["x"] == "task.n" and f["y"] == "adapter.width"
        assert f["n_points"] == (2 if f["range"] == "all" else 1)             # the upper half of 2 N values: 1
    assert (out / "report" / "report.md").read_text().count("adapter.depth") >= 2


LORA_TINY = ["model.width=4", "model.depth=2", "task.target_depth=1", "seeds=2", "train.steps=150",
             "task.n_test=500", "task.n_val=200", "search.n_trials=2", "search.batch=2", "task.pretrained=[false]"]


def test_lora_optuna_and_construction_end_to_end(tmp_path):
    out = tmp_path / "lora"
    ftsweep("run", str(ROOT / "sweeps" / "lora_rank.yaml"), *LORA_TINY, "--out", str(out), cwd=tmp_path)
    runs = read_dataset(out / "runs").to_pandas()
    c = runs[runs["train.method"] == "construction"]
    assert sorted(c["adapter.rank"].unique()) == [1, 2, 3, 4]
    # threshold ceil(4 * 1 / 2) = 2: exact at ranks >= 2, clearly not below
    med = c.groupby("adapter.rank")["test/mse_rel"].median()
    assert (med.loc[[2, 3, 4]] < 1e-6).all() and med.loc[1] > 1e-3, med
    a = runs[runs["train.method"] == "adam"]
    assert len(a) == 4 * 2 * 2 and a["optuna.trial"].notna().all()       # 4 ranks x 2 proposals x 2 seeds
    assert a["train.lr"].nunique() > 1                                      # Optuna proposed the lr
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "optuna" / "journal.log")))
    studies = optuna.get_all_study_summaries(storage)
    assert len(studies) == 4 and all(s.n_trials == 2 for s in studies)
    best = [optuna.load_study(study_name=s.study_name, storage=storage).best_value for s in studies]
    assert all(math.isfinite(b) for b in best)
    assert (out / "report" / "report.md").exists()


def test_train_worker_runs_packs_in_ray_train(tmp_path):
    """`execution.worker: train`: one round of a grid, each trial in a Ray Train TorchTrainer worker; the rows
    and the Train run directories are there, and the metrics equal the default (reused Tune actor) worker's."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_FTC)
    common = ["search.kind=grid", "report.kind=", "task.n=[3]", "adapter.width=4", "train.steps=60"]
    ftsweep("run", str(spec), "--out", str(tmp_path / "train"), "execution.worker=train", *common, cwd=tmp_path)
    ftsweep("run", str(spec), "--out", str(tmp_path / "tune"), *common, cwd=tmp_path)
    train, tune = (read_dataset(tmp_path / d / "runs").to_pylist() for d in ("train", "tune"))
    assert list((tmp_path / "train" / "ray").glob("train-*")), "no Ray Train run directory"
    assert not list((tmp_path / "tune" / "ray").glob("train-*"))
    by_id = {r["run_id"]: r for r in tune}
    assert len(train) == len(tune) == 4 and by_id.keys() == {r["run_id"] for r in train}
    for r in train:
        assert r["status"] == "ok" and math.isclose(r["fit/max_err"], by_id[r["run_id"]]["fit/max_err"], rel_tol=1e-6)


TINY_ARCHS = """
name: tiny_archs
model:   {n_embd: 8, n_head: 2, n_positions: 10}
task:    {name: icl_regression, dim: 2, n_points: 5, batch_size: 8, n_eval: 16}
adapter: {name: full}
train:   {steps: 60, lr: 1.0e-3, early_stop: false, eval_every: 20}
axes:
  model:
    - {name: looped_transformer, n_layer: 1, n_loops: 3, loss_last: 2, loop_interval: 10}
    - {name: transformer, n_layer: 2}
seeds: 2
report: {kind: icl_curve, curve_by: [model.name]}
variants:
  longer: {train.steps: 80}
"""


def test_architectures_in_one_sweep_with_in_trial_progress(tmp_path):
    """A section-valued axis (looped vs standard transformer) through Ray, a named variant, the looped
    training hook in the workers, and progress lines from inside trials (FTCORE_PROGRESS_S=0)."""
    import os
    spec = tmp_path / "archs.yaml"
    spec.write_text(TINY_ARCHS)
    out = tmp_path / "out"
    env = {**os.environ, "FTCORE_PROGRESS_S": "0"}
    r = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(spec), "variant=longer", "--out", str(out)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "at step 20/80" in r.stdout and "members training" in r.stdout
    runs = read_dataset(out / "runs").to_pandas()
    assert sorted(runs["model.name"]) == ["looped_transformer"] * 2 + ["transformer"] * 2
    assert set(runs["train.steps"]) == {80} and set(runs.status) == {"ok"}
    looped = runs[runs["model.name"] == "looped_transformer"]
    assert set(looped["model.loss_last"]) == {2} and looped["model.n_head"].notna().all()
    assert "nse/model/k04" in runs.columns
    assert "model.name=looped_transformer" in (out / "report" / "report.md").read_text()


def test_output_at_a_uri_then_resume_from_it(tmp_path):
    """--out as a pyarrow-filesystem URI (file:// here; s3:// takes the same code path): spec, parts, TensorBoard
    events and Tune's files land there; resuming the finished sweep from the URI runs nothing again."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_FTC.replace("ladder: [2, 4, 8, 16]", "ladder: [2, 4]"))
    target = tmp_path / "bucket" / "sweep"
    uri = f"file://{target}"
    r = ftsweep("run", str(spec), "--out", uri, cwd=tmp_path)
    assert f"results in {uri}" in r.stdout and not (target / "report").exists()
    runs = read_dataset(target / "runs").to_pandas()
    assert runs.run_id.is_unique and set(runs.status) == {"ok"} and (target / "spec.yaml").is_file()
    assert {p.name for p in (target / "tb").iterdir() if p.is_dir()} == {f"task.n={n}" for n in runs["task.n"]} | {"sweep"}
    assert len(list((target / "tb").rglob("events.out.tfevents.*"))) == len(runs) + 2 and (target / "ray").is_dir()

    r = ftsweep("resume", uri, cwd=tmp_path)
    assert f"resumed: {len(runs)} runs were already recorded, 0 ran now" in r.stdout
    assert read_dataset(target / "runs").num_rows == len(runs)
