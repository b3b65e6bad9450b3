"""`SelectionTask`: a task whose mini-batches `train.batch_selection` may choose (ftcore.batching;
papers.md §3). Its N = `task.n` samples form batches of B = `task.batch_size`; with the default
`batch_selection: task` its own batches are shuffled partitions, so B must divide N either way."""
from __future__ import annotations

from ftcore.batching import TASK_DEFAULT
from ftcore.batching.partition import Shuffle
from ftcore.tasks.base import Task


class SelectionTask(Task):
    selects_batches = True
    row_loss = False          # InfoNCE couples a batch's rows: the loss of a shard is not a part of the sum

    @staticmethod
    def selection_sizes(cfg) -> tuple[int, int]:
        return cfg.n, cfg.batch_size

    @staticmethod
    def check_compatible(cfg, model_cfg, adapter_cfg, train_cfg):
        if train_cfg.batch_selection == TASK_DEFAULT:        # other strategies are checked by check_selection
            Shuffle.check(cfg.n, cfg.batch_size, 0)
