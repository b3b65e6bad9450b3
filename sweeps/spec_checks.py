"""The sweep spec's own rules (sweeps/spec.py holds the schema and the loading): what each section allows, checked
before any member config is built, each failure a one-line `SpecError` naming the field (CLI exit code 2)."""
from __future__ import annotations

import json
import math
import re
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
    """Member runs the sweep implies, without expanding the grid or the ladder: grid points x seeds, times the
    bisection probes of a capacity search (log2 of the ladder length, + 2 for its ends) or n_trials of optuna."""
    points = math.prod(len(v) for v in spec.axes.values())
    s = spec.search
    ladder = len(s.ladder) or max(int(s.range[1]) - int(s.range[0]) + 1, 1)
    per_point = {"capacity": (ladder - 1).bit_length() + 2, "optuna": s.n_trials}.get(s.kind, 1)
    return points * spec.seeds * max(per_point, 1)


def check_sizes(spec: SweepSpec) -> None:
    """Caps on sizes a typo can blow up (each lifted by --no-limits): seeds <= MAX_SEEDS, a capacity ladder and
    the implied member runs <= MAX_RUNS. Checked before the grid or the ladder is expanded."""
    if spec.seeds > MAX_SEEDS:
        fail(f"seeds: {spec.seeds} is above the cap of {MAX_SEEDS} ({LIMITS_HINT})")
    s = spec.search
    if s.kind == "capacity" and not s.ladder and s.range[1] - s.range[0] + 1 > MAX_RUNS:
        fail(f"search.range: {list(s.range)} is a ladder of {s.range[1] - s.range[0] + 1} values, above the cap of "
             f"{MAX_RUNS} ({LIMITS_HINT})")
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
