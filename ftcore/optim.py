"""AdamW for a pack: one update for every member with per-member lr, weight decay and grad clipping.

torch's optimizers take one scalar lr per param group, so a pack whose members have different learning
rates needs its own update (HFTA's `hfta/optim` does the same; DESIGN.md §6). For member e and each
parameter slice p_e with gradient g_e (Loshchilov & Hutter, decoupled weight decay):

    g_e ← g_e · min(1, c_e / ‖g_e‖)                 (per-member global-norm clip, c_e = 0: off)
    m ← β1 m + (1 − β1) g_e,   v ← β2 v + (1 − β2) g_e²
    p_e ← p_e − η_e·s_t · ( m̂ / (√v̂ + ε) + λ_e p_e )

where s_t is the schedule factor. Inactive members (finished or diverged) are left exactly as they are:
their gradients are replaced by zeros and their update is skipped with `torch.where`, so a NaN in one
member never leaks into the others. The Triton fused version belongs to `kernels/` (a later issue);
this is the reference path.
"""
from __future__ import annotations

import torch


class PackedAdamW:
    def __init__(self, params: list[torch.Tensor], lr, weight_decay, betas=(0.9, 0.999), eps=1e-8, grad_clip=None):
        self.params = [p for p in params if p.requires_grad]
        self.lr = torch.as_tensor(lr, dtype=torch.float64)                     # (E,)
        self.wd = torch.as_tensor(weight_decay, dtype=torch.float64)           # (E,)
        self.clip = None if grad_clip is None else torch.as_tensor(grad_clip, dtype=torch.float64)
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _view(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return x.to(p.dtype).view(-1, *([1] * (p.dim() - 1)))                  # (E, 1, ...)

    def _clip_coef(self, grads: list[torch.Tensor]) -> torch.Tensor | None:
        if self.clip is None or not bool((self.clip > 0).any()):
            return None
        sq = sum(g.pow(2).flatten(1).sum(1) for g in grads)                    # (E,)
        coef = (self.clip.to(sq) / (sq.sqrt() + 1e-12)).clamp(max=1.0)
        return torch.where(self.clip.to(sq) > 0, coef, torch.ones_like(coef))

    @torch.no_grad()
    def step(self, active: torch.Tensor, lr_factor: float = 1.0) -> None:
        """active: (E,) bool. Updates only active members."""
        self.t += 1
        grads = []
        for p in self.params:
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            grads.append(torch.where(self._view(active, p).bool(), g, torch.zeros_like(g)))
        coef = self._clip_coef(grads)
        bc1, bc2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            if coef is not None:
                g = g * self._view(coef, p)
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            lr = self._view(self.lr * lr_factor, p)
            upd = (m / bc1) / ((v / bc2).sqrt() + self.eps) + self._view(self.wd, p) * p
            p.copy_(torch.where(self._view(active, p).bool(), p - lr * upd, p))
