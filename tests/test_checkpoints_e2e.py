"""Pretrain -> fine-tune as two sweeps on a real local Ray, through the real CLI (issue 13 part 1): `ftsweep run` of
a tiny sweep with `train.save: final`, then a second `ftsweep run` whose `model.from` picks the best run of the
first and fine-tunes it (output at a file:// URI). One trial each: the cost is two Ray starts."""

import pytest
from e2e import ftsweep, read_dataset

pytestmark = pytest.mark.slow

PRETRAIN = """
name: pre
model:   {name: mlp, width: 8, depth: 2}
task:    {name: lora_teacher, batch_size: 16, n_val: 32, n_test: 32}
adapter: {name: full}
train:   {steps: 40, lr: 1.0e-2, eval_every: 20, early_stop: false, save: final}
seeds: 2
"""

FINETUNE = """
name: ft
model:   {from: {dir: DIR, best: test/mse, mode: min}, width: 8}
task:    {name: lora_teacher, batch_size: 16, n_val: 32, n_test: 32}
adapter: {name: lora, rank: 2}
train:   {steps: 20, lr: 1.0e-2, eval_every: 10, early_stop: false}
seeds: 2
"""


def rows(d):
    return read_dataset(d / "runs").to_pylist()


def test_pretrain_then_finetune_the_best_run(tmp_path):
    (tmp_path / "pre.yaml").write_text(PRETRAIN)
    pre = tmp_path / "pre"
    ftsweep("run", str(tmp_path / "pre.yaml"), "--out", str(pre), cwd=tmp_path)
    first = rows(pre)
    assert len(first) == 2 and {r["status"] for r in first} == {"ok"}
    for r in first:
        assert r["checkpoint"] == f"checkpoints/{r['run_id']}.safetensors" and (pre / r["checkpoint"]).is_file()
    best = min(first, key=lambda r: r["test/mse"])

    (tmp_path / "ft.yaml").write_text(FINETUNE.replace("DIR", str(pre)))
    r = ftsweep("validate", str(tmp_path / "ft.yaml"), cwd=tmp_path)
    assert "OK" in r.stdout
    target = tmp_path / "bucket" / "ft"
    ftsweep("run", str(tmp_path / "ft.yaml"), "--out", f"file://{target}", cwd=tmp_path)
    second = rows(target)
    assert len(second) == 2 and {r["status"] for r in second} == {"ok"}
    for r in second:
        assert r["model.from.run_id"] == best["run_id"] and r["model.from.dir"] == str(pre)
        assert r["checkpoint"] is None and r["model.width"] == 8
    # the same seed sees the same held-out set and teacher: the fine-tune's unadapted error is the pretrained
    # member's final error, so its base is that trained model
    same_seed = [r for r in second if r["seed"] == best["seed"]][0]
    assert same_seed["test/mse_base"] == pytest.approx(best["test/mse"], rel=1e-5)
    # the saved, resolved spec names the run (a resume re-resolves the same one)
    saved = (target / "spec.yaml").read_text()
    assert best["run_id"] in saved
    ftsweep("validate", str(target / "spec.yaml"), cwd=tmp_path)
