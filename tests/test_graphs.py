"""`cuda_graphs` (ftcore/graphs.py): the choice is checked; on CPU `auto` trains exactly as `off` (nothing to
capture); AdamW's device step count (what a captured step increments) gives the same updates as host counting; and,
on a GPU (benchmarks/gpu_check.py runs this file there), `auto` captures a static-batch pack's step and trains it as
`off` does."""
import importlib

import pytest
import torch

import ftcore
from ftcore.graphs import GraphedStep, graphable
from ftcore.optim import PackedAdamW
from ftcore.pack import build_pack


def ftc(width, seed, **train):
    return ftcore.member_from_dict({
        "model": {"name": "mlp", "width": 8, "depth": 2},
        "adapter": {"name": "additive_relu", "width": width, "depth": 2},
        "task": {"name": "ftc_relabel", "dim": 4, "n": 6, "tol": 0.1},
        "train": {"steps": 60, "lr": 1e-2, "eval_every": 20, **train},
        "seed": seed})


def test_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="cuda_graphs"):
        ftcore.fit([ftc(4, 0)], cuda_graphs="always")


def test_auto_on_cpu_is_off():
    pack = [ftc(4, 0), ftc(7, 1)]
    task, model = build_pack(pack, torch.float32)
    opt = importlib.import_module("ftcore.fit").make_optimizer(model, pack)
    assert not graphable(task, model, None, None, "cpu", opt)
    a, b = ftcore.fit(pack, cuda_graphs="auto"), ftcore.fit(pack, cuda_graphs="off")
    assert [(r.status, r.steps, r.metrics) for r in a] == [(r.status, r.steps, r.metrics) for r in b]


def test_device_step_count_matches_host_counting():
    """PackedAdamW with the count on the device (use_device_step: a 0-dim tensor incremented by each step, and a
    tensor lr factor) updates exactly as with host counting; sync_step brings the count back."""
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(3, 5, 4, generator=gen), torch.randn(3, 4, generator=gen)]
    grads = [[torch.randn_like(p) for p in init] for _ in range(4)]
    outs = []
    for device_step in (False, True):
        params = [p.clone().requires_grad_(True) for p in init]
        opt = PackedAdamW(params, lr=[1e-2, 3e-2, 1e-3], weight_decay=[0.0, 0.1, 0.0])
        active = torch.tensor([True, False, True])
        for t, gs in enumerate(grads):
            if device_step and t == 1:
                opt.use_device_step()
            for p, g in zip(params, gs):
                p.grad = g.clone()
            factor = 0.5 ** t
            opt.step(active, torch.tensor(factor) if opt.t_dev is not None else factor)
        opt.sync_step()
        assert opt.t == 4 and opt.t_dev is None
        outs.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*outs))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_auto_on_cuda_captures_and_matches_off(monkeypatch):
    """A static-batch pack (with a member that stops early and one that diverges) under `auto`: the step is captured
    (GraphedStep replays), and statuses, steps and metrics match `off`."""
    pack = [ftc(4, 0, early_stop=False), ftc(16, 1, lr=3e-2), ftc(7, 2, lr=1e10, early_stop=False)]
    replays = []
    real = GraphedStep.__call__

    def counted(self, step, lr_factor):
        replays.append(self.graph is not None)
        return real(self, step, lr_factor)
    monkeypatch.setattr(GraphedStep, "__call__", counted)
    on = ftcore.fit(pack, device="cuda", cuda_graphs="auto")
    assert sum(replays) > 0
    off = ftcore.fit(pack, device="cuda", cuda_graphs="off")
    assert [(r.status, r.steps) for r in on] == [(r.status, r.steps) for r in off]
    for a, b in zip(on, off):
        for k, v in b.metrics.items():
            assert a.metrics[k] == pytest.approx(v, rel=1e-4, abs=1e-6, nan_ok=True), (a.run_id, k)
