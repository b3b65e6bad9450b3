"""Training losses shared by tasks, with their backward written out where autograd's graph costs more than the math.

`weighted_mse(pred, y, w)` — the regression loss of most tasks, per member e:

    L_e = Σ_b w_eb · (1/O) Σ_o (pred_ebo − y_ebo)²,        ∂L_e/∂pred_ebo = (2/O) · w_eb · (pred_ebo − y_ebo)

pred, y (E, B, O); w (E, B). Autograd records five nodes for the expression (sub, pow, mean, mul, sum) and runs
about ten ops backward; `_WeightedMSE` runs the forward's five ops without a graph and its backward in three
(the launch-bound CPU packs of the FTC sweeps: benchmarks/bench_step.py). Gradients flow to `pred` only; when `y`
or `w` require grad, or `y` broadcasts against `pred`, the same value is computed through autograd's graph.
`weighted_mse_and_grad` gives the value and the gradient with no autograd at all, for a model that runs its own
reverse mode (ftcore.fit: the analytic step).
"""
from __future__ import annotations

import torch


def _value(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """L (E,) from d = pred − y (E, B, O) and w (E, B)."""
    sq = d.square().sum(-1)                                             # (E, B)
    return (w * (sq if d.shape[-1] == 1 else sq.div_(d.shape[-1]))).sum(-1)


def _grad(d: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """∂(Σ_e g_e L_e)/∂pred = (2/O) · g_e · w_eb · d_ebo  (E, B, O)."""
    return d * (w * g.unsqueeze(-1)).mul_(2.0 / d.shape[-1]).unsqueeze(-1).to(d.dtype)


class _WeightedMSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        d = pred - y                                                    # (E, B, O)
        ctx.save_for_backward(d, w)
        return _value(d, w)                                             # (E,)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        d, w = ctx.saved_tensors
        return _grad(d, w, g), None, None


def weighted_mse(pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ_b w_b · mean_o (pred − y)² per member -> (E,) (module docstring)."""
    if y.requires_grad or w.requires_grad or pred.shape != y.shape:
        return _value(pred - y, w)                                      # through autograd's graph
    return _WeightedMSE.apply(pred, y, w)


@torch.no_grad()
def weighted_mse_and_grad(pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor):
    """Without autograd (ftcore.fit's analytic step): (L (E,), grad) where grad(g) = ∂(Σ_e g_e L_e)/∂pred (E, B, O)
    for member weights g (E,)."""
    d = pred - y
    return _value(d, w), lambda g: _grad(d, w, g)
