"""The report section of one rank-curve sweep: selected error vs rank, theory rank, exact rank, figure.

Theory rank R* per panel from `analysis.rank_curves.theory_rank`; the construction's exact rank is
the smallest rank whose median `test/mse_rel` (test MSE / the target's output variance) is < 1e-6
(`analysis.rank_curves.exact_rank`); the two should coincide when the construction is implemented right
(papers.md §2) — an implementation check, not the paper's empirical claim (that is `analysis.lora_report`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.atomic import save_figure
from analysis.load import drop_pruned
from analysis.markdown import FLAG, Section, num, table, values_text
from analysis.meta import SweepMeta, canon, hidden_axes, label, require
from analysis.plots import plot_rank_curves
from analysis.rank_curves import EXACT_TOL, HYPER, exact_rank, select_rank_curves, theory_rank

EXACT_METRIC = "test/mse_rel"


def _panel_theory(runs: pd.DataFrame, panel_by: list[str]) -> dict[str, list[float]]:
    """panel label -> sorted distinct R* values among the panel's rows."""
    r = theory_rank(runs)
    groups = runs.groupby([runs[c].map(canon) for c in panel_by], sort=False) if panel_by else [((), runs)]
    return {label(panel_by, [sub.iloc[0][c] for c in panel_by]): sorted({float(v) for v in r.loc[sub.index] if np.isfinite(v)})
            for _, sub in groups}


def rank_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *, figure_name: str = "rank_curve.png",
                 n_boot: int = 1000, seed: int = 0) -> Section:
    """Markdown and figure for one rank-curve sweep (`runs` = that sweep's rows); n_boot and seed are the
    report's shared signature (analysis.report_kinds): no interval here is a bootstrap."""
    for what, col in (("report.x", meta.x), ("report.y", meta.y)):
        if not col:
            return Section(f"{FLAG} rank-curve report skipped: `{what}` is not set on the rows.\n")
    flags = []
    select = meta.select
    if select and select not in runs.columns:
        flags.append(f"{FLAG} report.select `{select}` is not a column: all rows of a cell were pooled.")
        select = None
    require(runs, [meta.x, meta.y], "report.x/report.y")
    require(runs, meta.panel_by + meta.curve_by, "report.curve_by/panel_by")
    hidden = hidden_axes(runs, list(meta.panel_by + meta.curve_by) + [meta.x], set(HYPER))
    if hidden:
        flags.append(f"{FLAG} columns not in report.curve_by/panel_by vary between cells: {', '.join(hidden)}; "
                     "added to the curve labels so that cells are not mixed.")
    curve_by = list(meta.curve_by) + hidden
    tab = select_rank_curves(drop_pruned(runs), x=meta.x, y=meta.y, select=select, curve_by=curve_by, panel_by=meta.panel_by)
    if tab.empty:
        return Section(f"{FLAG} rank-curve report skipped: no rows.\n")
    theory = _panel_theory(runs, list(meta.panel_by))
    exact = exact_rank(runs, x=meta.x, panel_by=meta.panel_by, metric=EXACT_METRIC)
    fig_path = save_figure(plot_rank_curves(tab, x_label=meta.x, y_label=meta.y, theory=theory, title=meta.sweep),
                           outdir / figure_name)

    theory_rows = []
    for panel in dict.fromkeys(tab["panel"]):
        r_star = theory.get(panel, [])
        ex = exact[exact["panel"] == panel]["exact_rank"]
        ex = float(ex.iloc[0]) if len(ex) else None
        theory_rows.append({"panel": panel or "all", "theory": ", ".join(num(v) for v in r_star) or "—",
                            "exact": "—" if ex is None else num(ex)})
        if len(r_star) > 1:
            flags.append(f"{FLAG} panel `{panel or 'all'}` mixes several theory ranks {r_star}.")
        if ex is None:
            continue
        if not np.isfinite(ex):
            flags.append(f"{FLAG} panel `{panel or 'all'}`: the construction's median `{EXACT_METRIC}` never drops "
                         f"below {EXACT_TOL:g} at the probed ranks (theory R* = {theory_rows[-1]['theory']}).")
        elif r_star and ex not in r_star:
            flags.append(f"{FLAG} panel `{panel or 'all'}`: the construction is exact from rank {num(ex)}, "
                         f"theory says {theory_rows[-1]['theory']}.")
    bad = tab[~np.isfinite(tab["median"])]
    for _, r in bad.iterrows():
        flags.append(f"{FLAG} `{' '.join(filter(None, [r['panel'], r['curve']]))}` at {meta.x} = {num(r['x'])}: "
                     f"median `{meta.y}` is not finite (most seeds diverged or failed).")

    hyper = [h for h in HYPER if h in tab.columns]
    n_settings = sorted({int(n) for n in tab["n_settings"]})
    how = (f"the ({', '.join(f'`{h}`' for h in hyper)}) setting with the lowest median `{select}` over seeds"
           if select else "all rows (no selection metric)")
    budget = "; ".join(values_text(runs, c) for c in ("train.steps", "model.width", "model.depth", "task.target_depth")
                       if c in runs.columns and runs[c].notna().any())
    lines = [
        f"{len(tab)} cells (panel × curve × {meta.x}); hyper-parameter settings per cell: "
        f"{', '.join(map(str, n_settings))}. Per cell the plotted value uses {how}; reported: median `{meta.y}` "
        f"over seeds with the min–max band.{(' Setting: ' + budget + '.') if budget else ''}",
        "", "### Theory and construction", "",
        f"Theory rank R* = ⌈D·L̄/L⌉ (⌈D/⌊L/L̄⌋⌉ when L̄ does not divide L), D = `model.width`, L = `model.depth`, "
        f"L̄ = `task.target_depth`. Exact rank: smallest rank with the construction's median `{EXACT_METRIC}` "
        f"(test MSE / the target's output variance `test/target_var`, the MSE of predicting the target's mean) < "
        f"{EXACT_TOL:g}" + ("." if EXACT_METRIC in runs.columns else f" (no `{EXACT_METRIC}` column: not measured).")
        + " This checks the implementation (the construction is exact by design); the gradient solver's threshold "
        "against R*, with claims, is the `lora_threshold` report (sweeps/lora_threshold.yaml).",
        "", table(theory_rows, [("panel", "panel"), ("theory", "theory R*"), ("exact", "construction exact from")]),
        "", "### Selected values", "",
        table([{**r, "curve": r["curve"] or "all", "panel": r["panel"] or "all"} for r in tab.to_dict("records")],
              [("panel", "panel"), ("curve", "curve"), ("x", meta.x), *[(h, h) for h in hyper],
               ("median", f"median {meta.y}"), ("ymin", "min"), ("ymax", "max"), ("select_median", f"median {select or '—'}"),
               ("n_seeds", "seeds"), ("n_settings", "settings")]),
        "", "### Flags", "",
    ]
    lines += "\n\n".join(flags).split("\n") if flags else ["No flags."]
    lines += ["", f"![{meta.sweep} rank curve]({fig_path.name})", ""]
    return Section("\n".join(lines), [], [fig_path])
