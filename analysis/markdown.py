"""Markdown pieces of the report: numbers, intervals, tables (no tabulate dependency), and the
`Section` a sweep contributes (text, fits.json records, figures)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.meta import canon

FLAG = "⚠"


@dataclass
class Section:
    """Markdown text, fits.json records, claims.json records (`analysis.verdict.Claim.record`) and figure
    paths of one sweep."""
    markdown: str
    fits: list[dict] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    claims: list[dict] = field(default_factory=list)


def num(v, digits: int = 3) -> str:
    """Compact number: integers as integers, others with `digits` significant digits; NaN as '—'."""
    if v is None:
        return "—"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "—"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if f.is_integer() and abs(f) < 1e6:
        return str(int(f))
    return f"{f:.{digits}g}"


def interval(lo, hi, digits: int = 3) -> str:
    """'[lo, hi]', or '—' when either end is missing."""
    if lo is None or hi is None or any(math.isnan(float(v)) for v in (lo, hi)):
        return "—"
    return f"[{num(lo, digits)}, {num(hi, digits)}]"


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A pipe table; columns = [(key in each row, header)]. Cells are rendered with `num` unless str."""
    if not rows:
        return "_(none)_"

    def cell(v):
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        text = v if isinstance(v, str) else num(v)
        return text.replace("|", "\\|") or "—"

    out = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(out)


def values_text(runs: pd.DataFrame, col: str) -> str:
    """'`col` = v' for a constant column, '`col` ∈ {a, b}' otherwise (canonical values, numeric order)."""
    def key(s: str):
        try:
            return (0, float(s), s)
        except ValueError:
            return (1, 0.0, s)
    vals = sorted({canon(v) for v in runs[col].dropna()}, key=key)
    return f"`{col}` = {vals[0]}" if len(vals) == 1 else f"`{col}` ∈ {{{', '.join(vals)}}}"
