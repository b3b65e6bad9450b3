"""`full` and `all_batches`: the two full-information baselines (papers.md §3(a) `full` and `NcB`;
reference `utils.py mini_batch_loss`).

* `full`: every step trains on the whole set, L_[N] (one batch of N).
* `all_batches`: every step trains on the average over all C(N,B) mini-batches,

      L̄_B = (1 / C(N,B)) Σ_{S ⊂ [N], |S| = B} L_S.

  The paper's equivalence theorem: L̄_B and L_[N] have the same minimisers (the simplex ETF for d ≥ N−1),
  so `all_batches` reaches the full-batch optimum — while any strict subset of the C(N,B) batches (e.g.
  `fixed`) in general does not. Enumerating all batches is refused above `MAX_BATCHES`.
"""
from __future__ import annotations

import torch

from ftcore.batching.base import Strategy, all_combinations, check_enumerable
from ftcore.registry import BATCHINGS


@BATCHINGS.register("full")
class Full(Strategy):
    per_epoch = False

    @classmethod
    def check(cls, n, b, k):
        """Any N: the batch size is ignored (the one batch is the whole set)."""

    def select(self, step, logits):
        return torch.arange(self.n).expand(self.E, 1, self.n)                     # (E, 1, N)


@BATCHINGS.register("all_batches")
class AllBatches(Strategy):
    per_epoch = False

    @classmethod
    def check(cls, n, b, k):
        check_enumerable("all_batches", n, b)

    def __init__(self, n, b, k, gens):
        super().__init__(n, b, k, gens)
        self.combos = all_combinations(n, b)                                      # (C(N,B), B)

    def select(self, step, logits):
        return self.combos.expand(self.E, *self.combos.shape)                     # (E, C(N,B), B)
