"""Data parallelism for one pack over R processes: shard every member's batch by rows, sum the gradients.

`fit(members, dp=DataParallel())` trains a pack on R ranks of a `torch.distributed` process group (the one
Ray Train's `TorchTrainer` initialises: gloo on CPU, NCCL on GPU; or any other). Every rank holds the whole
pack — frozen base and trainable parameters — and draws the same full batch x (E, B, ...), y, w (E, B)
from the members' generators, so the data are those of a one-process run. Rank r then keeps its rows
b ∈ [rB/R, (r+1)B/R) of every member, *with their original weights* w_b. A task whose loss is a row-weighted
sum (`Task.row_loss`)

    L_e = Σ_b w_eb ℓ_eb = Σ_r Σ_{b ∈ rows(r)} w_eb ℓ_eb = Σ_r L_e^(r)

has ∇L_e = Σ_r ∇L_e^(r): one SUM all-reduce of the trainable gradients after backward gives every rank the
full-batch gradient (equal up to float summation order), so every rank takes the same optimizer step and the
parameters stay identical without ever being broadcast. Losses are summed the same way (for the divergence
check and `train/loss`); evaluation runs unsharded on every rank (same result everywhere, no communication).
This is DDP (Li et al., VLDB'20, "PyTorch Distributed") without its bucketing/overlap machinery: one flat
bucket per step, which is what the small trainable part of a large frozen base needs.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


class DataParallel:
    """The hook `fit` calls: `shard` a step's batch, `all_reduce_grads` after backward, `sum` a tensor.

    `rank`/`world_size` default to the initialised process group's."""

    def __init__(self, rank: int | None = None, world_size: int | None = None, group=None):
        self.group = group
        self.rank = dist.get_rank(group) if rank is None else rank
        self.world_size = dist.get_world_size(group) if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank: must be in [0, {self.world_size}) (got {self.rank})")

    def rows(self, n: int) -> slice:
        """This rank's rows of n: contiguous, sizes differing by at most one (empty when n < world_size)."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def shard(self, x, y: torch.Tensor, w: torch.Tensor):
        """(x (E, B, ...), y (E, B, ...), w (E, B)) -> this rank's rows of each, w unchanged in value.
        x may be a tensor or a tuple/list of tensors (each with the row axis second)."""
        rows = (slice(None), self.rows(w.shape[1]))
        return _take(x, rows), y[rows], w[rows]

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Σ over ranks of t (a new tensor, the same on every rank)."""
        out = t.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return out

    @torch.no_grad()
    def all_reduce_grads(self, params: list[torch.Tensor]) -> None:
        """Replace every trainable parameter's gradient by its sum over ranks: one flattened all-reduce.
        A parameter without a gradient counts as zeros (every rank has the same graph, so the same ones)."""
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        a = 0
        for p in params:
            g = flat[a:a + p.numel()].view_as(p)
            a += p.numel()
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)


def _take(t, index):
    """t[index] for a tensor, elementwise for a tuple/list of them."""
    return type(t)(_take(u, index) for u in t) if isinstance(t, (tuple, list)) else t[index]
