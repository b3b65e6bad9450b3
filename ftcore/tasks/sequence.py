"""`SequenceTask`: what every task fed to the sequence models shares (papers.md §0.1, §4–§7).

Prompts are token sequences (E, B, T, in) for `transformer`, `looped_transformer`, `mamba`, `hybrid` and
`mambaformer`; each member draws its training prompts from its own advancing generator (stream "batches");
a step trains on `batch_size` prompts (the pack planner's rows); models with learned positions
(`model.n_positions`) must cover the longest sequence, which the subclass states with `seq_len(cfg)`.
"""
from __future__ import annotations

from ftcore.fields import check
from ftcore.seeding import generators
from ftcore.tasks.base import Task

SEQ_MODELS = ("transformer", "looped_transformer", "mamba", "hybrid", "mambaformer")


class SequenceTask(Task):
    models = SEQ_MODELS

    def __init__(self, cfgs, model_cfg, seeds):
        super().__init__(cfgs, model_cfg, seeds)
        self.gens = generators(seeds, "batches")       # one advancing generator per member

    @staticmethod
    def seq_len(cfg) -> tuple[int, str]:
        """(longest sequence in tokens, how it arises: '2 * task.n_points (interleaved x, y tokens)')."""
        raise NotImplementedError

    @classmethod
    def check_compatible(cls, cfg, model_cfg, adapter_cfg, train_cfg):
        n_pos = getattr(model_cfg, "n_positions", None)
        if n_pos is not None:
            T, why = cls.seq_len(cfg)
            check(n_pos >= T, "model.n_positions", f">= {why} = {T}", n_pos)

    @classmethod
    def rows(cls, cfg):
        return cfg.batch_size
