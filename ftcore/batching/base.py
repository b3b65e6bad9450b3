"""The batch-selection interface: which of a task's N samples form this step's mini-batch(es).

"Mini-Batch Optimization of Contrastive Loss" (Cho, Sreenivasan, Lee, …, Papailiopoulos, Lee; TMLR 2024;
papers.md §3; reference code krafton-ai/mini-batch-cl `utils.py`, `synthetic.py`). For N positive pairs with
logits z_ij = u_iᵀv_j / τ, the loss of a set S of pairs is the symmetric InfoNCE (`clip_batch_loss`)

    L_S = (1/|S|) Σ_{i∈S} [−z_ii + log Σ_{j∈S} e^{z_ij}] + (1/|S|) Σ_{i∈S} [−z_ii + log Σ_{j∈S} e^{z_ji}].

A strategy returns, per member and optimizer step, an index tensor (E, M, B): M batches of B sample ids;
the step's loss is the mean of L_S over the M batches (M = 1 for every strategy but `all_batches`). One
optimizer step = one SGD update, so a pass over the data ("epoch", the paper's logged iteration) is N/B
steps for the partition strategies and OSGD, and 1 step for `full` and `all_batches`.

Strategies draw randomness only from per-member generators (ftcore.seeding, stream "batching"), and the
ones that look at the model (OSGD, spectral) get a callable returning the current logits Z (E, N, N), so
the logits are computed only on the steps that need them.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ftcore.fields import check

MAX_BATCHES = 20_000       # C(N, B) above this is refused by the strategies that enumerate every batch


def symmetric_infonce(logits: torch.Tensor) -> torch.Tensor:
    """L_S of every batch: logits (..., B, B) with z_ij = u_iᵀv_j/τ of the batch's pairs -> (...)."""
    diag = logits.diagonal(dim1=-2, dim2=-1)                                      # (..., B)
    rows = torch.logsumexp(logits, -1) - diag                                     # u_i against the batch's v_j
    cols = torch.logsumexp(logits, -2) - diag                                     # v_i against the batch's u_j
    return rows.mean(-1) + cols.mean(-1)


def batch_logits(z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """z (E, N, N), idx (E, M, B) -> the batches' logit blocks (E, M, B, B): out[e, m] = z[e][S_m][:, S_m]."""
    E, M, B = idx.shape
    rows = torch.gather(z, 1, idx.reshape(E, M * B, 1).expand(E, M * B, z.shape[-1]))     # (E, M·B, N)
    rows = rows.reshape(E, M, B, z.shape[-1])
    return torch.gather(rows, 3, idx.unsqueeze(2).expand(E, M, B, B))


def all_combinations(n: int, b: int) -> torch.Tensor:
    """Every B-subset of range(N), lexicographic: (C(N,B), B) long."""
    return torch.combinations(torch.arange(n), b) if b > 1 else torch.arange(n).unsqueeze(-1)


def check_enumerable(name: str, n: int, b: int) -> None:
    """One-line refusal when a strategy would have to enumerate too many batches."""
    count = math.comb(n, b)
    check(count <= MAX_BATCHES, "train.batch_selection",
          f"a strategy that can run at N={n}, B={b}: '{name}' enumerates all C({n},{b}) = {count} batches "
          f"(limit {MAX_BATCHES}); use shuffle or spectral", name)


class Strategy:
    """Picks the batch indices (E, M, B) for each step. `n`: samples, `b`: batch size, `k`: the k·B variant."""
    per_epoch: bool = True         # True: one partition into N/B batches per epoch, one batch per step

    def __init__(self, n: int, b: int, k: int, gens: list[torch.Generator]):
        self.n, self.b, self.k, self.gens, self.E = n, b, k, gens, len(gens)
        self.scored = 0                                 # candidate-batch losses evaluated so far (cost.py)
        self._epoch, self._partition = -1, None        # (E, N/B, B) of the current epoch

    @classmethod
    def check(cls, n: int, b: int, k: int) -> None:
        """Raise ValueError (ftcore.config.check) for sizes this strategy cannot run."""
        check(n % b == 0, "task.batch_size", f"a divisor of N={n} (the strategies partition the N samples)", b)

    @classmethod
    def steps_per_epoch(cls, n: int, b: int) -> int:
        return n // b if cls.per_epoch else 1

    def partition(self, epoch: int, logits: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A partition of range(N) into N/B batches per member: (E, N/B, B) long."""
        raise NotImplementedError

    def select(self, step: int, logits: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Batch indices for `step`: (E, M, B). Partition strategies walk their epoch's partition in order;
        steps must come in increasing order (the partition of an epoch is drawn when the epoch starts)."""
        per = self.n // self.b
        epoch = step // per
        if epoch != self._epoch:
            self._epoch, self._partition = epoch, self.partition(epoch, logits)
        pos = step % per
        return self._partition[:, pos:pos + 1]                                     # (E, 1, B)


def random_partition(n: int, b: int, gen: torch.Generator) -> torch.Tensor:
    """A uniformly random partition of range(N) into N/B batches of B: (N/B, B) long."""
    return torch.randperm(n, generator=gen).reshape(n // b, b)
