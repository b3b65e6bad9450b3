"""Typed member-run configuration: one dataclass per section, validated in `__post_init__`.

A *member run* is one point of a sweep: (model, adapter, task, train, seed). The model/adapter/task
sections are the `Config` dataclasses of their registry entries; `MemberConfig` adds the checks that
span sections (rank <= width, N <= K is the task's own, construction needs LoRA on `lora_teacher`, ...).
The flat dotted form (`adapter.rank`, `train.lr`, `seed`) is the record contract's column set
(DESIGN.md §4), and `run_id` is a hash of it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ftcore.registry import ADAPTERS, MODELS, TASKS

METHODS = ("adam", "sgd", "construction")
SCHEDULES = ("constant", "cosine")


def check(cond: bool, name: str, allowed: str, value: Any) -> None:
    """Raise the one-line ValueError every config uses: field, what is allowed, what was given."""
    if not cond:
        raise ValueError(f"{name}: must be {allowed} (got {value!r})")


@dataclass
class TrainConfig:
    """The packed loop's budget. `method: construction` skips training (an exact oracle, lora_teacher only)."""
    method: str = "adam"
    steps: int = 3000
    lr: float = 1e-2
    weight_decay: float = 0.0
    schedule: str = "cosine"
    grad_clip: float = 0.0      # per-member global grad-norm clip; 0 = off
    early_stop: bool = True     # a member that reaches its task's success metric stops (frozen)
    eval_every: int = 50        # steps between evaluations (curve points, success and divergence checks)
    batch_selection: str = "task"   # ftcore.batching strategy; "task" = the task's own batch(step)
    selection_k: int = 0        # spectral's k·B variant: cluster k·B samples at a time (0 = all N)

    per_member = ("lr", "weight_decay")

    def __post_init__(self):
        check(self.method in METHODS, "train.method", f"one of {', '.join(METHODS)}", self.method)
        check(self.schedule in SCHEDULES, "train.schedule", f"one of {', '.join(SCHEDULES)}", self.schedule)
        check(self.steps >= 0, "train.steps", ">= 0", self.steps)
        check(self.lr > 0, "train.lr", "> 0", self.lr)
        check(self.weight_decay >= 0, "train.weight_decay", ">= 0", self.weight_decay)
        check(self.grad_clip >= 0, "train.grad_clip", ">= 0 (0 = off)", self.grad_clip)
        check(self.eval_every >= 1, "train.eval_every", ">= 1", self.eval_every)
        # lazy: the strategies import this module
        from ftcore.batching import BATCHINGS, TASK_DEFAULT
        names = (TASK_DEFAULT,) + tuple(sorted(BATCHINGS))
        check(self.batch_selection in names, "train.batch_selection", f"one of {', '.join(names)}", self.batch_selection)
        check(self.selection_k >= 0, "train.selection_k", ">= 0 (0 = all N at once)", self.selection_k)


@dataclass
class MemberConfig:
    model: Any
    adapter: Any
    task: Any
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    def __post_init__(self):
        check(self.seed >= 0, "seed", ">= 0", self.seed)
        task_cls = TASKS.get_entry(self.task.name)
        if self.train.method == "construction":
            check(task_cls.has_construction, "train.method",
                  f"'adam' for task '{self.task.name}' (it has no construction)", self.train.method)
        adapter_cls = ADAPTERS.get_entry(self.adapter.name)
        check(self.model.name in adapter_cls.models, "adapter.name",
              f"an adapter for model '{self.model.name}' ('{self.adapter.name}' adapts {', '.join(adapter_cls.models)})",
              self.adapter.name)
        check(self.model.name in task_cls.models, "task.name",
              f"a task for model '{self.model.name}' ('{self.task.name}' runs on {', '.join(task_cls.models)})",
              self.task.name)
        adapter_cls.check_compatible(self.adapter, self.model, task_cls.io_dims(self.task, self.model))
        task_cls.check_compatible(self.task, self.model, self.adapter, self.train)
        from ftcore.batching import check_selection
        check_selection(task_cls, self.task, self.train)

    def flat(self) -> dict[str, Any]:
        """Dotted columns exactly as in the YAML (`adapter.rank`, `train.lr`, `seed`)."""
        out: dict[str, Any] = {}
        for section in ("model", "adapter", "task", "train"):
            for k, v in dataclasses.asdict(getattr(self, section)).items():
                out[f"{section}.{k}"] = list(v) if isinstance(v, tuple) else v
        out["seed"] = self.seed
        return out

    def run_id(self) -> str:
        """Hash of the resolved config: the same point of any sweep gets the same id."""
        blob = json.dumps(self.flat(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def pack_key(self) -> tuple:
        """Members may share a pack iff their configs agree outside the `per_member` fields."""
        flat = self.flat()
        varying = {"seed"}
        for section, obj in (("model", self.model), ("adapter", self.adapter), ("task", self.task), ("train", self.train)):
            varying |= {f"{section}.{f}" for f in getattr(obj, "per_member", ())}
        return tuple(sorted((k, json.dumps(v, default=str)) for k, v in flat.items() if k not in varying))


def section_config(registry, section: str, values: dict) -> Any:
    """Build a registry entry's Config from a dict, refusing unknown keys (with the valid ones)."""
    values = dict(values)
    name = values.get("name")
    check(isinstance(name, str), f"{section}.name", f"one of {', '.join(sorted(registry))}", name)
    cls = registry.get_entry(name).Config
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{section}.{unknown[0]}: unknown key for {section} '{name}'; valid: {', '.join(sorted(known))}")
    return cls(**values)


def member_from_dict(d: dict) -> MemberConfig:
    """Nested dict {model: {...}, adapter: {...}, task: {...}, train: {...}, seed} -> validated MemberConfig."""
    top = sorted(set(d) - {"model", "adapter", "task", "train", "seed"})
    if top:
        raise ValueError(f"{top[0]}: unknown key; valid: adapter, model, seed, task, train")
    train = dict(d.get("train", {}))
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(train) - known)
    if bad:
        raise ValueError(f"train.{bad[0]}: unknown key; valid: {', '.join(sorted(known))}")
    return MemberConfig(
        model=section_config(MODELS, "model", d.get("model", {})),
        adapter=section_config(ADAPTERS, "adapter", d.get("adapter", {})),
        task=section_config(TASKS, "task", d.get("task", {})),
        train=TrainConfig(**train),
        seed=int(d.get("seed", 0)),
    )
