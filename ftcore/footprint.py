"""Memory one member needs while it trains — what bounds the pack size E on a given device.

bytes(member) ≈ parameters (frozen and trainable) + 3 × trainable (gradient, AdamW m and v)
              + the task's tensors (data, held-out sets) + 2 × the activations autograd saves for one
              forward + loss (the factor 2 covers the backward's temporaries).
Measured, not modelled: a one-member pack is built on the CPU and the saved activations are counted with
`torch.autograd.graph.saved_tensors_hooks`. Members of a pack are padded to its largest member, so callers
take the largest member's footprint for the pack (DESIGN.md §3). A shared base (a trained base from
`model.from`, an HF model: one copy per pack, DESIGN.md §7) is paid once per pack, not per member:

    bytes(pack of E) ≈ shared base + E × bytes(member without it)
"""
from __future__ import annotations

import torch

from ftcore.config import MemberConfig


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def shares_base(member: MemberConfig) -> bool:
    """Whether the member's pack holds one copy of its base for all members (not one per member): a trained base
    (`model.from`) or a model without a member axis (the Hugging Face wrappers)."""
    from ftcore.registry import MODELS
    return member.source is not None or not getattr(MODELS.get_entry(member.model.name), "member_axis", True)


def footprint(member: MemberConfig) -> tuple[int, int]:
    """(bytes paid once per pack, bytes per member) for packs of members like `member`."""
    from ftcore.pack import build_pack
    dtype = torch.float64 if member.train.method == "construction" else torch.float32
    task, model = build_pack([member], dtype)
    shared = sum(_nbytes(p) for p in model.base.parameters() if not p.requires_grad) if shares_base(member) else 0
    return shared, _member_bytes(task, model) - shared


def member_bytes(member: MemberConfig) -> int:
    """Bytes of a one-member pack like `member` (its base included)."""
    return sum(footprint(member))


def _member_bytes(task, model) -> int:
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
    """How many members like `member` fit in `budget_bytes` next to their pack's shared base, if any (at least 1:
    a pack of one always runs)."""
    shared, each = footprint(member)
    return max(1, int((budget_bytes - shared) // max(each, 1)))
