"""`SequenceTask`: what every task fed to the sequence models shares (papers.md §0.1, §4–§7).

Prompts are token sequences (E, B, T, in) for `transformer`, `looped_transformer`, `mamba`, `hybrid` and
`mambaformer`, and for `hf_backbone` (a Hugging Face transformer stack between trained read-in/read-out); each
member draws its training prompts from its own advancing generator (stream "batches"); a step trains on
`batch_size` prompts (the pack planner's rows); models with learned positions (`model.n_positions`, an HF model's
position table) must cover the longest sequence, which the subclass states with `seq_len(cfg)`.
"""
from __future__ import annotations

from ftcore.fields import check
from ftcore.seeding import generators
from ftcore.tasks.base import Task
from ftcore.tokenizers import BACKBONE_MODELS

SEQ_MODELS = ("transformer", "looped_transformer", "mamba", "hybrid", "mambaformer")


def positions(model_cfg) -> tuple[int | None, str]:
    """(the longest sequence the model's position table covers or None, the field that sets it)."""
    if model_cfg.name in BACKBONE_MODELS:
        from ftcore.models.hf_backbone import max_positions
        return max_positions(model_cfg.path, model_cfg.download), "model.path"
    return getattr(model_cfg, "n_positions", None), "model.n_positions"


class SequenceTask(Task):
    models = SEQ_MODELS + BACKBONE_MODELS

    def __init__(self, cfgs, model_cfg, seeds):
        super().__init__(cfgs, model_cfg, seeds)
        self.gens = generators(seeds, "batches")       # one advancing generator per member

    @staticmethod
    def seq_len(cfg) -> tuple[int, str]:
        """(longest sequence in tokens, how it arises: '2 * task.n_points (interleaved x, y tokens)')."""
        raise NotImplementedError

    @classmethod
    def check_compatible(cls, cfg, model_cfg, adapter_cfg, train_cfg):
        words = cls.input_words(cfg)
        if model_cfg.name in BACKBONE_MODELS and words:     # its words become the model's tokens: a tokenizer needed
            from ftcore.models.hf_backbone import word_ids
            word_ids(model_cfg.path, model_cfg.download, tuple(words))
        n_pos, where = positions(model_cfg)
        if n_pos is None:
            return
        T, why = cls.seq_len(cfg)
        if where == "model.n_positions":
            check(n_pos >= T, where, f">= {why} = {T}", n_pos)
        else:
            check(n_pos >= T, where, f"a model whose position table covers {why} = {T} (it has {n_pos})",
                  model_cfg.path)

    @classmethod
    def rows(cls, cfg):
        return cfg.batch_size
