"""The sweep spec's own rules (sweeps/spec.py holds the schema and the loading): what each section allows, checked
before any member config is built, each failure a one-line `SpecError` naming the field (CLI exit code 2)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ftcore.registry import TASKS

if TYPE_CHECKING:
    from ftcore.config import MemberConfig
    from sweeps.spec import ExecutionSpec, SweepSpec

SECTIONS = ("model", "adapter", "task", "train")
SEARCH_KINDS = ("grid", "capacity", "optuna")
REPORT_KINDS = ("", "capacity", "rank_curve", "icl_curve", "accuracy_table", "retrieval", "batch_selection", "needles",
                "dual_modes", "lora_threshold")


class SpecError(ValueError):
    """A user mistake in a sweep spec or override: one line, no traceback (CLI exit code 2)."""


def fail(msg: str) -> None:
    raise SpecError(msg)


WORKERS = ("tune", "train")


def check_execution(ex: ExecutionSpec) -> None:
    if ex.pack_size < 0:
        fail(f"execution.pack_size: must be >= 1, or 0 for auto (got {ex.pack_size})")
    if ex.cpus_per_trial < 1:
        fail(f"execution.cpus_per_trial: must be >= 1 (got {ex.cpus_per_trial})")
    if ex.max_failures < 0:
        fail(f"execution.max_failures: must be >= 0 (got {ex.max_failures})")
    if ex.gpus_per_trial < 0:
        fail(f"execution.gpus_per_trial: must be >= 0 (got {ex.gpus_per_trial})")
    if ex.worker not in WORKERS:
        fail(f"execution.worker: must be one of {', '.join(WORKERS)} (got {ex.worker!r})")
    if ex.workers_per_trial < 1:
        fail(f"execution.workers_per_trial: must be >= 1 (got {ex.workers_per_trial})")
    if ex.workers_per_trial > 1 and ex.worker != "train":
        fail(f"execution.workers_per_trial: {ex.workers_per_trial} needs execution.worker: train "
              f"(a Tune actor is one process) (got worker {ex.worker!r})")
    if ex.workers_per_trial > 1 and 0 < ex.gpus_per_trial < 1:
        fail(f"execution.gpus_per_trial: must be 0 or >= 1 with workers_per_trial {ex.workers_per_trial} "
              f"(NCCL refuses two ranks on one GPU) (got {ex.gpus_per_trial})")
    if not 0 < ex.memory_fraction <= 1:
        fail(f"execution.memory_fraction: must be in (0, 1] (got {ex.memory_fraction})")
    if ex.pack_overhead < 0:
        fail(f"execution.pack_overhead: must be >= 0 (got {ex.pack_overhead})")
    if ex.max_waste < 1:
        fail(f"execution.max_waste: must be >= 1 (got {ex.max_waste})")


def check_search(spec: SweepSpec) -> None:
    s = spec.search
    if s.kind not in SEARCH_KINDS:
        fail(f"search.kind: must be one of {', '.join(SEARCH_KINDS)} (got {s.kind!r})")
    if spec.report.kind not in REPORT_KINDS:
        fail(f"report.kind: must be one of {', '.join(REPORT_KINDS[1:])} or empty (got {spec.report.kind!r})")
    if spec.seeds < 1:
        fail(f"seeds: must be >= 1 (got {spec.seeds})")
    check_execution(spec.execution)
    if s.kind == "capacity":
        if not s.param or "." not in s.param:
            fail("search.param: a dotted capacity field such as adapter.width or adapter.rank is required for search.kind=capacity")
        if s.param in spec.axes:
            fail(f"search.param: {s.param} is searched, so it cannot also be a grid axis")
        ladder = s.ladder or s.range
        if not s.ladder and (len(s.range) != 2 or s.range[0] > s.range[1]):
            fail(f"search.range: must be [low, high] with low <= high (got {list(s.range)})")
        if any(int(v) != v or v < 0 for v in ladder):
            fail(f"search.ladder: capacity values must be integers >= 0 (got {list(ladder)})")
        if not 0 < s.quorum <= 1:
            fail(f"search.quorum: must be in (0, 1] (got {s.quorum})")
    if s.kind == "optuna":
        if not s.params:
            fail("search.params: at least one parameter range is required for search.kind=optuna")
        for name, r in s.params.items():
            if not name.startswith("train.") or name.split(".", 1)[1] not in ("lr", "weight_decay"):
                fail(f"search.params.{name}: only train.lr and train.weight_decay are tuned per member")
            if not r.low < r.high or (r.log and r.low <= 0):
                fail(f"search.params.{name}: need low < high (and low > 0 when log) (got {r.low}, {r.high})")
        if s.n_trials < 1 or s.batch < 1:
            fail("search.n_trials and search.batch: must be >= 1")
        if s.mode not in ("min", "max"):
            fail(f"search.mode: must be min or max (got {s.mode!r})")


def check_axes(spec: SweepSpec) -> None:
    for key, values in spec.axes.items():
        section = key.split(".", 1)[0]
        if section not in SECTIONS:
            fail(f"axes.{key}: axis keys are dotted fields of {', '.join(SECTIONS)} (e.g. task.n) or a section "
                  "name with a list of mappings (e.g. model: [{name: mamba}, {name: transformer}])")
        if not isinstance(values, list) or not values:
            fail(f"axes.{key}: must be a non-empty list of values")
        if "." not in key:
            for i, v in enumerate(values):
                if not isinstance(v, dict) or not v:
                    fail(f"axes.{key}[{i}]: a section-valued axis takes mappings of {key} fields "
                          f"(e.g. {{name: ..., ...}}), got {v!r}")


def check_data_parallel(members: list[MemberConfig], n: int) -> None:
    """workers_per_trial > 1 shards each member's batch by rows (ftcore.distributed): only for losses that are
    row-weighted sums, with the task's own batches."""
    for m in members:
        if not TASKS.get_entry(m.task.name).row_loss:
            fail(f"execution.workers_per_trial: {n} needs a task whose loss is a sum over rows; task "
                  f"'{m.task.name}' couples its batch's rows (use 1)")
        if m.train.batch_selection != "task":
            fail(f"execution.workers_per_trial: {n} needs train.batch_selection: task (got {m.train.batch_selection!r})")
