"""AdamW for a pack: one update for every member with per-member lr, weight decay and grad clipping.

torch's optimizers take one scalar lr per param group, so a pack whose members have different learning
rates needs its own update (HFTA's `hfta/optim` does the same; DESIGN.md §6). For member e and each
parameter slice p_e with gradient g_e (Loshchilov & Hutter, decoupled weight decay):

    g_e ← g_e · min(1, c_e / ‖g_e‖)                 (per-member global-norm clip, c_e = 0: off; when every
                                                     c_e is 0 no norm is computed at all: max_norm=None)
    m ← β1 m + (1 − β1) g_e,   v ← β2 v + (1 − β2) g_e²
    p_e ← p_e − η_e·s_t · ( m̂ / (√v̂ + ε) + λ_e p_e )

where s_t is the schedule factor. Inactive members (finished or diverged) are left exactly as they are,
and a NaN in one member never leaks into the others.

Layout: the trainable parameters are moved into one flat buffer (E, P) — each parameter becomes a view
`flat[:, a:b].view(E, ...)` — so that a single `ftkernels.multi_adamw_` launch (Triton on CUDA, its torch
reference elsewhere; on CPU, torch's fused CPU AdamW per group of members sharing hyperparameters) updates every
parameter of every member. Gradients are gathered into the matching
(E, P) buffer with one `torch.cat`. Build the optimizer after the model is on its device and dtype.
"""
from __future__ import annotations

import torch

from ftkernels.multi_adamw import hyper_groups, multi_adamw_


class PackedAdamW:
    def __init__(self, params: list[torch.Tensor], lr, weight_decay, betas=(0.9, 0.999), eps=1e-8, grad_clip=None):
        self.params = [p for p in params if p.requires_grad]
        self.eps, self.t = float(eps), 0
        self.t_dev: torch.Tensor | None = None     # the step count on the device (`use_device_step`), else None
        if not self.params:
            return
        p0 = self.params[0]
        E, dev = p0.shape[0], p0.device
        if any(p.dtype != p0.dtype or p.device != dev or p.shape[0] != E for p in self.params):
            raise ValueError("PackedAdamW: every parameter needs the same dtype, device and member axis E")
        hyper = p0.dtype if p0.dtype == torch.float64 else torch.float32

        def per_member(v, default=0.0):
            v = default if v is None else v
            return torch.as_tensor(v, dtype=hyper).to(dev).expand(E).contiguous()       # (E,)

        self.lr, self.wd = per_member(lr), per_member(weight_decay)
        self.clip = per_member([0.0 if c is None else c for c in grad_clip] if isinstance(grad_clip, (list, tuple))
                               else grad_clip)
        self.clipping = bool((self.clip > 0).any())           # decided once (host): all 0 -> no norm work per step
        self.b1, self.b2 = per_member(betas[0]), per_member(betas[1])
        self.groups = hyper_groups(self.lr, self.b1, self.b2, self.wd) if dev.type == "cpu" else None   # CPU path
        self.flat = torch.cat([p.detach().reshape(E, -1) for p in self.params], 1).contiguous()   # (E, P)
        for p, view in zip(self.params, self.views(self.flat)):  # params become views into the flat buffer
            p.data = view
        self.grad = torch.zeros_like(self.flat)                 # (E, P)
        self.m, self.v = torch.zeros_like(self.flat), torch.zeros_like(self.flat)

    def views(self, buf: torch.Tensor) -> list[torch.Tensor]:
        """buf (E, P) seen as one tensor per parameter, shaped like it (for m, v, grad)."""
        out, off = [], 0
        for p in self.params:
            n = p[0].numel()
            out.append(buf[:, off:off + n].view(p.shape))
            off += n
        return out

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _gather_grads(self) -> None:
        E = self.flat.shape[0]
        grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(E, -1) for p in self.params]
        torch.cat(grads, 1, out=self.grad)

    def use_device_step(self) -> None:
        """Keep the step count on the device from now on (`t_dev`, incremented in place by each step, read by the
        update from device memory): a step captured in a CUDA graph (ftcore.graphs) then replays with the count of
        each replay. `sync_step()` brings it back to the host's `t`."""
        self.t_dev = torch.tensor(self.t, device=self.flat.device if self.params else "cpu")

    def sync_step(self) -> None:
        """`t` = the device's step count (one host read), back to host counting."""
        if self.t_dev is not None:
            self.t, self.t_dev = int(self.t_dev), None

    @torch.no_grad()
    def step(self, active: torch.Tensor, lr_factor: float | torch.Tensor = 1.0) -> None:
        """active: (E,) bool. Updates only active members. lr_factor: the schedule's factor (a 0-dim device tensor
        under a CUDA graph)."""
        if not self.params:
            return
        if self.t_dev is not None:
            self.t_dev += 1
            t = self.t_dev
        else:
            self.t += 1
            t = self.t
        self._gather_grads()
        multi_adamw_(self.flat, self.grad, self.m, self.v, self.lr, self.b1, self.b2, self.eps, self.wd,
                     self.clip if self.clipping else None, active.to(self.flat.device), t,
                     lr_factor if isinstance(lr_factor, torch.Tensor) else float(lr_factor), groups=self.groups)
