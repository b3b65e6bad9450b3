"""`fixed` and `shuffle`: mini-batches from random partitions (papers.md §3(a) `f` and `s`;
reference `utils.py get_random_batch_idxs`).

* `fixed`: one random partition {S_1, …, S_{N/B}} of the N samples, drawn once and kept forever; step t
  trains on S_{t mod N/B}. Only the N/B losses L_{S_j} are ever minimised, so the iterates converge to a
  minimiser of Σ_j L_{S_j}, which in general is not a minimiser of the full loss L_[N] (the paper's
  counter-example: fixed batches stall above the full-batch optimum).
* `shuffle`: a fresh uniformly random partition every epoch (vanilla SGD without replacement).
"""
from __future__ import annotations

import torch

from ftcore.batching.base import Strategy, random_partition
from ftcore.registry import BATCHINGS


@BATCHINGS.register("fixed")
class Fixed(Strategy):
    def partition(self, epoch, logits):
        if self._partition is None:
            return torch.stack([random_partition(self.n, self.b, g) for g in self.gens])    # (E, N/B, B)
        return self._partition


@BATCHINGS.register("shuffle")
class Shuffle(Strategy):
    def partition(self, epoch, logits):
        return torch.stack([random_partition(self.n, self.b, g) for g in self.gens])        # (E, N/B, B)
