"""The task interface: a task owns its data, its loss and its metrics, for a whole pack at once.

Every tensor carries the member axis E first. Sampling uses per-member generators (ftcore.seeding):
no global RNG (DESIGN.md §5). `batch(step)` returns x (E, B, in), y (E, B, out) and per-sample weights
w (E, B) that sum to 1 over each member's real samples (padding rows weigh 0), so members with
different data sizes share a pack.
"""
from __future__ import annotations

import torch

from ftcore.losses import weighted_mse


class Task:
    Config = None
    per_member: tuple = ()
    success_metric: str | None = None     # boolean metric that ends a member early (fit/success)
    has_construction: bool = False        # True when `construct` implements `train.method: construction`
    static_batch: bool = False            # True when batch(step) is the same tensors every step (full batch)
    models: tuple = ("mlp",)              # the models whose inputs and outputs this task can feed and score
    row_loss: bool = True                 # loss = Σ_b w_b ℓ_b over independent rows b (data parallelism shards b)

    def __init__(self, cfgs: list, model_cfg, seeds: list[int]):
        self.cfgs, self.model_cfg, self.seeds, self.E = cfgs, model_cfg, seeds, len(cfgs)
        self.dtype, self.device = torch.float32, torch.device("cpu")

    # -- static checks and sizes (used before any tensor exists) ------------------------------------
    @staticmethod
    def io_dims(cfg, model_cfg) -> tuple[int, int]:
        raise NotImplementedError

    @staticmethod
    def check_compatible(cfg, model_cfg, adapter_cfg, train_cfg) -> None:
        """Raise ValueError for cross-section impossibilities."""

    @staticmethod
    def check_source(cfg, source_task_cfg) -> None:
        """`model.from`: raise ValueError when this task cannot measure what it measures on a base trained with
        `source_task_cfg` (e.g. a retention metric that must replay the source's own data distribution)."""

    @classmethod
    def rows(cls, cfg) -> int:
        """Training rows per step for one member: used to bucket packs with little padding."""
        return 1

    @staticmethod
    def input_words(cfg) -> tuple[str, ...]:
        """The words that the first input features stand for (feature i = word i, a multi-hot of the text's words),
        or () — a model with its own word embeddings (`hf_backbone`) starts those features' read-in at them."""
        return ()

    # -- the pack ----------------------------------------------------------------------------------
    def build_base(self) -> torch.nn.Module:
        raise NotImplementedError

    def use_base(self, base: torch.nn.Module) -> None:
        """The pack trains over `base` (a trained one, `model.from`) instead of the one `build_base` returned:
        a task whose data or reference numbers derive from the base recomputes them here."""

    def teacher_source(self) -> tuple[str, str] | None:
        """(run_id, dir) of the recorded run this pack's task distils from (`task.teacher`, resolved by the sweep
        layer), or None. The pack loads it like a `model.from` base (ftcore.pack.load_base) and calls `use_teacher`."""
        return None

    def use_teacher(self, teacher: torch.nn.Module) -> None:
        """A distilling task's teacher: the recorded run's trained model, frozen, member dim 1 (after build_base)."""
        raise NotImplementedError(f"task '{self.registry_name}' does not distil from a teacher")

    def to(self, dtype: torch.dtype, device: torch.device | str | None = None) -> Task:
        """Move every tensor attribute (data) to `device` and cast the floating ones to dtype."""
        self.dtype, self.device = dtype, torch.device(device) if device is not None else self.device
        for k, v in vars(self).items():
            if isinstance(v, torch.Tensor):
                setattr(self, k, v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
            elif isinstance(v, torch.nn.Module):
                v.to(self.device, dtype)
        return self

    def batch(self, step: int):
        raise NotImplementedError

    @staticmethod
    def loss(pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Weighted mean squared error per member: Σ_b w_b · mean_o (pred − y)²  -> (E,) (ftcore.losses)."""
        return weighted_mse(pred, y, w)

    def evaluate(self, model) -> dict[str, torch.Tensor]:
        """Metrics, each a tensor (E,), slash-named (`fit/max_err`, `test/mse`)."""
        raise NotImplementedError

    def construct(self, model) -> None:
        raise ValueError(f"train.method: 'construction' is not available for task '{self.registry_name}'")


def pad_rows(blocks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-member (n_e, ...) blocks into (E, max n, ...) plus weights (E, max n) = 1/n_e on real rows."""
    n_max = max(b.shape[0] for b in blocks)
    out = torch.zeros(len(blocks), n_max, *blocks[0].shape[1:], dtype=blocks[0].dtype)
    w = torch.zeros(len(blocks), n_max)
    for e, b in enumerate(blocks):
        out[e, : b.shape[0]] = b
        w[e, : b.shape[0]] = 1.0 / b.shape[0]
    return out, w
