"""Contract: a training step of `fit()` (ftcore/fit.py) never waits for the host (issue 17, item 4).

On a GPU every `.item()`, `bool(t)`, `.tolist()`, `float(t)` ... of a device tensor blocks the host until the
device has caught up, so a step that reads one cannot be queued ahead of the device (nor captured in a CUDA graph).
`fit` keeps divergence on the device (`active &= finite`, the step in `diverged_at`) and reads it at evaluations,
which copy their metrics to the host anyway. CPU tensors never sync, so `torch.cuda.set_sync_debug_mode` cannot
check this here; instead every Python-level tensor -> host conversion is counted while a real `fit` runs, split
into the evaluation phase (from `task.evaluate` to the next batch) and the training phase (from `task.batch` to
the next evaluation; `train.batch_selection`'s batcher likewise): the training phase must make none.
The one CPU-only piece of a step, `ftkernels.multi_adamw.multi_adamw_cpu` (torch's fused CPU AdamW per group of
active members: it reads `active` on the host, which on a CPU waits for nothing), is switched off here, so the step
runs the ops a GPU step runs (the reference update: `multi_adamw_ref`, what FTCORE_KERNELS=torch takes on CUDA).
"""
import contextlib
import importlib
import math

import pytest
import torch

import ftcore
import ftkernels.multi_adamw as multi_adamw

fit_module = importlib.import_module("ftcore.fit")      # (ftcore.fit is the function)

# Tensor -> host conversions (each a device sync on CUDA).
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu")


@contextlib.contextmanager
def counting_host_reads(monkeypatch):
    """Counts HOST_READS per phase ("setup" before the first evaluation, "eval", "train") during `fit`."""
    counts = {"setup": [], "eval": [], "train": []}
    phase = ["setup"]
    train_steps = []

    def counted(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            counts[phase[0]].append(name)
            return original(self, *args, **kwargs)
        return wrapper

    def enter_training(step):
        phase[0] = "train"
        if not train_steps or train_steps[-1] != step:
            train_steps.append(step)

    real_build, real_batcher = fit_module.build_pack, fit_module.make_batcher

    def build_pack(*args, **kwargs):                 # the pack's task, its phases marked (compaction rebuilds it)
        task, model = real_build(*args, **kwargs)
        batch, evaluate = task.batch, task.evaluate

        def marked_batch(step):
            enter_training(step)
            return batch(step)

        def marked_evaluate(model):
            phase[0] = "eval"
            return evaluate(model)
        task.batch, task.evaluate = marked_batch, marked_evaluate
        return task, model

    def make_batcher(task, members):                 # train.batch_selection's batcher replaces task.batch
        batcher = real_batcher(task, members)
        if batcher is None:
            return None

        def marked_batcher(model, step):
            enter_training(step)
            return batcher(model, step)
        return marked_batcher

    monkeypatch.setattr(fit_module, "build_pack", build_pack)
    monkeypatch.setattr(fit_module, "make_batcher", make_batcher)
    monkeypatch.setattr(multi_adamw, "cpu_fused_fits", lambda *tensors: False)   # the GPU's ops (module docstring)
    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    yield counts, train_steps


def ftc(width, seed, lr=1e-2, **train):
    return ftcore.member_from_dict({
        "model": {"name": "mlp", "width": 8, "depth": 2},
        "adapter": {"name": "additive_relu", "width": width, "depth": 2},
        "task": {"name": "ftc_relabel", "dim": 4, "n": 6, "tol": 0.1},
        "train": {"steps": 100, "lr": lr, "early_stop": False, "eval_every": 50, **train},
        "seed": seed})


def teacher(rank, seed, lr=1e-2, **train):
    return ftcore.member_from_dict({
        "model": {"name": "mlp", "width": 8, "depth": 2, "last_activation": True},
        "adapter": {"name": "lora", "rank": rank, "tune_bias": True},
        "task": {"name": "lora_teacher", "target_depth": 1, "batch_size": 32, "n_val": 64, "n_test": 64},
        "train": {"steps": 100, "lr": lr, "eval_every": 50, **train},
        "seed": seed})


def test_the_counter_sees_every_host_read(monkeypatch):
    """The patched conversions are counted (so the zero below means none ran, not that none was seen)."""
    with counting_host_reads(monkeypatch) as (counts, _):
        t = torch.tensor([1.5])
        bool(t), float(t), int(t), t.item(), t.tolist(), t.numpy(), t.cpu()
    assert sorted(counts["setup"]) == sorted(["__bool__", "__float__", "__int__", "item", "tolist", "numpy", "cpu"])


@pytest.mark.parametrize("pack", [
    pytest.param([ftc(4, 0), ftc(8, 1, lr=1e10), ftc(2, 2)], id="ftc-adamw-noclip-diverging"),
    pytest.param([teacher(2, 0, grad_clip=0.5), teacher(1, 1, grad_clip=0.5, lr=1e10)], id="teacher-adamw-clip"),
    pytest.param([teacher(2, 0, method="sgd", lr=0.1), teacher(1, 1, method="sgd", lr=1e10)], id="teacher-sgd"),
])
def test_no_host_read_between_evaluations(monkeypatch, pack):
    """100 steps, evaluations at 0, 50, 100, one member diverging at once: no host read in any training step."""
    with counting_host_reads(monkeypatch) as (counts, train_steps):
        results = ftcore.fit(pack)
    assert train_steps == list(range(100))                       # every step ran its training phase
    assert counts["train"] == [], f"host reads inside training steps: {sorted(set(counts['train']))}"
    assert counts["eval"], "evaluations read their metrics on the host"
    assert results[1].status == "diverged" and 0 < results[1].steps < 50
    assert math.isnan(results[1].metrics["train/loss"])
    assert results[0].status == "ok" and results[0].steps == 100
