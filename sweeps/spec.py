"""Sweep spec: a dataclass schema, a YAML instance, `key=value` overrides (OmegaConf), validated eagerly.

    spec = load_spec("sweeps/ftc_capacity.yaml", ["task.dim=16", "seeds=2"])

Loading builds every member config the sweep can produce (every grid point × seed, and for a capacity
search both ends of the ladder), so an impossible value anywhere (rank > width, N > K, an unknown
registry name, an unknown key, a wrong type, an empty axis) fails before anything is written, as a
`SpecError` whose message is one line naming the field and what is allowed.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import ftcore.adapters  # noqa: F401  (registers entries)
import ftcore.models  # noqa: F401
import ftcore.tasks  # noqa: F401
from ftcore.config import MemberConfig, TrainConfig, member_from_dict
from ftcore.registry import ADAPTERS, MODELS, TASKS
from sweeps.search.capacity import make_ladder
from sweeps.spec_checks import (  # noqa: F401  (SpecError and the kinds are part of this module's API)
    REPORT_KINDS,
    SEARCH_KINDS,
    SECTIONS,
    SpecError,
    check_axes,
    check_data_parallel,
    check_distinct_members,
    check_unique_axis_values,
    check_finite,
    check_member_steps,
    check_name,
    check_no_interpolation,
    check_range_size,
    check_search,
    check_sizes,
)
from sweeps.spec_checks import fail as _fail



@dataclass
class ParamRange:
    low: float = MISSING
    high: float = MISSING
    log: bool = True


@dataclass
class SearchSpec:
    kind: str = "grid"
    # capacity: smallest `param` value on the ladder where `success` holds for `quorum` of the seeds
    param: str = ""
    range: List[int] = field(default_factory=lambda: [1, 256])
    ladder: List[int] = field(default_factory=list)     # explicit ladder; overrides range
    success: str = "fit/success"
    quorum: float = 0.5
    # optuna: per group, a seeded TPE study over `params`, scored by the median over seeds of `metric`
    params: Dict[str, ParamRange] = field(default_factory=dict)
    n_trials: int = 8
    batch: int = 4
    metric: str = "val/mse"
    mode: str = "min"
    sampler_seed: int = 0
    only: Dict[str, Any] = field(default_factory=dict)   # tune only groups matching these values

    def ladder_values(self) -> list[int]:
        """The capacity ladder: `ladder` if given, else every integer in `range`."""
        return make_ladder(self.range[0], self.range[1], self.ladder)


@dataclass
class ReportSpec:
    kind: str = ""
    x: str = ""
    y: str = ""
    select: str = ""
    curve_by: List[str] = field(default_factory=list)
    panel_by: List[str] = field(default_factory=list)
    theory: Dict[str, float] = field(default_factory=dict)


@dataclass
class ExecutionSpec:
    pack_size: int = 0            # most members in one Tune trial; 0 = auto (memory and slots, sweeps/pack_size.py)
    max_waste: float = 1.5        # padded cost / real cost allowed when sharing a pack
    pack_overhead: float = 65536  # fixed per-step cost of a pack, in rows × capacity units (sweeps/plan.py)
    cpus_per_trial: int = 1       # CPUs per trial (torch threads)
    gpus_per_trial: float = 0.0   # > 0: members train on CUDA; fractions share a GPU between trials
    worker: str = "tune"          # tune: packs run in the (reused) Tune trial actor; train: each trial launches a Ray Train worker
    workers_per_trial: int = 1    # worker: train only: Ray Train workers per trial, each its rows of every batch (data parallel)
    memory_fraction: float = 0.5  # share of a node's memory (GPU memory when on GPU) the packs of all slots may use
    max_failures: int = 2         # Tune retries of a failed trial


@dataclass
class SweepSpec:
    name: str = MISSING
    model: Dict[str, Any] = field(default_factory=lambda: {"name": "mlp"})
    adapter: Dict[str, Any] = field(default_factory=dict)
    task: Dict[str, Any] = field(default_factory=dict)
    train: Dict[str, Any] = field(default_factory=dict)
    axes: Dict[str, Any] = field(default_factory=dict)    # key -> list of values, or "LO..HI" (ints or dotted refs);
    # a bare section name ("model") is a section-valued axis: a list of mappings, each merged over that section
    seeds: int = 3
    search: SearchSpec = field(default_factory=SearchSpec)
    report: ReportSpec = field(default_factory=ReportSpec)
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)
    # named override sets: `ftsweep run X.yaml variant=gpu` applies variants["gpu"] ({dotted key: value}) before the
    # command line's own overrides (which still win) — the paper-sized run of a CPU-sized sweep in one override
    variants: Dict[str, Any] = field(default_factory=dict)
    variant: str = ""

    # -- expansion ---------------------------------------------------------------------------------
    def base_dict(self) -> dict:
        return {s: copy.deepcopy(getattr(self, s)) for s in SECTIONS}

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the axes, as {dotted key: value}, in axes order."""
        keys = list(self.axes)
        return [dict(zip(keys, vals)) for vals in itertools.product(*(self.axes[k] for k in keys))]

    def member_dict(self, point: dict[str, Any], seed: int) -> dict:
        """The base sections with the point applied: section-valued axes first (their mapping's keys replace
        the section's), then dotted axes (so `model.n_layer` varies inside every choice of `model`)."""
        d = self.base_dict()
        for key, value in sorted(point.items(), key=lambda kv: "." in kv[0]):
            if "." in key:
                section, fld = key.split(".", 1)
                d[section][fld] = value
            else:
                d[key].update(copy.deepcopy(value))
        d["seed"] = seed
        return d

    def seed_list(self) -> list[int]:
        return list(range(self.seeds))


def group_label(point: dict[str, Any], exclude: tuple[str, ...] = ()) -> str:
    """'model.n_layer=2,task.dim=3'; a section-valued axis contributes one dotted item per key of its mapping."""
    items = []
    for k, v in point.items():
        if k in exclude:
            continue
        items += [f"{k}.{f}={u}" for f, u in v.items()] if isinstance(v, dict) else [f"{k}={v}"]
    return ",".join(items)


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
        cfg = OmegaConf.merge(OmegaConf.structured(SweepSpec), OmegaConf.create(data), vcfg, OmegaConf.from_dotlist(rest))
        spec = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        msg = str(e).splitlines()[0]
        _fail(f"{key}: {msg}" if key else msg)
    _overrides_replace_axes(spec, list(variant) + [o.split("=", 1)[0] for o in rest], data)
    _resolve_range_axes(spec, limits)
    _resolve_model_from(spec, data, list(variant) + [o.split("=", 1)[0] for o in rest])
    return spec


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


SECTION_REGISTRIES = {"model": MODELS, "adapter": ADAPTERS, "task": TASKS}


_TYPED_CACHE: dict[str, dict] = {}


def _typed(d: dict) -> dict:
    """Coerce every section to its schema's field types ("3" -> 3; "abc" for an int is an error).

    Memoized on the sections (an OmegaConf structured merge costs ~5 ms, and the seeds of a grid point share
    their sections: 2,000 runs spent 10 s here before the first round)."""
    key = json.dumps({s: d[s] for s in SECTIONS}, sort_keys=True, default=repr)
    if key not in _TYPED_CACHE:
        if len(_TYPED_CACHE) > 20_000:
            _TYPED_CACHE.clear()
        _TYPED_CACHE[key] = _typed_sections(d)
    return {**d, **copy.deepcopy(_TYPED_CACHE[key])}


def _typed_sections(d: dict) -> dict:
    out = {}
    for section in SECTIONS:
        values = d[section]
        source = values.get("from") if section == "model" else None     # model.from: resolved, kept as is
        values = {k: v for k, v in values.items() if not (section == "model" and k == "from")}
        if section == "train":
            cls = TrainConfig
        else:
            name = values.get("name")
            if name not in SECTION_REGISTRIES[section]:
                continue                      # member_from_dict reports the unknown name with the valid ones
            cls = SECTION_REGISTRIES[section][name].Config
        known = {f.name for f in dataclasses.fields(cls)}
        if set(values) - known:
            continue                          # member_from_dict names the unknown key and the valid ones
        try:
            typed = OmegaConf.merge(OmegaConf.structured(cls), values)
        except OmegaConfBaseException as e:
            msg = str(e).splitlines()[0]
            _fail(f"{section}.{getattr(e, 'full_key', '') or ''}: {msg}")
        out[section] = {k: v for k, v in OmegaConf.to_container(typed).items()}
        if source is not None:
            out[section]["from"] = source
    return out


def build_member(spec: SweepSpec, point: dict, seed: int) -> MemberConfig:
    """The validated member config of one grid point (dotted key -> value) and seed; SpecError if impossible."""
    typed = _typed(spec.member_dict(point, seed))
    check_finite({s: typed[s] for s in SECTIONS})      # typed: "inf" for a float field is a number here
    try:
        return member_from_dict(typed)
    except ValueError as e:
        where = f" (at {group_label(point)})" if point else ""
        _fail(f"{e}{where}")
    except TypeError as e:
        _fail(f"{e}")


def validate(spec: SweepSpec, limits: bool = True) -> list[MemberConfig]:
    """Build the config of every grid point (at both ends of a capacity ladder) and return them.

    Seeds do not change validity, so each point is built at seed 0. `limits=False` (--no-limits) lifts the
    size caps (seeds, implied runs, train.steps); every other rule holds.
    """
    check_name(spec.name)
    check_finite(dataclasses.asdict(spec))
    check_search(spec)
    check_axes(spec)
    if limits:
        check_sizes(spec)
    extremes = [{}]
    if spec.search.kind == "capacity":
        ladder = spec.search.ladder_values()
        extremes = [{spec.search.param: ladder[0]}, {spec.search.param: ladder[-1]}]
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
    flat = members[0].flat()
    if spec.search.kind == "capacity" and spec.search.param not in flat:
        _fail(f"search.param: {spec.search.param} is not a field of this sweep's configs; valid: {', '.join(sorted(flat))}")
    columns = set().union(*(m.flat() for m in members))     # a section-valued axis: some columns on some choices only
    for key in [spec.report.x, *spec.report.curve_by, *spec.report.panel_by]:
        if key and key not in columns:
            _fail(f"report: {key} is not a config column; valid: {', '.join(sorted(columns))}")
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
