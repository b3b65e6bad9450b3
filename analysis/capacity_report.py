"""The report section of one capacity sweep: thresholds, exponents, flags, the figure, fits.json rows.

An exponent is "consistent with theory" when the theory slope lies in its 95% interval
(`analysis.powerlaw`); two curves are "separated" when their intervals do not overlap,
i.e. max(lo_1, lo_2) > min(hi_1, hi_2).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.atomic import save_figure
from analysis.markdown import FLAG, Section, interval, num, table, values_text
from analysis.meta import SweepMeta, hidden_axes, require, theory_for
from analysis.plots import plot_capacity
from analysis.powerlaw import fit_powerlaw
from analysis.thresholds import capacity_thresholds

BUDGET_COLUMNS = ("train.method", "train.steps", "train.lr", "train.weight_decay", "train.schedule", "task.tol")


def budget_text(runs: pd.DataFrame) -> str:
    """The training budget as recorded in the rows, plus K relative to N when the task has K."""
    parts = [values_text(runs, c) for c in BUDGET_COLUMNS if c in runs.columns and runs[c].notna().any()]
    if all(c in runs.columns and runs[c].notna().any() for c in ("task.k", "task.n")):
        k = pd.to_numeric(runs["task.k"], errors="coerce")
        ratio = (k / pd.to_numeric(runs["task.n"], errors="coerce")).dropna().round(6).unique()
        if len(ratio) == 1:
            parts.append(f"K = `task.k` = {num(ratio[0])}·N")
        elif k.nunique() == 1:
            parts.append(f"K = `task.k` = {num(k.iloc[0])} fixed (K/N from {num(ratio.min())} to {num(ratio.max())})")
        else:
            parts.append(f"K/N from {num(ratio.min())} to {num(ratio.max())} (`task.k` varies)")
    return "; ".join(parts) if parts else "no budget columns recorded"


def fit_curves(thr: pd.DataFrame, reps: np.ndarray, meta: SweepMeta, keys: list[str]) -> list[dict]:
    """One fits.json record per (panel, curve): log-log fit of the uncensored thresholds."""
    out = []
    for (panel, curve), c in thr.groupby(["panel", "curve"], sort=False):
        use = ~c["censored"].to_numpy(bool)
        fit = fit_powerlaw(c["x"].to_numpy(float)[use], c["threshold"].to_numpy(float)[use],
                           replicates=reps[c.index.to_numpy()][use])
        theory = theory_for(meta.theory, {k: c.iloc[0][k] for k in keys})
        consistent = None if theory is None or not fit.ok else fit.contains(theory)
        out.append({
            "sweep": meta.sweep, "panel": panel, "group": curve, "x": meta.x, "y": meta.param,
            "exponent": fit.exponent, "ci_low": fit.ci_low, "ci_high": fit.ci_high, "n_points": fit.n_points,
            "theory": theory, "consistent_with_theory": consistent, "intercept": fit.intercept,
            "r2": fit.r2, "method": fit.method, "n_censored": int((~use).sum()), "reason": fit.reason,
        })
    return out


def flag_lines(thr: pd.DataFrame, fits: list[dict], meta: SweepMeta, hidden: list[str]) -> list[str]:
    """⚠ lines (theory excluded, censoring, non-monotone probes, hidden axes) and CI-overlap lines."""
    lines = []
    if hidden:
        lines.append(f"{FLAG} columns not in report.curve_by/panel_by vary between cells: "
                     f"{', '.join(hidden)}; added to the curve labels so that cells are not mixed.")
    for f in fits:
        name = " ".join(filter(None, [f["panel"], f["group"]])) or "all"
        if f["reason"]:
            lines.append(f"{FLAG} `{name}`: no exponent ({f['reason']}).")
        elif f["consistent_with_theory"] is False:
            lines.append(f"{FLAG} `{name}`: exponent {num(f['exponent'])} {interval(f['ci_low'], f['ci_high'])} "
                         f"excludes the theory slope {num(f['theory'])}.")
    for _, r in thr.iterrows():
        where = f"`{' '.join(filter(None, [r['panel'], r['curve']])) or 'all'}` at {meta.x} = {num(r['x'])}"
        if r["censored"]:
            lines.append(f"{FLAG} censored: {where}: no probed {meta.param} up to {num(r['max_probe'])} reached "
                         f"the quorum ({r['probes']}); excluded from the fit.")
        elif r["lower_censored"] and r["min_probe"] > 1:  # m* <= 1 is exact for an integer capacity
            lines.append(f"{FLAG} at the smallest probe: {where}: {meta.param} = {num(r['min_probe'])} already "
                         f"passes, so m* <= {num(r['min_probe'])} (an upper bound).")
        if not r["monotone"]:
            lines.append(f"{FLAG} non-monotone: {where}: a larger value fails the quorum after a smaller one "
                         f"passes ({r['probes']}); threshold = smallest passing value.")
    for panel in dict.fromkeys(f["panel"] for f in fits):
        ok = [f for f in fits if f["panel"] == panel and not f["reason"]]
        for i, a in enumerate(ok):
            for b in ok[i + 1:]:
                overlap = max(a["ci_low"], b["ci_low"]) <= min(a["ci_high"], b["ci_high"])
                pair = (f"`{a['group'] or 'all'}` {interval(a['ci_low'], a['ci_high'])} and "
                        f"`{b['group'] or 'all'}` {interval(b['ci_low'], b['ci_high'])}")
                where = f" (panel {panel})" if panel else ""
                if not overlap:
                    lines.append(f"Exponent CIs of {pair} do not overlap{where}: the exponents differ.")
                elif a["theory"] is not None and b["theory"] is not None and a["theory"] != b["theory"]:
                    lines.append(f"{FLAG} exponent CIs of {pair} overlap{where} although theory predicts "
                                 f"{num(a['theory'])} vs {num(b['theory'])}: this sweep does not separate them.")
                else:
                    lines.append(f"Exponent CIs of {pair} overlap{where}.")
    return lines


def grid_comparison(runs: pd.DataFrame, thr: pd.DataFrame) -> list[str]:
    """Runs the adaptive search used vs a full grid over the same ladder (column `search.ladder_size`)."""
    if "search.ladder_size" not in runs or runs["search.ladder_size"].isna().all():
        return []
    ladder = int(runs["search.ladder_size"].max())
    full = int((ladder * thr["n_seeds"]).sum())
    used = int(thr["n_runs"].sum())
    return ["", f"Training runs: {used} by the capacity search vs {full} for a full grid over the same "
                f"ladder of {ladder} values ({used / full:.1%})."]


def capacity_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *, n_boot: int = 1000,
                     seed: int = 0, figure_name: str = "capacity.png") -> Section:
    """Markdown, fits and figure for one capacity sweep (`runs` = that sweep's rows)."""
    for what, col in (("search.param", meta.param), ("search.success", meta.success), ("report.x", meta.x)):
        if not col:
            return Section(f"{FLAG} capacity report skipped: `{what}` is not set on the rows.\n")
    require(runs, [meta.param, meta.x, meta.success], "search.param/report.x/search.success")
    require(runs, meta.panel_by + meta.curve_by, "report.curve_by/panel_by")
    hidden = hidden_axes(runs, list(meta.panel_by + meta.curve_by) + [meta.x], {meta.param})
    curve_by = list(meta.curve_by) + hidden
    thr, reps = capacity_thresholds(runs, param=meta.param, success=meta.success, quorum=meta.quorum, x=meta.x,
                                    curve_by=curve_by, panel_by=meta.panel_by, n_boot=n_boot, seed=seed)
    if thr.empty:
        return Section(f"{FLAG} capacity report skipped: no rows with a `{meta.param}` value.\n")
    fits = fit_curves(thr, reps, meta, list(meta.panel_by) + curve_by)
    fig_path = save_figure(plot_capacity(thr, fits, x_label=meta.x, y_label=meta.param, title=meta.sweep),
                           outdir / figure_name)
    lines = [
        f"Search: capacity over `{meta.param}`; a probe passes when `{meta.success}` holds (status ok) in at "
        f"least a fraction {num(meta.quorum)} of its seeds; {len(thr)} cells (curve × {meta.x}), "
        f"{int(thr['n_probes'].sum())} probes, {int(thr['n_runs'].sum())} runs in probes, "
        f"seeds per cell: {', '.join(sorted({str(n) for n in thr['n_seeds']}))}.",
        *grid_comparison(runs, thr),
        "", "### What this measures", "",
        f"m* is the smallest `{meta.param}` that **gradient training reached** under this budget — "
        f"{budget_text(runs)}. It is the gradient-trainable capacity, not the theoretical (constructive) "
        "capacity: a longer budget, another optimizer or restarts can only lower it, so absolute values "
        "are upper bounds on the theory's minimum and only the exponents are compared with theory. "
        f"Intervals: bootstrap over seeds (B = {n_boot}) for m*; for exponents the union of the OLS "
        "t-interval and the seed-bootstrap interval (95%).",
        "", "### Thresholds", "",
        table([{**r, "curve": " ".join(filter(None, [r["panel"], r["curve"]])) or "all",
                "ci": interval(r["ci_low"], r["ci_high"])} for r in thr.to_dict("records")],
              [("curve", "curve"), ("x", meta.x), ("threshold", f"m* ({meta.param})"), ("ci", "95% CI"),
               ("n_seeds", "seeds"), ("n_probes", "probes"), ("probes", "probe: passed/seeds"),
               ("boot_censored_frac", "censored replicates (fraction)"), ("censored", "censored"), ("monotone", "monotone")]),
        "", "### Exponents", "",
        table([{**f, "curve": " ".join(filter(None, [f["panel"], f["group"]])) or "all",
                "ci": interval(f["ci_low"], f["ci_high"]),
                "consistent": "—" if f["consistent_with_theory"] is None else f["consistent_with_theory"]}
               for f in fits],
              [("curve", "curve"), ("exponent", "exponent b"), ("ci", "95% CI"), ("theory", "theory"),
               ("consistent", "CI contains theory"), ("n_points", "points"), ("n_censored", "censored"),
               ("r2", "R²")]),
        "", "### Flags", "",
    ]
    flags = flag_lines(thr, fits, meta, hidden)
    lines += "\n\n".join(flags).split("\n") if flags else ["No flags."]  # one paragraph per line
    lines += ["", f"![{meta.sweep} capacity]({fig_path.name})", ""]
    return Section("\n".join(lines), fits, [fig_path])
