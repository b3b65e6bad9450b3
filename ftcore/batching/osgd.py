"""`osgd`: ordered SGD on batches — every step trains on the batch of maximum loss among all C(N,B)
(papers.md §3(a) `osgd_NcB`; reference `utils.py osgd_NcB_batches`):

    S_t = argmax_{S ⊂ [N], |S| = B} L_S(U_t, V_t),     then one SGD step on L_{S_t}.

High-loss batches carry the largest gradients of the mini-batch objective, which is why the paper finds
OSGD reaching the full-batch optimum an order of magnitude sooner than shuffled SGD. The C(N,B) batch
losses come from the current logits Z (E, N, N) in one gather; sizes with C(N,B) > MAX_BATCHES are refused.
Ties go to the lexicographically first batch (torch.argmax). The step counter is in SGD updates; the
paper logs OSGD per N/B updates, so an epoch is N/B steps here as for the partition strategies.
"""
from __future__ import annotations

from ftcore.batching.base import (
    Strategy,
    all_combinations,
    batch_logits,
    check_enumerable,
    symmetric_infonce,
)
from ftcore.registry import BATCHINGS


@BATCHINGS.register("osgd")
class Osgd(Strategy):
    @classmethod
    def check(cls, n, b, k):
        super().check(n, b, k)
        check_enumerable("osgd", n, b)

    def __init__(self, n, b, k, gens):
        super().__init__(n, b, k, gens)
        self.combos = all_combinations(n, b)                                      # (C, B)

    def select(self, step, logits):
        """The argmax batch per member, chosen on the logits' device (no host synchronisation in a step)."""
        z = logits()                                                              # (E, N, N)
        if self.combos.device != z.device:                                        # moved once, kept there
            self.combos = self.combos.to(z.device)
        combos = self.combos.expand(z.shape[0], *self.combos.shape)               # (E, C, B)
        losses = symmetric_infonce(batch_logits(z, combos))                       # (E, C)
        best = losses.argmax(-1)                                                  # (E,)
        self.scored += self.combos.shape[0]
        return self.combos[best].unsqueeze(1)                                     # (E, 1, B)
