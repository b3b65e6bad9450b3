"""`write_report(DIR)`: DIR/report/{report.md, fits.json, <sweep>_<kind>.png} from DIR/runs.

One section per sweep found in the runs (a directory may hold several), written by the entry of the sweep's
`report.kind` in `analysis.report_kinds.REPORTS` (a capacity search without report.kind is a capacity report; an
unknown kind gets status counts only); a multi-objective Optuna search adds its Pareto fronts
(`analysis.pareto_report`).
claims.json lists every computed claim about a paper's effect (`analysis.verdict.Claim.record`: statement,
control, rule, verdict "shows" | "does not show", estimate, ci_low, ci_high, kind, n, method) with its sweep.
Every file is written atomically; report.md is written last, so its presence means the set is whole.
fits.json is a list with one record per fitted capacity curve:

    {"sweep", "panel", "group", "x", "y", "exponent", "ci_low", "ci_high", "n_points", "theory",
     "consistent_with_theory", "intercept", "r2", "method", "n_censored", "reason"}

with NaN written as null (`analysis.capacity_report.fit_curves`).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.atomic import atomic_write
from analysis.load import read_runs
from analysis.markdown import FLAG, Section
from analysis.meta import SweepMeta
from analysis.pareto_report import appended, pareto_section
from analysis.report_kinds import REPORTS

STATUSES = ("ok", "diverged", "failed")


def _jsonable(v):
    """NaN/inf -> None, numpy scalars -> Python (json.dumps would write the invalid token NaN)."""
    if isinstance(v, dict):
        return {k: _jsonable(u) for k, u in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(u) for u in v]
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


def status_counts(runs: pd.DataFrame) -> str:
    """'N runs: ok a, diverged b, failed c' (other statuses listed too)."""
    counts = runs["status"].astype(str).value_counts() if "status" in runs.columns else pd.Series(dtype=int)
    names = list(STATUSES) + sorted(set(counts.index) - set(STATUSES))
    return f"{len(runs)} runs: " + ", ".join(f"{s} {int(counts.get(s, 0))}" for s in names)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "sweep"


def sweep_section(runs: pd.DataFrame, outdir: Path, *, n_boot: int, seed: int) -> tuple[str, Section]:
    """(heading + counts, section) for one sweep; a contract problem becomes a ⚠ line, not a crash."""
    name = str(runs["sweep"].iloc[0]) if "sweep" in runs.columns else "(unnamed)"
    try:
        meta = SweepMeta.from_runs(runs)
        kind = meta.report_kind
        entry = REPORTS.get(kind)
        front = pareto_section(runs, outdir, figure_name=f"{_slug(name)}_pareto.png")   # multi-objective optuna
        if entry is None:
            sec = front or Section(f"No report for report.kind = {kind!r}; counts only.\n")
        else:
            sec = appended(entry.section(runs, meta, outdir, figure_name=f"{_slug(name)}_{entry.FIGURE}.png",
                                         n_boot=n_boot, seed=seed), front)
    except ValueError as e:
        kind, sec = "error", Section(f"{FLAG} report failed for this sweep: {e}\n")
    head = f"## Sweep `{name}` ({kind or 'no report.kind'})\n\n{status_counts(runs)}.\n"
    return head, sec


def write_report(dir: str | Path, *, n_boot: int = 1000, seed: int = 0) -> Path:
    """Write DIR/report/{report.md, fits.json, *.png}; returns the path of report.md."""
    dir = Path(dir)
    runs = read_runs(dir)
    if runs.empty:
        raise ValueError(f"no runs in {dir / 'runs'}: the part files hold no rows")
    outdir = dir / "report"
    outdir.mkdir(parents=True, exist_ok=True)
    key = runs["sweep"].astype(str) if "sweep" in runs.columns else pd.Series("(unnamed)", index=runs.index)
    names = sorted(key.unique())
    md = [f"# Sweep report: {', '.join(names)}", "", f"Source: `{dir}`. {status_counts(runs)}.", ""]
    dup = runs.assign(_s=key).duplicated(["_s", "run_id"]) if "run_id" in runs.columns else pd.Series(False)
    if dup.any():
        ids = runs["run_id"][dup].unique()
        md += [f"{FLAG} {len(ids)} run_id(s) appear more than once within a sweep (e.g. {ids[0]}): a run was "
               "recorded twice; the duplicates are kept in the statistics below.", ""]
    fits, claims = [], []
    for name in names:
        head, sec = sweep_section(runs[key == name], outdir, n_boot=n_boot, seed=seed)
        md += [head, sec.markdown]
        fits += sec.fits
        claims += [{"sweep": name, **c} for c in sec.claims]
    atomic_write(outdir / "fits.json", json.dumps(_jsonable(fits), indent=2, allow_nan=False) + "\n")
    atomic_write(outdir / "claims.json", json.dumps(_jsonable(claims), indent=2, allow_nan=False) + "\n")
    return atomic_write(outdir / "report.md", "\n".join(md).rstrip() + "\n")
