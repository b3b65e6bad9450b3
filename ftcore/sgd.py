"""Plain SGD for a pack (`train.method: sgd`): the optimizer of the contrastive paper's synthetic runs
(papers.md §3(a): SGD, lr 0.5, no momentum; reference `synthetic.py`). For member e with lr η_e, weight
decay λ_e, clip c_e and schedule factor s_t:

    g_e ← g_e · min(1, c_e / ‖g_e‖)   (c_e = 0: off; all 0: no norm computed),      p_e ← p_e − η_e s_t (g_e + λ_e p_e).

Inactive members are left untouched. Same interface as PackedAdamW (`zero_grad`, `step(active, factor)`),
without the moment buffers: it does not support pack compaction, which only static-batch tasks use.
"""
from __future__ import annotations

import torch


class PackedSGD:
    def __init__(self, params: list[torch.Tensor], lr, weight_decay, grad_clip):
        self.params = [p for p in params if p.requires_grad]
        self.t = 0
        if not self.params:
            return
        p0 = self.params[0]
        hyper = {"dtype": p0.dtype, "device": p0.device}
        self.lr = torch.as_tensor(lr, **hyper)                                    # (E,)
        self.wd = torch.as_tensor(weight_decay, **hyper)
        self.clip = torch.as_tensor([c or 0.0 for c in grad_clip], **hyper)
        self.clipping = any(float(c or 0.0) > 0 for c in grad_clip)     # all 0: no norm work per step

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor, lr_factor: float = 1.0) -> None:
        """active: (E,) bool. Updates only active members."""
        if not self.params:
            return
        self.t += 1
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        E = self.lr.shape[0]
        if self.clipping:
            norm = torch.stack([g.reshape(E, -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()    # (E,)
            scale = torch.where(self.clip > 0, (self.clip / (norm + 1e-12)).clamp(max=1.0), torch.ones_like(norm))
            grads = [g * scale.view((E,) + (1,) * (g.dim() - 1)) for g in grads]
        active = active.to(self.lr.device)
        for p, g in zip(self.params, grads):
            shape = (E,) + (1,) * (p.dim() - 1)
            new = p - (self.lr * lr_factor).view(shape) * (g + self.wd.view(shape) * p)
            p.copy_(torch.where(active.view(shape), new, p))        # a NaN in one member never leaks
