"""How one sweep's rows are organised for reporting: its `search.*`/`report.*` columns, curve and
panel labels, and axes that vary without being named in `report.curve_by`/`report.panel_by`.

A *cell* is one point of one curve: the values of (panel_by, curve_by, report.x). Inside a cell only
the seed, the searched parameter and (for rank curves) the tuned hyper-parameters may vary. Any other
config column that varies inside a cell is a *hidden axis*: averaging over it would silently mix,
say, K = 64 and K = 256 into one threshold, so it is promoted to a curve column and flagged.

Labels are "col=value" joined by "," in column order (the format of `report.theory`'s keys), with
values written canonically (`canon`) so that 2, 2.0 and "2" or True and "true" compare equal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.report_kinds import COLUMNS as REPORT_COLUMNS
from analysis.report_kinds import ReportConfig, config_from_columns

SEED_COLUMNS = ("seed",)  # plus any dotted column ending in ".seed"
NOT_CONFIG_PREFIXES = ("search.", "report.", "version")


def canon(v) -> str:
    """Canonical text of a config value: bools as true/false, integral numbers without ".0"."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "na"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    if isinstance(v, str):
        if v.strip().lower() in ("true", "false"):
            return v.strip().lower()
        try:
            return canon(float(v))
        except ValueError:
            return v
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(canon(u) for u in v) + "]"
    return str(v)


def value_key(v) -> tuple:
    """Sort key putting numbers in numeric order (2 before 10), then other values as text."""
    text = canon(v)
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def sort_cells(table: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """Row order of `table` by the values of `cols` (value_key order): panels, curves, then x."""
    return np.array(sorted(range(len(table)), key=lambda i: tuple(value_key(table[c].iloc[i]) for c in cols)),
                    dtype=int)


def require(runs: pd.DataFrame, cols, what: str) -> None:
    """ValueError naming the columns of `cols` (from `what`, e.g. report.curve_by) missing in runs."""
    missing = [c for c in cols if c not in runs.columns]
    if missing:
        raise ValueError(f"{what} names column(s) not in runs: {', '.join(missing)}")


def label(cols, values) -> str:
    """'a=1,b=true' for columns `cols` and their `values` (same order); '' when there are no columns."""
    return ",".join(f"{c}={canon(v)}" for c, v in zip(cols, values))


def parse_label(text: str) -> dict[str, str]:
    """Inverse of `label` (values canonicalised): 'adapter.depth=2' -> {'adapter.depth': '2'}."""
    out = {}
    for item in filter(None, (s.strip() for s in str(text).split(","))):
        col, _, val = item.partition("=")
        out[col.strip()] = canon(val.strip())
    return out


def theory_for(theory: dict, values: dict) -> float | None:
    """The theory slope whose label matches `values` (col -> raw value); the most specific key wins.

    A key matches when every column it names has that value; the empty key matches everything.
    """
    best, best_n = None, -1
    for key, slope in theory.items():
        want = parse_label(key)
        if all(c in values and canon(values[c]) == v for c, v in want.items()) and len(want) > best_n:
            try:
                best, best_n = float(slope), len(want)
            except (TypeError, ValueError):
                continue
    return best


def _text(v) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
        return None
    return str(v).strip()


@dataclass(frozen=True)
class SweepMeta:
    """The reporting instructions a sweep wrote on each of its rows (constant within the sweep): its search.*
    columns, and its report.* columns as the kind's typed Config (`report`, analysis.report_kinds) and flat."""
    sweep: str
    search_kind: str | None = None
    param: str | None = None
    success: str | None = None
    quorum: float = 1.0
    report_kind: str | None = None
    x: str | None = None
    curve_by: tuple[str, ...] = ()
    panel_by: tuple[str, ...] = ()
    theory: dict = field(default_factory=dict)
    y: str | None = None
    select: str | None = None
    report: ReportConfig = field(default_factory=ReportConfig)

    @classmethod
    def from_runs(cls, runs: pd.DataFrame) -> SweepMeta:
        """Read the metadata columns of one sweep's rows; a column with two values is an error."""
        def const(col):
            if col not in runs.columns:
                return None
            vals = runs[col].dropna().unique()
            if len(vals) > 1:
                raise ValueError(f"{col} must be constant within a sweep; found {sorted(map(str, vals))[:4]}")
            return vals[0] if len(vals) else None

        sweeps = runs["sweep"].dropna().unique() if "sweep" in runs.columns else ["(unnamed)"]
        if len(sweeps) != 1:
            raise ValueError(f"SweepMeta.from_runs expects one sweep, got {list(sweeps)}")
        report = config_from_columns({c: const(c) for c in REPORT_COLUMNS}, str(sweeps[0]))
        search_kind = _text(const("search.kind"))
        quorum = const("search.quorum")
        return cls(
            sweep=str(sweeps[0]),
            search_kind=search_kind,
            param=_text(const("search.param")),
            success=_text(const("search.success")),
            quorum=1.0 if quorum is None else float(quorum),
            # a capacity search with no report.kind is reported as a capacity curve
            report_kind=report.kind or ("capacity" if search_kind == "capacity" else None),
            x=report.x or None,
            curve_by=tuple(report.curve_by),
            panel_by=tuple(report.panel_by),
            theory=report.theory,
            y=report.y or None,
            select=report.select or None,
            report=report,
        )


def is_config_column(col: str) -> bool:
    """Dotted config columns (`task.n`, `train.lr`), not metrics (`fit/success`) nor report metadata."""
    return "." in col and "/" not in col and not col.startswith(NOT_CONFIG_PREFIXES)


def hidden_axes(runs: pd.DataFrame, cell: list[str], may_vary: set[str], group_col: str = "group") -> list[str]:
    """Config columns, not in `cell` nor `may_vary` (nor seeds), that vary inside some cell.

    With a `group` column (one grid cell of the sweep), only columns constant within every group count:
    a column that varies inside a group (e.g. a width derived from the searched parameter) is the
    searcher's doing, not a grid axis.
    """
    skip = set(cell) | set(may_vary) | set(SEED_COLUMNS)
    cands = [c for c in runs.columns if is_config_column(c) and c not in skip and not c.endswith(".seed")]
    if not cands or runs.empty:
        return []
    def comparable(s: pd.Series) -> pd.Series:  # numbers compare as they are; lists/mixed via canon
        return s if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) else s.map(canon)

    keys = [runs[c].map(canon) for c in cell] or [pd.Series(0, index=runs.index)]
    groups = runs[group_col].map(canon) if group_col in runs.columns else None
    out = []
    for c in cands:
        vals = comparable(runs[c])
        if vals.nunique(dropna=False) < 2:
            continue
        if groups is not None and vals.groupby(groups).nunique(dropna=False).max() > 1:
            continue
        if vals.groupby(keys).nunique(dropna=False).max() > 1:
            out.append(c)
    return out
