"""A sweep's grid: its points as {dotted key: value}, their labels, and the typed member config of a point × seed.

`build_member` is the only way a sweep turns a point into a config: the spec's base sections with the point
applied (`SweepSpec.member_dict`), typed and validated once by `ftcore.config.member_from_dict` (the one typed
boundary). Searches and validation both call it; workers receive the resulting configs' nested form and type it
once at the trial's entry (sweeps/execute.py).
"""
from __future__ import annotations

from typing import Any

from ftcore.config import MemberConfig, member_from_dict
from sweeps.schema import SweepSpec
from sweeps.spec_checks import fail


def group_label(point: dict[str, Any], exclude: tuple[str, ...] = ()) -> str:
    """'model.n_layer=2,task.dim=3'; a section-valued axis contributes one dotted item per key of its mapping."""
    items = []
    for k, v in point.items():
        if k in exclude:
            continue
        items += [f"{k}.{f}={u}" for f, u in v.items()] if isinstance(v, dict) else [f"{k}={v}"]
    return ",".join(items)


def build_member(spec: SweepSpec, point: dict, seed: int) -> MemberConfig:
    """The validated member config of one grid point (dotted key -> value) and seed; SpecError if impossible."""
    try:
        return member_from_dict(spec.member_dict(point, seed))
    except (ValueError, TypeError) as e:
        where = f" (at {group_label(point)})" if point else ""
        fail(f"{e}{where}")
