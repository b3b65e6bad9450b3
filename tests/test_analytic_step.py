"""fit's analytic step (ftcore.fit.analytic_forward: the additive ReLU adapter's hand-written reverse mode under the
weighted MSE, no autograd graph) against autograd's step on the same packs: the same statuses and step counts, curves
equal to float rounding — over mixed widths, depths 2 and 3, clipping, a diverging member, SGD, early stop with
compaction — and the cases that must keep autograd (bf16, the Triton kernels, other adapters and losses)."""
import importlib
import math

import pytest
import torch

import ftcore
from ftcore.pack import build_pack

fit_module = importlib.import_module("ftcore.fit")      # (ftcore.fit is the function)


def ftc(width, depth, seed, n=6, **train):
    return ftcore.member_from_dict({
        "model": {"name": "mlp", "width": 8, "depth": 2},
        "adapter": {"name": "additive_relu", "width": width, "depth": depth},
        "task": {"name": "ftc_relabel", "dim": 4, "n": n, "tol": 0.1},
        "train": {"steps": 120, "lr": 1e-2, "early_stop": False, "eval_every": 20, **train},
        "seed": seed})


PACKS = {
    "widths-d2": [ftc(3, 2, 0), ftc(8, 2, 1), ftc(5, 2, 2, weight_decay=0.1)],
    "d3-clip": [ftc(4, 3, 0, grad_clip=0.05), ftc(6, 3, 1, grad_clip=0.05), ftc(7, 3, 2, grad_clip=0.05)],
    "d3-diverging": [ftc(4, 3, 0), ftc(6, 3, 1, lr=1e10), ftc(7, 3, 2)],
    "sgd": [ftc(4, 2, 0, method="sgd", lr=0.05), ftc(9, 2, 1, method="sgd", lr=0.02)],
    "early-stop-compaction": [ftc(w, 2, s, n=3, early_stop=True, steps=600, lr=3e-2)
                              for s, w in enumerate([24, 24, 24, 2, 1])],
}


def fit_counting(pack, monkeypatch, analytic: bool):
    """fit(pack) with the analytic step on or off; returns (results, number of analytic forwards taken)."""
    real, taken = fit_module.analytic_forward, []

    def counted(*args):
        out = real(*args) if analytic else None
        taken.append(out is not None)
        return out
    monkeypatch.setattr(fit_module, "analytic_forward", counted)
    return ftcore.fit(pack), sum(taken)


@pytest.mark.parametrize("name", list(PACKS))
def test_analytic_step_matches_autograd(name, monkeypatch):
    pack = PACKS[name]
    fast, n_fast = fit_counting(pack, monkeypatch, analytic=True)
    slow, n_slow = fit_counting(pack, monkeypatch, analytic=False)
    assert n_fast > 0 and n_slow == 0                              # the analytic step did run (and then did not)
    assert [r.status for r in fast] == [r.status for r in slow]
    assert [r.steps for r in fast] == [r.steps for r in slow]
    for a, b in zip(fast, slow):
        assert [row["step"] for row in a.curve] == [row["step"] for row in b.curve]
        if a.status != "ok":
            continue
        for ra, rb in zip(a.curve, b.curve):
            for k, v in rb.items():
                assert math.isclose(ra[k], v, rel_tol=1e-4, abs_tol=1e-6), (a.run_id, ra["step"], k, ra[k], v)
    if name == "d3-diverging":
        assert fast[1].status == "diverged"
    if name == "early-stop-compaction":
        assert any(r.steps < 600 for r in fast) and any(r.steps == 600 for r in fast)


def test_gradients_match_autograd_exactly_enough():
    """One step's parameter gradients: set_grads(∂L/∂pred) vs autograd through the model and Task.loss (float64)."""
    pack = [ftc(3, 3, 0), ftc(7, 3, 1)]
    task, model = build_pack(pack, torch.float64)
    x, y, w = task.batch(0)
    weight = torch.tensor([1.0, 0.5], dtype=torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]
    (task.loss(model(x), y, w) * weight).sum().backward()
    want = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    pred, set_grads = fit_module.analytic_forward(task, model, x, "fp32")
    loss, loss_grad = fit_module.weighted_mse_and_grad(pred, y, w)
    set_grads(loss_grad(weight))
    torch.testing.assert_close(loss, task.loss(model(x), y, w).detach())
    for p, g in zip(params, want):
        torch.testing.assert_close(p.grad, g, rtol=1e-12, atol=1e-12)


def test_autograd_keeps_what_the_analytic_step_does_not_cover(monkeypatch):
    """bf16, the Triton path (forced, interpreted on CPU), an adapter without a hand-written reverse mode and a task
    with its own loss all take autograd's step."""
    task, model = build_pack([ftc(3, 2, 0)], torch.float32)
    x = task.batch(0)[0]
    assert fit_module.analytic_forward(task, model, x, "fp32") is not None
    assert fit_module.analytic_forward(task, model, x, "bf16") is None
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("FTCORE_KERNELS", "triton")
    assert fit_module.analytic_forward(task, model, x, "fp32") is None
    monkeypatch.setenv("FTCORE_KERNELS", "torch")
    teacher = ftcore.member_from_dict({
        "model": {"name": "mlp", "width": 8, "depth": 2, "last_activation": True},
        "adapter": {"name": "lora", "rank": 2}, "task": {"name": "lora_teacher", "target_depth": 1},
        "train": {"steps": 10}})
    task, model = build_pack([teacher], torch.float32)
    assert fit_module.analytic_forward(task, model, task.batch(0)[0], "fp32") is None
    task.loss = None                                        # (an instance attribute: the class's loss decides)
    own_loss = type("OwnLoss", (type(task),), {"loss": staticmethod(lambda p, y, w: (p - y).abs().sum((1, 2)))})
    task.__class__ = own_loss
    assert fit_module.analytic_forward(task, model, task.batch(0)[0], "fp32") is None
