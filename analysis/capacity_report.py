"""The report section of one capacity sweep: thresholds, exponents, flags, claims, the figure, fits.json rows.

Exponents: `analysis.powerlaw.fit_censored_powerlaw` (Tobit; censored thresholds kept as bounds; one Wald
t-interval), per curve over the whole x range (`"range": "all"`) and over the upper half of the x values
(`"range": "upper"`). A power law is checked, not assumed: *curvature* is flagged when either range's
estimate lies outside the other's 95% interval. The verdict against theory is read from the upper range:

    slope t != 0:  "m* grows like x^t"       shows iff the upper-range CI lies within [t − TOL, t + TOL]
    slope t == 0:  "m* does not grow with x" shows iff the upper-range CI lies below TOL

(TOL = THEORY_TOL = 0.25: half the gap between the theory slopes 1 and 0.5 of FTC's two depths), an
`analysis.verdict.Claim` per curve. "CI contains theory" is also tabulated, but a wide interval passes it.
Two curves are "separated" when their whole-range intervals do not overlap.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.atomic import save_figure
from analysis.markdown import FLAG, Section, interval, num, table, values_text
from analysis.meta import SweepMeta, hidden_axes, parse_label, require, theory_for
from analysis.plots import plot_capacity
from analysis.powerlaw import TOBIT_METHOD, fit_censored_powerlaw, upper_half
from analysis.thresholds import capacity_thresholds, censoring
from analysis.verdict import Claim, Effect, claim

BUDGET_COLUMNS = ("train.method", "train.steps", "train.lr", "train.weight_decay", "train.schedule", "task.tol")
RANGES = ("all", "upper")
THEORY_TOL = 0.25


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


def fit_curves(thr: pd.DataFrame, meta: SweepMeta, keys: list[str]) -> list[dict]:
    """Two fits.json records per (panel, curve): ranges "all" and "upper" (censored points as bounds)."""
    out = []
    for (panel, curve), c in thr.groupby(["panel", "curve"], sort=False):
        x = c["x"].to_numpy(float)
        y, code = censoring(c)
        theory = theory_for(meta.theory, {k: c.iloc[0][k] for k in keys})
        for rng in RANGES:
            use = np.ones(len(c), bool) if rng == "all" else upper_half(x)
            fit = fit_censored_powerlaw(x[use], y[use], code[use])
            out.append({
                "sweep": meta.sweep, "panel": panel, "group": curve, "x": meta.x, "y": meta.param, "range": rng,
                "x_min": float(np.nanmin(x[use])) if use.any() else None,
                "x_max": float(np.nanmax(x[use])) if use.any() else None,
                "exponent": fit.exponent, "ci_low": fit.ci_low, "ci_high": fit.ci_high, "n_points": fit.n_points,
                "theory": theory, "consistent_with_theory": None if theory is None or not fit.ok else fit.contains(theory),
                "intercept": fit.intercept, "r2": fit.r2, "method": fit.method,
                "n_censored": int((code[use] != 0).sum()), "reason": fit.reason,
            })
    return out


def _name(f: dict) -> str:
    return " ".join(filter(None, [f["panel"], f["group"]])) or "all"


def theory_claims(fits: list[dict], x: str, tol: float = THEORY_TOL) -> list[Claim]:
    """One claim per curve with a theory slope, read from its upper-range fit (module docstring)."""
    out = []
    for f in fits:
        if f["range"] != "upper" or f["theory"] is None:
            continue
        t = float(f["theory"])
        e = Effect(f["exponent"], f["ci_low"], f["ci_high"], "slope", (f["n_points"],), TOBIT_METHOD)
        where = f"`{_name(f)}`, upper half of {x} ({num(f['x_min'])}..{num(f['x_max'])})"
        control = f"theory slope {num(t)}"
        if t == 0:
            out.append(claim(f"{where}: m* does not grow with {x}", e, control, below=tol))
        else:
            out.append(claim(f"{where}: m* grows like {x}^{num(t)}", e, control, within=(t - tol, t + tol)))
    return out


def curvature_lines(fits: list[dict]) -> list[str]:
    """⚠ where the whole-range and upper-range slopes of a curve disagree (either outside the other's CI)."""
    lines = []
    by = {(f["panel"], f["group"], f["range"]): f for f in fits}
    for (panel, group, rng), a in by.items():
        b = by.get((panel, group, "upper"))
        if rng != "all" or b is None or a["reason"] or b["reason"]:
            continue
        if not (a["ci_low"] <= b["exponent"] <= a["ci_high"] and b["ci_low"] <= a["exponent"] <= b["ci_high"]):
            lines.append(f"{FLAG} curvature: `{_name(a)}`: whole-range slope {num(a['exponent'])} "
                         f"{interval(a['ci_low'], a['ci_high'])} and upper-half slope {num(b['exponent'])} "
                         f"{interval(b['ci_low'], b['ci_high'])} disagree: not one power law over the range; "
                         "the verdict reads the upper half.")
    return lines


def dimension_lines(fits: list[dict], claims: list[Claim], col: str = "task.dim") -> list[str]:
    """⚠ where curves that differ only in `col` (the input dimension, on which theory's exponents do not
    depend) reach different verdicts: the measured exponent then depends on the dimension."""
    ups = [f for f in fits if f["range"] == "upper" and f["theory"] is not None]       # aligned with claims
    groups: dict[tuple, list] = {}
    for f, c in zip(ups, claims):
        lab = parse_label(",".join(filter(None, [f["panel"], f["group"]])))
        if col in lab:
            groups.setdefault(tuple(sorted((k, v) for k, v in lab.items() if k != col)), []).append((lab[col], c))
    lines = []
    for rest, items in groups.items():
        if len({c.verdict for _, c in items}) > 1:
            each = "; ".join(f"{col} = {v}: {c.effect.text()} {c.verdict}" for v, c in items)
            lines.append(f"{FLAG} verdicts differ across {col} for `{','.join(f'{k}={v}' for k, v in rest) or 'all'}` "
                         f"({each}): theory's exponent does not depend on the dimension, this measurement does.")
    return lines


def flag_lines(thr: pd.DataFrame, fits: list[dict], meta: SweepMeta, hidden: list[str]) -> list[str]:
    """⚠ lines (no exponent, theory excluded, curvature, censoring, non-monotone probes, hidden axes) and
    CI-overlap lines (whole range)."""
    lines = []
    if hidden:
        lines.append(f"{FLAG} columns not in report.curve_by/panel_by vary between cells: "
                     f"{', '.join(hidden)}; added to the curve labels so that cells are not mixed.")
    for f in fits:
        rng = f" ({f['range']} range)"
        if f["reason"]:
            lines.append(f"{FLAG} `{_name(f)}`{rng}: no exponent ({f['reason']}).")
        elif f["consistent_with_theory"] is False:
            lines.append(f"{FLAG} `{_name(f)}`{rng}: exponent {num(f['exponent'])} "
                         f"{interval(f['ci_low'], f['ci_high'])} excludes the theory slope {num(f['theory'])}.")
    lines += curvature_lines(fits)
    for _, r in thr.iterrows():
        where = f"`{' '.join(filter(None, [r['panel'], r['curve']])) or 'all'}` at {meta.x} = {num(r['x'])}"
        if r["censored"]:
            lines.append(f"{FLAG} censored: {where}: no probed {meta.param} up to {num(r['max_probe'])} reached "
                         f"the quorum ({r['probes']}); kept in the fit as the bound m* > {num(r['max_probe'])}.")
        elif r["lower_censored"] and r["min_probe"] > 1:  # m* <= 1 is exact for an integer capacity
            lines.append(f"{FLAG} at the smallest probe: {where}: {meta.param} = {num(r['min_probe'])} already "
                         f"passes; kept in the fit as the bound m* <= {num(r['min_probe'])}.")
        if not r["monotone"]:
            lines.append(f"{FLAG} non-monotone: {where}: a larger value fails the quorum after a smaller one "
                         f"passes ({r['probes']}); threshold = smallest passing value.")
    whole = [f for f in fits if f["range"] == "all"]
    for panel in dict.fromkeys(f["panel"] for f in whole):
        ok = [f for f in whole if f["panel"] == panel and not f["reason"]]
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


def measures_text(runs: pd.DataFrame, meta: SweepMeta, n_boot: int) -> str:
    """What m* is (gradient-trained vs constructive), the budget, and the interval methods."""
    methods = set(runs["train.method"].dropna().astype(str)) if "train.method" in runs.columns else set()
    text = (f"m* is the smallest `{meta.param}` that **gradient training reached** under this budget — "
            f"{budget_text(runs)}. It is the gradient-trainable capacity, not the theoretical (constructive) "
            "capacity: a longer budget, another optimizer or restarts can only lower it, so absolute values "
            "are upper bounds on the theory's minimum and only the exponents are compared with theory.")
    if "construction" in methods:
        text += (" Curves `train.method=construction` are the optimizer-free reference: the smallest width at "
                 "which an explicit construction (`ftcore.tasks.ftc_construction`: hats along a random "
                 "projection; 3 units per relabelled point with |r| >= tol for depth 2, about 4.9·√N units for "
                 "depth 3), evaluated in float64 on all K points, fits — an upper bound on the minimal width "
                 "that no optimizer limits. Where the gradient curve grows faster than the construction, "
                 "the optimizer (not expressivity) sets its slope.")
    return (text + f" Intervals: bootstrap over seeds (B = {n_boot}) for m*; for exponents one method, "
            f"{TOBIT_METHOD}. Ranges: `all` x values, and `upper` = the upper half of the distinct x values; "
            f"the verdict against theory reads the upper range (curvature flagged when the two disagree).")


def claims_lines(claims: list[Claim], tol: float = THEORY_TOL) -> list[str]:
    if not claims:
        return ["No curve has a theory slope (`report.theory`): no verdict."]
    return [f"- {c.line()}" for c in claims] + [
        "", f"Rule: the upper-range slope interval must lie within theory ± {num(tol)} (theory 0: below "
            f"{num(tol)}), so a wide interval does not show. Intervals: {TOBIT_METHOD}."]


def capacity_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *, n_boot: int = 1000,
                     seed: int = 0, figure_name: str = "capacity.png") -> Section:
    """Markdown, fits, claims and figure for one capacity sweep (`runs` = that sweep's rows)."""
    for what, col in (("search.param", meta.param), ("search.success", meta.success), ("report.x", meta.x)):
        if not col:
            return Section(f"{FLAG} capacity report skipped: `{what}` is not set on the rows.\n")
    require(runs, [meta.param, meta.x, meta.success], "search.param/report.x/search.success")
    require(runs, meta.panel_by + meta.curve_by, "report.curve_by/panel_by")
    hidden = hidden_axes(runs, list(meta.panel_by + meta.curve_by) + [meta.x], {meta.param})
    curve_by = list(meta.curve_by) + hidden
    thr, _ = capacity_thresholds(runs, param=meta.param, success=meta.success, quorum=meta.quorum, x=meta.x,
                                 curve_by=curve_by, panel_by=meta.panel_by, n_boot=n_boot, seed=seed)
    if thr.empty:
        return Section(f"{FLAG} capacity report skipped: no rows with a `{meta.param}` value.\n")
    fits = fit_curves(thr, meta, list(meta.panel_by) + curve_by)
    claims = theory_claims(fits, meta.x)
    fig_path = save_figure(plot_capacity(thr, fits, x_label=meta.x, y_label=meta.param, title=meta.sweep),
                           outdir / figure_name)
    lines = [
        f"Search: capacity over `{meta.param}`; a probe passes when `{meta.success}` holds (status ok) in at "
        f"least a fraction {num(meta.quorum)} of its seeds; {len(thr)} cells (curve × {meta.x}), "
        f"{int(thr['n_probes'].sum())} probes, {int(thr['n_runs'].sum())} runs in probes, "
        f"seeds per cell: {', '.join(sorted({str(n) for n in thr['n_seeds']}))}.",
        *grid_comparison(runs, thr),
        "", "### What this measures", "", measures_text(runs, meta, n_boot),
        "", "### Thresholds", "",
        table([{**r, "curve": " ".join(filter(None, [r["panel"], r["curve"]])) or "all",
                "ci": interval(r["ci_low"], r["ci_high"])} for r in thr.to_dict("records")],
              [("curve", "curve"), ("x", meta.x), ("threshold", f"m* ({meta.param})"), ("ci", "95% CI"),
               ("n_seeds", "seeds"), ("n_probes", "probes"), ("probes", "probe: passed/seeds"),
               ("boot_censored_frac", "censored replicates (fraction)"), ("censored", "censored"), ("monotone", "monotone")]),
        "", "### Exponents", "",
        table([{**f, "curve": _name(f), "ci": interval(f["ci_low"], f["ci_high"]),
                "xs": f"{num(f['x_min'])}..{num(f['x_max'])}" if f["x_min"] is not None else "—",
                "consistent": "—" if f["consistent_with_theory"] is None else f["consistent_with_theory"]}
               for f in fits],
              [("curve", "curve"), ("range", "range"), ("xs", meta.x), ("exponent", "exponent b"), ("ci", "95% CI"),
               ("theory", "theory"), ("consistent", "CI contains theory"), ("n_points", "points"),
               ("n_censored", "censored (bounds)"), ("r2", "R² (uncensored)")]),
        "", "### Verdicts", "", *claims_lines(claims),
        "", "### Flags", "",
    ]
    flags = flag_lines(thr, fits, meta, hidden) + dimension_lines(fits, claims)
    lines += "\n\n".join(flags).split("\n") if flags else ["No flags."]  # one paragraph per line
    lines += ["", f"![{meta.sweep} capacity]({fig_path.name})", ""]
    return Section("\n".join(lines), fits, [fig_path],
                   [c.record(panel=f["panel"], curve=f["group"], range="upper", x=meta.x)
                    for c, f in zip(claims, [f for f in fits if f["range"] == "upper" and f["theory"] is not None])])
