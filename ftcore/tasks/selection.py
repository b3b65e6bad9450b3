"""`SelectionTask`: a task whose mini-batches `train.batch_selection` may choose (ftcore.batching;
papers.md §3). Its N = `task.n` samples form batches of B = `task.batch_size`; with the default
`batch_selection: task` its own batches are shuffled partitions, so B must divide N either way.

`cost` (ftcore.batching.cost.CostMeter) counts the pair-forwards spent so far: the batcher charges it for
the selected batches and the selection's own forwards, `own_batch` for the task's default batches, and
`evaluate` reports it (`cost_metrics`) as `cost/forwards`, `cost/batch_losses`."""
from __future__ import annotations

from ftcore.batching import TASK_DEFAULT
from ftcore.batching.cost import CostMeter, distinct_pairs
from ftcore.batching.partition import Shuffle
from ftcore.tasks.base import Task


class SelectionTask(Task):
    selects_batches = True
    row_loss = False          # InfoNCE couples a batch's rows: the loss of a shard is not a part of the sum

    def __init__(self, cfgs, model_cfg, seeds):
        super().__init__(cfgs, model_cfg, seeds)
        self.cost = CostMeter()

    def own_batch(self, step: int):
        """`batch_selection: task`: the task's shuffled partition (`self.own`), charged B pairs per step."""
        idx = self.own.select(step, None)                                         # (E, 1, B)
        self.cost.charge(distinct_pairs(idx))
        return self.batch_of(idx)

    def cost_metrics(self, like):
        """The cumulative cost counters as metrics (E,) shaped like `like`."""
        return self.cost.metrics(like)

    @staticmethod
    def selection_sizes(cfg) -> tuple[int, int]:
        return cfg.n, cfg.batch_size

    @staticmethod
    def check_compatible(cfg, model_cfg, adapter_cfg, train_cfg):
        if train_cfg.batch_selection == TASK_DEFAULT:        # other strategies are checked by check_selection
            Shuffle.check(cfg.n, cfg.batch_size, 0)
