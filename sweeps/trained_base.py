"""`model.from`: a recorded run's trained model as the frozen base of a new sweep (DESIGN.md §7).

    model:
      from: {dir: results/pretrain, run_id: 3f2a...}                        # one run
      from: {dir: results/pretrain, best: val/loss, mode: min,              # the best run where the
             where: {adapter.name: full}}                                   # columns have these values

Resolved once per spec load (so `ftsweep validate`, `run`, `submit` and `resume` all see it) by reading the
runs of DIR (a path or a URI) through the sink: the model section becomes that run's `model.*` config, plus
`from: {dir, run_id}` (the resolved id, so a resume never re-picks a "best"), and every member carries it
(`MemberConfig.source`: columns `model.from.run_id`, in the run_id, and `model.from.dir`, not in it). A model
field the user also gave that disagrees with the run is an error naming it; so are a missing dir, a dir with
no runs, a run without a checkpoint, a selector matching no run (or several), a `best` that is not a
column, a bad `mode`, a base whose trained change cannot be merged, and a task whose input/output sizes differ
from the source run's. Errors are ValueError, one line; the spec loader turns them into SpecError (exit 2).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ftcore.checkpoint import checkpoint_path, relative_path
from ftcore.config import HASHED_UNLESS_DEFAULT, MemberConfig, ModelFrom, TrainConfig, member_from_dict
from ftcore.fields import convert, field_types
from ftcore.registry import ADAPTERS, MODELS, TASKS

SELECTOR_KEYS = ("dir", "run_id", "best", "mode", "where")
MODES = ("min", "max")


@dataclass(frozen=True)
class Source:
    dir: str                 # normalized: an absolute path, or the URI as given
    run_id: str
    member: MemberConfig     # the source run's own config (rebuilt from its row)


_SOURCES: dict[tuple[str, str], Source] = {}


def resolve_section(model: dict, given: set[str], axes: dict) -> dict:
    """The model section of a spec whose model has `from`: the source run's model config + `from: {dir, run_id}`.
    `given`: the model fields the user wrote (YAML, variant, overrides); `axes`: checked for model fields too."""
    source = resolve(model["from"])
    cfg = source.member.model
    for k in sorted(given - {"from"}):
        if k in model:           # an override of an axis choice's field lives in the choices (checked below)
            _agree(f"model.{k}", k, model[k], cfg, source)
    for key, values in axes.items():
        if key == "model":
            for i, choice in enumerate(values if isinstance(values, list) else []):
                for k, v in (choice.items() if isinstance(choice, dict) else []):
                    _agree(f"axes.model[{i}].{k}", k, v, cfg, source)
        elif key.startswith("model.") and isinstance(values, list):
            for v in values:
                _agree(f"axes.{key}", key[len("model."):], v, cfg, source)
    return {**dataclasses.asdict(cfg), "from": {"dir": source.dir, "run_id": source.run_id}}


def _agree(label: str, fld: str, value, cfg, source: Source) -> None:
    """A user-given model field must equal the source run's (compared after typing it like the schema does)."""
    if fld.startswith("from"):
        return
    known = {f.name for f in dataclasses.fields(cfg)}
    if fld not in known:
        raise ValueError(f"{label}: unknown key for model '{cfg.name}' (the base of model.from run {source.run_id}); "
                         f"valid: {', '.join(sorted(known))}")
    ours = getattr(cfg, fld)
    try:
        typed = convert(field_types(type(cfg))[fld], value, label)
    except ValueError:
        typed = value
    if typed != ours and not (isinstance(ours, (list, tuple)) and list(ours) == typed):
        raise ValueError(f"{label}: {value!r} disagrees with the model of model.from run {source.run_id} "
                         f"(model.{fld}={ours!r}); leave it out or give the same value")


def resolve(selector, label: str = "model.from") -> Source:
    """`model.from` (a mapping: dir + run_id, or dir + best + mode [+ where]) -> the source run. `label`: the field
    its errors name (`task.teacher` for a teacher selected alike)."""
    if not isinstance(selector, dict):
        raise ValueError(f"{label}: must be a mapping {{dir, run_id}} or {{dir, best, mode, where}} (got {selector!r})")
    bad = sorted(set(selector) - set(SELECTOR_KEYS))
    if bad:
        raise ValueError(f"{label}.{bad[0]}: unknown key; valid: {', '.join(SELECTOR_KEYS)}")
    if not selector.get("dir") or not isinstance(selector["dir"], str):
        raise ValueError(f"{label}.dir: the output directory (path or URI) of the sweep that trained the base is "
                         f"required (got {selector.get('dir')!r})")
    has_id, has_best = selector.get("run_id") is not None, selector.get("best") is not None
    if has_id == has_best:
        raise ValueError(f"{label}: give exactly one of run_id, or best (with mode and optionally where)")
    if has_id and (selector.get("mode") is not None or selector.get("where")):
        raise ValueError(f"{label}: mode and where select among runs with best; with run_id leave them out")
    where, rows = _runs(selector["dir"], label)
    if has_id:
        row = _by_id(rows, str(selector["run_id"]), where, label)
    else:
        row = _best(rows, selector, where, label)
    rid = row["run_id"]
    key = (where, rid)
    if key not in _SOURCES:
        _SOURCES[key] = _source(where, row, label)
    return _SOURCES[key]


def _runs(dir_: str, label: str) -> tuple[str, list[dict]]:
    """(normalized dir, its committed runs rows); ValueError for a missing dir or one that holds no runs.
    Reads only: nothing is created in DIR (the sink is opened only where runs/ and curves/ exist)."""
    from sweeps.sink import ResultSink
    from sweeps.storage import Location
    try:
        loc = Location.of(dir_)
        if not loc.exists():
            raise ValueError(f"{label}.dir: {dir_} does not exist (run the sweep that writes it first, or give "
                             f"{label}.dir=DIR)")
        if not loc.child("runs").exists() or not loc.child("curves").exists():
            raise ValueError(f"{label}.dir: {dir_} holds no runs/ (not a sweep output directory)")
        rows = ResultSink(loc).read_rows("runs")
    except ValueError:
        raise
    except Exception as e:                 # noqa: BLE001 (pyarrow: unreachable URI, credentials, corrupt part, ...)
        raise ValueError(f"{label}.dir: cannot read {dir_} ({' '.join(str(e).split())[:200]})") from None
    if not rows:
        raise ValueError(f"{label}.dir: {dir_} holds no recorded runs")
    return loc.where, rows


def _by_id(rows: list[dict], rid: str, where: str, label: str) -> dict:
    hits = [r for r in rows if r.get("run_id") == rid]
    if not hits:
        raise ValueError(f"{label}.run_id: no run {rid} in {where}")
    if len(hits) > 1:
        raise ValueError(f"{label}.run_id: {rid} matches {len(hits)} rows in {where} (one expected)")
    if not hits[0].get("checkpoint"):
        raise ValueError(f"{label}.run_id: run {rid} in {where} has no checkpoint (train it with train.save: final)")
    return hits[0]


def _best(rows: list[dict], selector: dict, where: str, label: str) -> dict:
    metric, mode, filt = selector["best"], selector.get("mode"), selector.get("where") or {}
    columns = sorted(set().union(*rows))
    if mode not in MODES:
        raise ValueError(f"{label}.mode: must be one of {', '.join(MODES)} (got {mode!r})")
    if not isinstance(metric, str) or metric not in columns:
        metrics = [c for c in columns if "/" in c]
        raise ValueError(f"{label}.best: {metric!r} is not a column of the runs in {where}; "
                         f"metrics: {', '.join(metrics) or 'none'}")
    if not isinstance(filt, dict):
        raise ValueError(f"{label}.where: must map columns to values (got {filt!r})")
    for col in filt:
        if col not in columns:
            raise ValueError(f"{label}.where: {col!r} is not a column of the runs in {where}")
    chosen = [r for r in rows if all(_same(r.get(c), v) for c, v in filt.items())]
    with_ckpt = [r for r in chosen if r.get("checkpoint") and _finite(r.get(metric))]
    if not with_ckpt:
        what = f"where {filt}" if filt else "at all"
        raise ValueError(f"{label}: no run in {where} matches {what} with a checkpoint and a finite {metric} "
                         f"({len(chosen)} match, {sum(bool(r.get('checkpoint')) for r in chosen)} with a checkpoint)")
    sign = 1.0 if mode == "min" else -1.0
    return min(with_ckpt, key=lambda r: (sign * float(r[metric]), r["run_id"]))     # ties: the smaller run_id


def _same(ours, theirs) -> bool:
    return ours == theirs or (ours is not None and str(ours) == str(theirs))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _source(where: str, row: dict, label: str) -> Source:
    """The source run's config from its row's config columns; checks that its checkpoint exists and that its
    trained change can be merged into a base."""
    from sweeps.storage import Location
    rid = row["run_id"]
    try:
        member = row_member(row)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{label}: the config of run {rid} in {where} does not load ({e})") from None
    if not ADAPTERS.get_entry(member.adapter.name).mergeable:
        raise ValueError(f"{label}: run {rid} trained adapter '{member.adapter.name}', which cannot be merged "
                         "into a base; choose a run of a mergeable adapter (full, lora, bias_only, last_layers)")
    path = checkpoint_path(ModelFrom(run_id=rid, dir=where))
    try:
        present = Location.of(path).exists()
    except Exception:                                   # noqa: BLE001 (pyarrow raises many kinds)
        present = False
    if not present:
        raise ValueError(f"{label}: run {rid}'s checkpoint {relative_path(rid)} is missing from {where}")
    return Source(where, rid, member)


def row_member(row: dict) -> MemberConfig:
    """A runs row's config columns (`model.width`, `train.lr`, `model.from.run_id`, ...) -> its MemberConfig.
    Only the fields of the row's own registry entries are read (a part's other rows may add null columns)."""
    d: dict = {"seed": int(row.get("seed", 0))}
    for section, registry in (("model", MODELS), ("adapter", ADAPTERS), ("task", TASKS), ("train", None)):
        cls = TrainConfig if registry is None else registry.get_entry(row.get(f"{section}.name")).Config
        d[section] = {f.name: row[f"{section}.{f.name}"] for f in dataclasses.fields(cls)
                      if f"{section}.{f.name}" in row and not _added_later_and_absent(f"{section}.{f.name}", row)}
    if row.get("model.from.run_id"):
        d["model"]["from"] = {"run_id": row["model.from.run_id"], "dir": row["model.from.dir"]}
    return member_from_dict(d)


def _added_later_and_absent(key: str, row: dict) -> bool:
    """A field added after the row was written (`HASHED_UNLESS_DEFAULT`) reads as null in a part that mixes old and
    new rows: the row then means the field's default (what every run before the field did)."""
    value = row[key]
    return key in HASHED_UNLESS_DEFAULT and (value is None or (isinstance(value, float) and math.isnan(value)))


def check_member(m: MemberConfig) -> None:
    """A member over a trained base: its task must feed the base what the source's task fed it."""
    if m.source is None:
        return
    key = (m.source.dir, m.source.run_id)
    src = _SOURCES.get(key) or resolve({"dir": m.source.dir, "run_id": m.source.run_id})
    theirs = TASKS.get_entry(src.member.task.name).io_dims(src.member.task, src.member.model)
    ours = TASKS.get_entry(m.task.name).io_dims(m.task, m.model)
    if tuple(ours) != tuple(theirs):
        raise ValueError(f"task.name: task '{m.task.name}' feeds the base (in, out) = {tuple(ours)}, but the base of "
                         f"model.from run {src.run_id} was trained with (in, out) = {tuple(theirs)} "
                         f"(task '{src.member.task.name}')")
    TASKS.get_entry(m.task.name).check_source(m.task, src.member.task)


def resolve_teacher(task: dict, axes: dict) -> dict:
    """`task.teacher` (distillation, e.g. `feature_retrieval`): a `model.from`-style selector {dir, run_id | best +
    mode + where} naming the recorded run whose trained model the task loads as its teacher. Resolved once per spec
    load like `model.from` (same rules and errors, labelled task.teacher): the task section gets `teacher_dir` and
    `teacher_run_id` in place of the selector, so the teacher's run_id is part of each member's config and run_id.
    A section that already holds the resolved pair (a saved spec.yaml on resume) is checked the same way. The task
    class's `check_teacher(cfg, teacher_task_cfg, run_id)` says whether it can distil from that run, for the task
    section and for every value of an axis over a task field."""
    task = dict(task)
    selector = task.pop("teacher", None)
    if selector is None:
        if not task.get("teacher_run_id"):
            return task
        selector = {"dir": task.get("teacher_dir"), "run_id": task["teacher_run_id"]}
    elif task.get("teacher_run_id") or task.get("teacher_dir"):
        raise ValueError("task.teacher: give the selector {dir, best, mode} or the resolved teacher_run_id and "
                         "teacher_dir, not both")
    cls = TASKS.get_entry(task.get("name"))
    check_teacher = getattr(cls, "check_teacher", None)
    if check_teacher is None:
        raise ValueError(f"task.teacher: task '{task.get('name')}' does not distil from a teacher")
    source = resolve(selector, "task.teacher")
    task.update(teacher_dir=source.dir, teacher_run_id=source.run_id)
    variants = [task]
    for key, values in axes.items():
        if key.startswith("task.") and isinstance(values, list):
            variants += [{**task, key[len("task."):]: v} for v in values]
    for v in variants:
        check_teacher(convert(cls.Config, v, "task"), source.member.task, source.run_id)
    return task
