"""What one step of a batch-selection strategy costs, counted as it happens (papers.md §3; issue 14 item 4:
"a compute-adjusted comparison that counts the selection's forward passes").

Unit: one *pair-forward* = one positive pair (u_i, v_i) embedded by the model (for free embeddings a table
lookup, for an encoder two views through the network). Per optimizer step t a strategy spends

    F_t = |∪_m S_m|            the distinct pairs of the step's training batches (forward and backward)
        + N · calls_t          the pairs embedded to *choose* the batches: every call of the logits
                               callable embeds all N pairs (OSGD: every step; spectral: once per epoch)

so shuffle/fixed cost B per step, full and all_batches N (all C(N,B) batch losses need only the N
embeddings), OSGD B + N, spectral B + N·B/N = 2B on average. The selection's other work is counted beside
it: `batch_losses` = candidate-batch losses scored (OSGD: all C(N,B) every step), and spectral's
eigendecomposition and k-means are not forwards (O(N³) per epoch on the N×N affinity).

Backward passes are not weighted: a training pair costs one unit like a selection pair, which *favours*
the selection-free strategies (with backward ≈ 2 forwards a training pair would cost 3 units).

The meter lives on the task (`SelectionTask.cost`): evaluation writes the cumulative counts as the metrics
`cost/forwards` and `cost/batch_losses`, so a curve row at step t holds the cost of steps 0 … t−1 and the
compute to reach a target is read at the same row as the step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CostMeter:
    forwards: float = 0.0          # cumulative pair-forwards (training + selection)
    batch_losses: float = 0.0      # cumulative candidate-batch losses scored by the selection

    def charge(self, forwards: float, batch_losses: float = 0.0) -> None:
        self.forwards += float(forwards)
        self.batch_losses += float(batch_losses)

    def metrics(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The counts as per-member metrics shaped like `like` (E,) (every member of a pack pays the same)."""
        return {"cost/forwards": torch.full_like(like, self.forwards),
                "cost/batch_losses": torch.full_like(like, self.batch_losses)}


def distinct_pairs(idx: torch.Tensor) -> int:
    """idx (E, M, B) -> the distinct sample ids of member 0's batches (the same count for every member)."""
    return int(idx[0].unique().numel())
