"""The sweep spec's own rules (sweeps/spec.py holds the schema and the loading): what each section allows, checked
before any member config is built, each failure a one-line `SpecError` naming the field (CLI exit code 2)."""
from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING

from ftcore.graphs import CHOICES as GRAPH_CHOICES
from ftcore.registry import TASKS
from sweeps.errors import SpecError, fail  # noqa: F401  (SpecError: part of this module's API)
from sweeps.schema import SECTIONS

if TYPE_CHECKING:
    from ftcore.config import MemberConfig
    from sweeps.schema import ExecutionSpec, SweepSpec


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
    if ex.cuda_graphs not in GRAPH_CHOICES:
        fail(f"execution.cuda_graphs: one of {', '.join(GRAPH_CHOICES)} (got {ex.cuda_graphs!r})")
    if ex.pack_overhead < 0:
        fail(f"execution.pack_overhead: must be >= 0 (got {ex.pack_overhead})")
    if ex.max_waste < 1:
        fail(f"execution.max_waste: must be >= 1 (got {ex.max_waste})")


def check_spec(spec: SweepSpec) -> None:
    """Rules of the sections every sweep has (the search and report sections check themselves: their kinds'
    Configs in sweeps.search and analysis.report_kinds)."""
    if spec.seeds < 1:
        fail(f"seeds: must be >= 1 (got {spec.seeds})")
    check_execution(spec.execution)


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


# -- untrusted input (issue 15, item 2): each rule refuses before anything is built or written -------------------

MAX_SEEDS = 1_000              # seeds of one sweep
MAX_STEPS = 10_000_000         # train.steps of one member run
MAX_RUNS = 1_000_000           # member runs a sweep implies (grid points x seeds [x ladder or trials])
LIMITS_HINT = "--no-limits lifts this cap"
NAME_CHARS = re.compile(r"[A-Za-z0-9._-]+")


def check_name(name: object) -> None:
    """`name` becomes a path component (results/<name>) and a job name: one or more of [A-Za-z0-9._-], and
    never `..` (so no path separator and no way out of the parent directory)."""
    if not isinstance(name, str) or not NAME_CHARS.fullmatch(name) or ".." in name:
        fail(f"name: must be letters, digits, '.', '_' or '-' without '..' (it becomes a directory name) (got {name!r})")


def check_no_interpolation(tree: object, where: str = "") -> None:
    """No string (key or value) may hold `${`: OmegaConf would resolve it as an interpolation, and resolvers such
    as `${oc.env:...}` copy the environment into spec.yaml. A `$` not followed by `{` is an ordinary character."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            check_no_interpolation(k, where)
            check_no_interpolation(v, f"{where}.{k}" if where else str(k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            check_no_interpolation(v, f"{where}[{i}]")
    elif isinstance(tree, str) and "${" in tree:
        fail(f"{where or 'spec'}: ${{...}} interpolation is not allowed in a sweep spec (got {tree[:80]!r})")


def check_finite(tree: object, where: str = "") -> None:
    """Every number in the config is finite: NaN and ±inf (`.nan`, `.inf`, `lr=inf`) are refused by path."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            check_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            check_finite(v, f"{where}[{i}]")
    elif isinstance(tree, float) and not math.isfinite(tree):
        fail(f"{where}: must be a finite number (got {tree})")


def check_unique_axis_values(key: str, values: list) -> None:
    """An axis lists each value once: a repeated value (or repeated mapping) makes two grid points with the
    same run_id, which the sink refuses mid-sweep."""
    seen: set[str] = set()
    for v in values:
        canon = json.dumps(v, sort_keys=True, default=repr)
        if canon in seen:
            hint = "" if "." in key else f"; an override of a {key} field sets it in every choice"
            fail(f"axes.{key}: value {v!r} appears more than once (each grid point needs its own run_id{hint})")
        seen.add(canon)


def implied_runs(spec: SweepSpec) -> int:
    """Member runs the sweep implies, without expanding the grid or a ladder: grid points x seeds x the runs its
    search makes per point (a capacity search's probes, optuna's n_trials)."""
    points = math.prod(len(v) for v in spec.axes.values())
    return points * spec.seeds * max(spec.search.runs_per_point(), 1)


def check_sizes(spec: SweepSpec) -> None:
    """Caps on sizes a typo can blow up (each lifted by --no-limits): seeds <= MAX_SEEDS and the implied member
    runs <= MAX_RUNS (a search's own caps, such as a capacity ladder's length, are its `check`'s)."""
    if spec.seeds > MAX_SEEDS:
        fail(f"seeds: {spec.seeds} is above the cap of {MAX_SEEDS} ({LIMITS_HINT})")
    runs = implied_runs(spec)
    if runs > MAX_RUNS:
        fail(f"axes/seeds: the sweep implies {runs} member runs, above the cap of {MAX_RUNS} ({LIMITS_HINT})")


def check_range_size(key: str, lo: int, hi: int) -> None:
    """A range axis LO..HI has at most MAX_RUNS values (it is expanded into a list; --no-limits lifts this)."""
    if hi - lo + 1 > MAX_RUNS:
        fail(f"axes.{key}: range {lo}..{hi} has {hi - lo + 1} values, above the cap of {MAX_RUNS} ({LIMITS_HINT})")


def check_member_steps(members: list[MemberConfig]) -> None:
    """train.steps <= MAX_STEPS for every member (typed values, so an axis or a string override counts too)."""
    for m in members:
        if m.train.steps > MAX_STEPS:
            fail(f"train.steps: {m.train.steps} is above the cap of {MAX_STEPS} ({LIMITS_HINT})")


def check_distinct_members(members: list[MemberConfig], labels: list[str]) -> None:
    """Distinct grid points must resolve to distinct run_ids (e.g. task.n=[16, "16"] types to the same config)."""
    seen: dict[str, str] = {}
    for m, label in zip(members, labels):
        rid = m.run_id()
        if rid in seen:
            fail(f"axes: grid points {seen[rid] or '(base)'} and {label or '(base)'} resolve to the same config "
                 f"(run_id {rid}); list each axis value once")
        seen[rid] = label
