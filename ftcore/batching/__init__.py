"""Batch-selection strategies (registry `BATCHINGS`). Importing this package registers every strategy.

`train.batch_selection` names one: fixed | shuffle | full | all_batches | osgd | spectral, or `task` (the
default: the task's own `batch(step)`, the only choice for tasks without batch selection). A task that
supports selection sets `selects_batches = True` and provides

* `selection_sizes(cfg) -> (N, B)` (static: used by the config checks before any tensor exists),
* `pair_logits(model) -> (E, N, N)`: the current logits z_ij of every pair (no grad),
* `batch_of(idx (E, M, B)) -> (x, y, w)`: the training batch for those sample ids, w (E, M) weighting
  the M batches' losses (the task's `loss` averages L_S over them),
* `cost`: a `CostMeter` (ftcore.batching.cost) the batcher charges with each step's pair-forwards.
"""
from __future__ import annotations

import torch

from ftcore.batching import full, osgd, partition, spectral  # noqa: F401  (registers strategies)
from ftcore.batching.base import MAX_BATCHES, Strategy, symmetric_infonce  # noqa: F401
from ftcore.batching.cost import CostMeter, distinct_pairs  # noqa: F401
from ftcore.registry import BATCHINGS
from ftcore.seeding import generators

TASK_DEFAULT = "task"


def build_strategy(name: str, n: int, b: int, k: int, seeds: list[int]) -> Strategy:
    return BATCHINGS.get_entry(name)(n, b, k, generators(seeds, "batching"))


def check_selection(task_cls, task_cfg, train_cfg) -> None:
    """Config-time checks (MemberConfig): the task supports selection and the sizes suit the strategy."""
    name = train_cfg.batch_selection
    if name == TASK_DEFAULT:
        return
    if not getattr(task_cls, "selects_batches", False):
        raise ValueError(f"train.batch_selection: must be 'task' for task '{task_cfg.name}' "
                         f"(it has no batch selection) (got {name!r})")
    BATCHINGS.get_entry(name).check(*task_cls.selection_sizes(task_cfg), train_cfg.selection_k)


def make_batcher(task, members):
    """fit()'s hook: None for `batch_selection: task`, else `batcher(model, step) -> (x, y, w)`, the batch
    the pack's strategy selects at `step` (strategies that look at the model get its current logits).
    Each step charges `task.cost`: the batches' distinct pairs, N per logits call, the batch losses scored."""
    c0 = members[0]
    if c0.train.batch_selection == TASK_DEFAULT:
        return None
    n, b = type(task).selection_sizes(c0.task)
    strategy = build_strategy(c0.train.batch_selection, n, b, c0.train.selection_k, [m.seed for m in members])

    def batcher(model, step: int):
        calls = []

        def logits():
            calls.append(1)
            return task.pair_logits(model)                                        # (E, N, N): all N pairs embedded

        scored = strategy.scored
        with torch.no_grad():
            idx = strategy.select(step, logits)                                   # (E, M, B)
        task.cost.charge(distinct_pairs(idx) + n * len(calls), strategy.scored - scored)
        return task.batch_of(idx)

    return batcher
