"""Memory one member needs while it trains — what bounds the pack size E on a given device.

bytes(member) ≈ parameters (frozen and trainable) + 3 × trainable (gradient, AdamW m and v)
              + the task's tensors (data, held-out sets) + 2 × the activations autograd saves for one
              forward + loss (the factor 2 covers the backward's temporaries).
Measured, not modelled: a one-member pack is built on the CPU and the saved activations are counted with
`torch.autograd.graph.saved_tensors_hooks`. Members of a pack are padded to its largest member, so callers
take the largest member's footprint for the pack (DESIGN.md §3).
"""
from __future__ import annotations

import torch

from ftcore.config import MemberConfig


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def member_bytes(member: MemberConfig) -> int:
    from ftcore.fit import build_pack
    dtype = torch.float64 if member.train.method == "construction" else torch.float32
    task, model = build_pack([member], dtype)
    params = sum(_nbytes(p) for p in model.parameters())
    trainable = sum(_nbytes(p) for p in model.parameters() if p.requires_grad)
    data = sum(_nbytes(v) for v in vars(task).values() if isinstance(v, torch.Tensor))
    data += sum(_nbytes(p) for v in vars(task).values() if isinstance(v, torch.nn.Module) for p in v.parameters())
    saved = [0]

    def count(t: torch.Tensor) -> torch.Tensor:
        saved[0] += _nbytes(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        x, y, w = task.batch(0)
        task.loss(model(x), y, w).sum()
    return params + 3 * trainable + data + 2 * saved[0]


def max_members(member: MemberConfig, budget_bytes: int) -> int:
    """How many members like `member` fit in `budget_bytes` (at least 1: a pack of one always runs)."""
    return max(1, int(budget_bytes // max(member_bytes(member), 1)))
