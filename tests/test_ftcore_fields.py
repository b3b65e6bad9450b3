"""ftcore.fields.coerce, the one typed boundary: every registry entry's Config (and the train, search and report
sections) is typed from its dataclass fields, and a wrong value is one line naming the dotted field."""
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

import ftcore  # noqa: F401  (registers every entry)
from analysis.report_kinds import REPORTS, ReportConfig
from ftcore.config import TrainConfig
from ftcore.fields import coerce
from ftcore.registry import ADAPTERS, MODELS, TASKS
from sweeps.search.kinds import SEARCHES


@dataclass
class Inner:
    low: float
    log: bool = True


@dataclass
class Sample:
    n: int = 1
    lr: float = 0.1
    on: bool = False
    name: str = "a"
    alpha: float | None = None
    layers: list[int] = field(default_factory=list)
    ranges: dict[str, Inner] = field(default_factory=dict)
    free: Any = None


def test_values_take_their_fields_types():
    s = coerce(Sample, {"n": "3", "lr": "1e-3", "on": "yes", "name": 5, "alpha": 2, "layers": ["1", 2.0],
                        "ranges": {"train.lr": {"low": "1", "log": "false"}}, "free": "x"})
    assert s == Sample(3, 1e-3, True, "5", 2.0, [1, 2], {"train.lr": Inner(1.0, False)}, "x")
    assert type(s.alpha) is float and type(s.n) is int and coerce(Sample, {"alpha": None}).alpha is None
    assert coerce(Sample, {"n": 4.0}).n == 4 and type(coerce(Sample, {"lr": 2}).lr) is float


@pytest.mark.parametrize("values,message", [
    ({"n": "abc"}, "x.n: must be an integer (got 'abc')"),
    ({"n": 2.5}, "x.n: must be an integer"),
    ({"n": True}, "x.n: must be an integer"),
    ({"lr": "inf"}, "x.lr: must be a finite number"),
    ({"lr": math.nan}, "x.lr: must be a finite number"),
    ({"on": "maybe"}, "x.on: must be true or false"),
    ({"name": [1]}, "x.name: must be a string"),
    ({"layers": 3}, "x.layers: must be a list"),
    ({"layers": [1, "b"]}, "x.layers[1]: must be an integer"),
    ({"ranges": {"p": {"log": True}}}, "x.ranges.p.low: required"),
    ({"ranges": {"p": {"low": 1, "hi": 2}}}, "x.ranges.p.hi: unknown key; valid: log, low"),
    ({"widht": 3}, "x.widht: unknown key; valid: alpha, free, layers, lr, n, name, on, ranges"),
])
def test_a_wrong_value_is_one_line_naming_the_field(values, message):
    with pytest.raises(ValueError) as e:
        coerce(Sample, values, "x")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def _configs():
    for registry in (MODELS, ADAPTERS, TASKS):
        for name, entry in sorted(registry.items()):
            if not name.startswith("_"):
                yield f"{registry.kind}.{name}", entry.Config
    yield "train", TrainConfig
    for name, entry in sorted(SEARCHES.items()):
        yield f"search.{name}", entry.Config
    for name, entry in sorted(REPORTS.items()):
        yield f"report.{name}", entry.Config
    yield "report", ReportConfig


def _defaults(cls):
    if cls in (MODELS["hf_causal_lm"].Config, MODELS["hf_vlm"].Config, MODELS["hf_backbone"].Config):
        # no usable default: a hub id, never fetched
        return cls(path="org/some-model", download=True)
    if cls is SEARCHES["capacity"].Config:
        return cls(param="adapter.width")
    if cls is SEARCHES["optuna"].Config:
        return coerce(cls, {"params": {"train.lr": {"low": 1e-3, "high": 1e-1}}})
    return cls()


def _as_text(v):
    """A value as the text an override would give (`key=value` before typing)."""
    if isinstance(v, dict):
        return {k: _as_text(u) for k, u in v.items()}
    if isinstance(v, (list, tuple)):
        return [_as_text(u) for u in v]
    return v if v is None else str(v)


@pytest.mark.parametrize("where,cls", list(_configs()), ids=[w for w, _ in _configs()])
def test_every_config_round_trips_through_the_boundary(where, cls):
    """Contract over every registry entry: its defaults, written out as a mapping, type back to the same config,
    and so do they when every scalar arrives as text (as from a `key=value` override)."""
    cfg = _defaults(cls)
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if f.init}
    values = {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v) for k, v in values.items()}
    values = {k: ({n: dataclasses.asdict(r) for n, r in v.items()} if k == "params" else v) for k, v in values.items()}
    assert coerce(cls, values, where) == cfg
    assert coerce(cls, _as_text(values), where) == cfg
