"""Sweep spec: a dataclass schema, a YAML instance, `key=value` overrides (OmegaConf), validated eagerly.

    spec = load_spec("sweeps/ftc_capacity.yaml", ["task.dim=16", "seeds=2"])

The YAML, the chosen variant and the overrides are merged as plain mappings (OmegaConf parses `key=value`), then
typed once by `ftcore.fields.coerce` against `SweepSpec`; the `search:` and `report:` sections are typed by the
`Config` of their kind's registry entry (sweeps.search.SEARCHES, analysis.report_kinds.REPORTS), which also owns
their checks. Loading builds every member config the sweep can produce (every grid point, and the ends of a
capacity ladder), so an impossible value anywhere (rank > width, N > K, an unknown registry name, an unknown key,
a wrong type, an empty axis) fails before anything is written, as a `SpecError` whose message is one line naming
the field and what is allowed.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

import ftcore.adapters  # noqa: F401  (registers entries)
import ftcore.models  # noqa: F401
import ftcore.tasks  # noqa: F401
from analysis.report_kinds import report_config_class
from ftcore.config import MemberConfig
from ftcore.fields import coerce
from sweeps.grid import build_member, group_label  # noqa: F401  (part of this module's API)
from sweeps.schema import ExecutionSpec, SweepSpec  # noqa: F401  (part of this module's API)
from sweeps.search.kinds import SEARCHES
from sweeps.spec_checks import (  # noqa: F401  (SpecError is part of this module's API)
    SECTIONS,
    SpecError,
    check_axes,
    check_data_parallel,
    check_distinct_members,
    check_finite,
    check_member_steps,
    check_name,
    check_no_interpolation,
    check_range_size,
    check_sizes,
    check_spec,
    check_unique_axis_values,
)
from sweeps.spec_checks import fail as _fail


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses what a sweep spec never needs and an attacker can use: aliases (`*name`: a
    few nested ones expand a tiny file into billions of nodes once copied) and duplicate keys at any level
    (YAML would silently keep the last one)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} is not allowed in a sweep spec "
                                              "(write the value out)", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _strict_load(text: str):
    """One YAML document through `_StrictLoader` (a SafeLoader: no Python objects are ever constructed)."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _read_text(path: Path) -> str:
    """The spec's text: a readable file of UTF-8 (anything else is refused, naming the first bad byte)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        _fail(f"{path}: cannot read spec ({e.strerror or e})")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        _fail(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save the spec as UTF-8")


def _read_yaml(path: Path) -> dict:
    text = _read_text(path)
    try:
        data = _strict_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        _fail(f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}")
    if not isinstance(data, dict):
        _fail(f"{path}: a sweep spec must be a YAML mapping (got {type(data).__name__})")
    check_no_interpolation(data)
    return data


def _merge(data: dict, overrides: list[str], limits: bool = True) -> SweepSpec:
    for o in overrides:
        if "=" not in o or o.startswith("="):
            _fail(f"override {o!r}: expected key=value")
        if "${" in o:
            _fail(f"override {o!r}: ${{...}} interpolation is not allowed")
    chosen = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "variant"]
    rest = [o for o in overrides if o.split("=", 1)[0] != "variant"]
    variant = _variant(data, chosen[-1] if chosen else data.get("variant") or "")
    try:
        vcfg = OmegaConf.create({"variant": chosen[-1]} if chosen else {})
        for key, value in variant.items():      # "axes.<axis key>": the axis key itself may hold a dot
            if key.startswith("axes."):
                OmegaConf.update(vcfg, "axes", {key[5:]: value}, merge=True, force_add=True)
            else:
                OmegaConf.update(vcfg, key, value, force_add=True)
        merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(data), vcfg, OmegaConf.from_dotlist(rest)))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        msg = str(e).splitlines()[0]
        _fail(f"{key}: {msg}" if key else msg)
    spec = _typed_spec(merged, _search_kind(data))
    _overrides_replace_axes(spec, list(variant) + [o.split("=", 1)[0] for o in rest], data)
    _resolve_range_axes(spec, limits)
    _resolve_model_from(spec, data, list(variant) + [o.split("=", 1)[0] for o in rest])
    _resolve_task_teacher(spec)
    return spec


# A spec.yaml saved before search kinds had their own configs lists every kind's fields at these values (the one
# SearchSpec schema); `_typed_spec` drops such a field when its kind does not have it, so old sweeps still resume.
LEGACY_SEARCH_DEFAULTS = {"param": "", "range": [1, 256], "ladder": [], "success": "fit/success", "quorum": 0.5,
                          "params": {}, "n_trials": 8, "batch": 4, "metric": "val/mse", "mode": "min",
                          "sampler_seed": 0, "only": {}}


def _search_kind(data: dict) -> str:
    section = data.get("search")
    return str(section.get("kind", "grid")) if isinstance(section, dict) else "grid"


def _typed_spec(d: dict, yaml_kind: str = "grid") -> SweepSpec:
    """The merged mapping as a SweepSpec, typed by `coerce`; `search:`/`report:` by their kind's Config. When a
    variant or override switched the search kind away from the YAML's (`search.kind=grid` on a capacity sweep), the
    YAML's fields of the other kind are left behind: an override cannot delete a key."""
    if not isinstance(d, dict):
        _fail(f"a sweep spec must be a mapping (got {type(d).__name__})")
    try:
        switched = _search_kind(d) != yaml_kind
        search = _kind_section(d.get("search"), "search", "grid", lambda k: SEARCHES.get_entry(k).Config, switched)
        report = _kind_section(d.get("report"), "report", "", report_config_class)
        return coerce(SweepSpec, {**d, "search": search, "report": report})
    except ValueError as e:
        _fail(str(e))


def _kind_section(section, name: str, default_kind: str, config_class, switched: bool = False):
    """A `search:`/`report:` section typed by the Config of its `kind` (ValueError naming the field otherwise);
    `switched`: keep only the fields that kind has."""
    section = {} if section is None else section
    if not isinstance(section, dict):
        raise ValueError(f"{name}: must be a mapping with a kind (got {section!r})")
    if section.get("kind") is None:               # absent, or emptied by an override (`report.kind=`)
        section = {**section, "kind": default_kind}
    cls = config_class(str(section["kind"]))
    if name == "search":
        known = {f.name for f in dataclasses.fields(cls)}
        section = {k: v for k, v in section.items()
                   if k in known or (not switched and LEGACY_SEARCH_DEFAULTS.get(k, ...) != v)}
    return coerce(cls, section, name)


def _resolve_model_from(spec: SweepSpec, data: dict, keys: list[str]) -> None:
    """`model.from` (sweeps.trained_base): the model section becomes the source run's model + `from: {dir, run_id}`;
    a model field the user gave (in the YAML, a variant or an override) must agree with that run."""
    if "from" not in spec.model:
        return
    from sweeps.trained_base import resolve_section
    given = set(data.get("model") or {}) | {k.split(".")[1] for k in keys if k.startswith("model.")}
    try:
        spec.model = resolve_section(spec.model, given, spec.axes)
    except ValueError as e:
        _fail(str(e))


def _resolve_task_teacher(spec: SweepSpec) -> None:
    """`task.teacher` (sweeps.trained_base.resolve_teacher): a distilling task's teacher, a recorded run selected like
    `model.from`; the task section gets the resolved `teacher_dir` and `teacher_run_id`."""
    if "teacher" not in spec.task and not spec.task.get("teacher_run_id"):
        return
    from sweeps.trained_base import resolve_teacher
    try:
        spec.task = resolve_teacher(spec.task, spec.axes)
    except ValueError as e:
        _fail(str(e))


def _variant(data: dict, name: str) -> dict:
    """The {dotted key: value} override set of variant `name` ({} for none)."""
    if not name:
        return {}
    variants = data.get("variants") or {}
    if not isinstance(variants, dict) or name not in variants:
        _fail(f"variant={name}: not a variant of this sweep; valid: {', '.join(map(str, variants)) or 'none defined'}")
    chosen = variants[name]
    if not isinstance(chosen, dict) or not all(isinstance(k, str) and k for k in chosen):
        _fail(f"variants.{name}: must map override keys (e.g. model.n_embd, seeds) to values")
    return chosen


def _overrides_replace_axes(spec: SweepSpec, keys: list[str], data: dict) -> None:
    """`train.method=construction` on an axis pins the axis to that value; a list value replaces the axis.
    An override of a field of a section-valued axis (`model.n_embd=256` with `axes: {model: [...]}`) sets
    that field in every choice that has it (and in the base only if the spec's base section had it)."""
    for key in keys:
        section, _, fld = key.partition(".")
        if section in spec.axes and fld and isinstance(spec.axes[section], list):
            base = getattr(spec, section)
            choices = [c for c in spec.axes[section] if isinstance(c, dict) and fld in c]
            for choice in choices:
                choice[fld] = copy.deepcopy(base[fld])
            if choices and fld not in (data.get(section) or {}):
                base.pop(fld)
        if key in spec.axes and section in SECTIONS:
            value = getattr(spec, section).pop(fld)
            spec.axes[key] = list(value) if isinstance(value, list) else [value]


def _resolve_range_axes(spec: SweepSpec, limits: bool = True) -> None:
    """An axis written "1..model.width" is the inclusive integer range, ends resolved after overrides."""
    for key, values in spec.axes.items():
        if not isinstance(values, str):
            continue
        ends = values.split("..")
        if len(ends) != 2:
            _fail(f"axes.{key}: a range axis is written LO..HI (got {values!r})")
        lo, hi = (_resolve_end(spec, key, e.strip()) for e in ends)
        if hi < lo:
            _fail(f"axes.{key}: range {values!r} is empty ({lo}..{hi})")
        if limits:
            check_range_size(key, lo, hi)
        spec.axes[key] = list(range(lo, hi + 1))


def _resolve_end(spec: SweepSpec, key: str, end: str) -> int:
    if end.lstrip("-").isdigit():
        return int(end)
    section, _, fld = end.partition(".")
    if section not in SECTIONS or fld not in getattr(spec, section):
        _fail(f"axes.{key}: range end {end!r} must be an integer or a dotted field such as model.width")
    value = getattr(spec, section)[fld]
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(f"{end}: must be an integer (got {value!r}; axes.{key} ranges up to it)")
    return value


def validate(spec: SweepSpec, limits: bool = True) -> list[MemberConfig]:
    """Build the config of every grid point (at the search's extremes, e.g. both ends of a capacity ladder) and
    return them.

    Seeds do not change validity, so each point is built at seed 0. `limits=False` (--no-limits) lifts the
    size caps (seeds, implied runs, train.steps); every other rule holds.
    """
    check_name(spec.name)
    check_finite(dataclasses.asdict(spec))
    check_spec(spec)
    spec.search.check(spec, limits)
    check_axes(spec)
    if limits:
        check_sizes(spec)
    extremes = spec.search.extremes()
    members, firsts, labels = [], [], []
    for point in spec.grid_points():
        for extra in extremes:
            members.append(build_member(spec, {**point, **extra}, 0))
        firsts.append(members[-len(extremes)])
        labels.append(group_label(point))
    for key, values in spec.axes.items():          # after building: a member's own error names its field first
        check_unique_axis_values(key, values)
    check_distinct_members(firsts, labels)
    if limits:
        check_member_steps(members)
    if members and members[0].source is not None:
        from sweeps.trained_base import check_member
        for m in members:
            try:
                check_member(m)
            except ValueError as e:
                _fail(str(e))
    if spec.execution.workers_per_trial > 1:
        check_data_parallel(members, spec.execution.workers_per_trial)
    columns = set().union(*(m.flat() for m in members))     # a section-valued axis: some columns on some choices only
    spec.search.check_columns(columns)
    try:
        spec.report.check(spec.search.kind, columns)
    except ValueError as e:
        _fail(str(e))
    return members


def load_checked(path: str | Path, overrides: list[str] = (),
                 limits: bool = True) -> tuple[SweepSpec, list[MemberConfig]]:
    """The validated spec and the configs that validation built: the one place every subcommand reads a spec,
    so every check on untrusted input (encoding, YAML, interpolation, names, numbers, sizes) runs here, before
    anything is written. `limits=False` (--no-limits) lifts the size caps only."""
    spec = _merge(_read_yaml(Path(path)), list(overrides), limits)
    return spec, validate(spec, limits)


def load_spec(path: str | Path, overrides: list[str] = (), limits: bool = True) -> SweepSpec:
    return load_checked(path, overrides, limits)[0]


def spec_to_yaml(spec: SweepSpec) -> str:
    return yaml.safe_dump(dataclasses.asdict(spec), sort_keys=False)
