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

from ftcore.batching import BATCHINGS, TASK_DEFAULT, check_selection
from ftcore.fields import check, coerce, convert
from ftcore.registry import ADAPTERS, MODELS, TASKS

METHODS = ("adam", "sgd", "construction")
SCHEDULES = ("constant", "cosine")
SAVES = ("none", "final")
# flat columns that do not enter the run_id: where a base's (or a distilling task's teacher's) files lie and whether a
# checkpoint is written change no number of the run (their identities are `model.from.run_id`, `task.teacher_run_id`)
NOT_HASHED = ("model.from.dir", "task.teacher_dir", "train.save")
# Flat columns added after the shipped sweeps' run_ids were pinned (tests/test_run_id_pin.py), with the value every
# run recorded before the field existed implicitly had. A run_id is a hash of the flat config, so a new field in the
# hash would give every existing run a new id and orphan its results (`ftsweep resume`, merges, `model.from` bases).
# The rule for every field added from now on: list it here with its default; it is left out of the hash while at that
# default (so an old run keeps its id) and hashed as soon as it differs (so a run that does something new gets a new
# id). The default must never change afterwards: an entry's value is the behaviour of every pre-existing run.
HASHED_UNLESS_DEFAULT: dict[str, Any] = {
    "train.precision": "fp32",      # issue 17: fp32 training is what every run before the field did
    "model.output": "logits",       # issue 18 (hf_causal_lm): every HF run before the field read the logits
}
PRECISIONS = ("fp32", "tf32", "bf16")


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
    save: str = "none"          # final: keep each member's trained state (a checkpoint later sweeps fine-tune)
    precision: str = "fp32"     # fp32 | tf32 (CUDA matmuls) | bf16 (autocast, fp32 weights and moments): ftcore.fit;
    #                             method construction resolves it to fp32 (float64, nothing trains)

    per_member = ("lr", "weight_decay")

    def __post_init__(self):
        check(self.method in METHODS, "train.method", f"one of {', '.join(METHODS)}", self.method)
        check(self.schedule in SCHEDULES, "train.schedule", f"one of {', '.join(SCHEDULES)}", self.schedule)
        check(self.steps >= 0, "train.steps", ">= 0", self.steps)
        check(self.lr > 0, "train.lr", "> 0", self.lr)
        check(self.weight_decay >= 0, "train.weight_decay", ">= 0", self.weight_decay)
        check(self.grad_clip >= 0, "train.grad_clip", ">= 0 (0 = off)", self.grad_clip)
        check(self.eval_every >= 1, "train.eval_every", ">= 1", self.eval_every)
        names = (TASK_DEFAULT,) + tuple(sorted(BATCHINGS))
        check(self.batch_selection in names, "train.batch_selection", f"one of {', '.join(names)}", self.batch_selection)
        check(self.selection_k >= 0, "train.selection_k", ">= 0 (0 = all N at once)", self.selection_k)
        check(self.save in SAVES, "train.save", f"one of {', '.join(SAVES)}", self.save)
        check(self.precision in PRECISIONS, "train.precision", f"one of {', '.join(PRECISIONS)}", self.precision)
        if self.method == "construction":   # an exact float64 oracle, nothing trains: no precision applies, and the
            self.precision = "fp32"         # row records (and hashes) the default, so a sweep-wide bf16 keeps its id


@dataclass(frozen=True)
class ModelFrom:
    """`model.from` once the sweep layer resolved it: the recorded run whose trained model is the frozen base
    (its checkpoint is `dir/checkpoints/<run_id>.safetensors`, ftcore.checkpoint)."""
    run_id: str
    dir: str

    def __post_init__(self):
        check(isinstance(self.run_id, str) and bool(self.run_id), "model.from.run_id", "a run_id", self.run_id)
        check(isinstance(self.dir, str) and bool(self.dir), "model.from.dir", "a sweep output directory", self.dir)


@dataclass
class MemberConfig:
    model: Any
    adapter: Any
    task: Any
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    source: ModelFrom | None = None      # model.from: a trained base instead of the task's random one

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
        check_selection(task_cls, self.task, self.train)

    def flat(self) -> dict[str, Any]:
        """Dotted columns exactly as in the YAML (`adapter.rank`, `train.lr`, `seed`)."""
        out: dict[str, Any] = {}
        for section in ("model", "adapter", "task", "train"):
            for k, v in dataclasses.asdict(getattr(self, section)).items():
                out[f"{section}.{k}"] = list(v) if isinstance(v, tuple) else v
            if section == "model" and self.source is not None:
                out["model.from.run_id"], out["model.from.dir"] = self.source.run_id, self.source.dir
        out["seed"] = self.seed
        return out

    def nested(self) -> dict:
        """The nested dict `member_from_dict` builds this config from (a base's source as `model.from`)."""
        d: dict = {s: dataclasses.asdict(getattr(self, s)) for s in ("model", "adapter", "task", "train")}
        if self.source is not None:
            d["model"]["from"] = dataclasses.asdict(self.source)
        return {**d, "seed": self.seed}

    def run_id(self) -> str:
        """Hash of the resolved config: the same point of any sweep gets the same id (`NOT_HASHED` left out, and a
        `HASHED_UNLESS_DEFAULT` field while at its default: a field added later keeps every earlier run's id)."""
        kept = {k: v for k, v in self.flat().items()
                if k not in NOT_HASHED and not (k in HASHED_UNLESS_DEFAULT and HASHED_UNLESS_DEFAULT[k] == v)}
        blob = json.dumps(kept, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def pack_key(self) -> tuple:
        """Members may share a pack iff their configs agree outside the `per_member` fields (and the adapter can
        pack members over this model at all: `Adapter.one_member_per_pack`)."""
        flat = self.flat()
        if ADAPTERS.get_entry(self.adapter.name).one_member_per_pack(self.model):
            return (("run_id", self.run_id()),)
        varying = {"seed"}
        for section, obj in (("model", self.model), ("adapter", self.adapter), ("task", self.task), ("train", self.train)):
            varying |= {f"{section}.{f}" for f in getattr(obj, "per_member", ())}
        return tuple(sorted((k, json.dumps(v, default=str)) for k, v in flat.items() if k not in varying))


def section_config(registry, section: str, values: dict) -> Any:
    """A registry entry's Config from a dict, typed by `ftcore.fields.coerce` (unknown keys refused, valid ones named)."""
    if not isinstance(values, dict):
        raise ValueError(f"{section}: must be a mapping of {section} fields (got {values!r})")
    name = values.get("name")
    check(isinstance(name, str), f"{section}.name", f"one of {', '.join(sorted(registry))}", name)
    return coerce(registry.get_entry(name).Config, values, section)


def member_from_dict(d: dict) -> MemberConfig:
    """Nested dict {model: {...}, adapter: {...}, task: {...}, train: {...}, seed} -> validated MemberConfig: the one
    place a member's values are typed (`coerce`: "3" -> 3 for an int field, "1e-3" -> 0.001 for a float one).
    `model.from: {run_id, dir}` (a resolved trained base) becomes `source`."""
    top = sorted(set(d) - {"model", "adapter", "task", "train", "seed"})
    if top:
        raise ValueError(f"{top[0]}: unknown key; valid: adapter, model, seed, task, train")
    model = dict(d.get("model", {}))
    source = model.pop("from", None)
    if source is not None:
        keys = set(source) if isinstance(source, dict) else set()
        check(keys == {"run_id", "dir"}, "model.from", "a resolved {run_id, dir} (a best/where selector is resolved "
              "by the sweep layer)", source)
        source = coerce(ModelFrom, source, "model.from")
    return MemberConfig(
        model=section_config(MODELS, "model", model),
        adapter=section_config(ADAPTERS, "adapter", d.get("adapter", {})),
        task=section_config(TASKS, "task", d.get("task", {})),
        train=coerce(TrainConfig, d.get("train", {}), "train"),
        seed=convert(int, d.get("seed", 0), "seed"),
        source=source,
    )
