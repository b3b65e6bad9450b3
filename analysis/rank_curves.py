"""Error vs LoRA rank (Zeng & Lee, ICLR 2024, "The Expressive Power of Low-Rank Adaptation").

Per cell (panel, curve, rank) the sweep holds several hyper-parameter settings h = (train.lr,
train.weight_decay), each with several seeds. As in the paper's figures (draw_plot_v2.ipynb
`get_loss`), the setting is chosen on the validation metric and the test metric is reported:

    h* = argmin_h median_s select(h, s),      reported: median_s y(h*, s), with the min-max band.

A NaN metric (a diverged or failed run) counts as +inf, so an unstable setting is not chosen on the
strength of its surviving seeds. Without a select metric all rows of the cell are pooled.

Theory (Zeng & Lee): a depth-L frozen FNN of width D adapts exactly to a depth-Lbar target with
per-layer rank

    R* = ceil(D * Lbar / L)             when Lbar divides L,
    R* = ceil(D / floor(L / Lbar))      otherwise,

columns model.width = D, model.depth = L, task.target_depth = Lbar.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.meta import canon, label, require, sort_cells

HYPER = ("train.lr", "train.weight_decay")
EXACT_TOL = 1e-6  # "exact" construction: test/mse_rel (MSE / target variance) below this


def theory_rank(runs: pd.DataFrame) -> pd.Series:
    """R* per row (float; NaN where model.width / model.depth / task.target_depth is missing)."""
    cols = ("model.width", "model.depth", "task.target_depth")
    if not all(c in runs.columns for c in cols):
        return pd.Series(np.nan, index=runs.index)
    d, depth, tgt = (pd.to_numeric(runs[c], errors="coerce").to_numpy(float) for c in cols)
    with np.errstate(invalid="ignore", divide="ignore"):
        divides = np.isfinite(depth) & np.isfinite(tgt) & (tgt > 0) & (np.mod(depth, tgt) == 0)
        groups = np.floor(depth / tgt)
        r = np.where(divides, np.ceil(d * tgt / depth - 1e-9), np.ceil(d / groups - 1e-9))
    r[~np.isfinite(r) | (groups < 1)] = np.nan
    return pd.Series(r, index=runs.index)


def _as_inf(v: pd.Series) -> np.ndarray:
    a = pd.to_numeric(v, errors="coerce").to_numpy(float)
    return np.where(np.isnan(a), np.inf, a)


def select_rank_curves(runs: pd.DataFrame, *, x: str, y: str, select: str | None = None,
                       curve_by=(), panel_by=(), hyper=HYPER) -> pd.DataFrame:
    """One row per (panel, curve, x): chosen hyper-parameters and median/min/max of y over seeds.

    Columns: panel, curve, <panel_by>, <curve_by>, x, <hyper columns present> (the chosen values; NaN
    when rows are pooled), n_settings, n_runs, n_seeds, select_median, median, ymin, ymax, n_nonfinite.
    """
    curve_by, panel_by = list(curve_by), list(panel_by)
    require(runs, [x, y], "report.x/report.y")
    require(runs, curve_by + panel_by, "report.curve_by/panel_by")
    use_select = bool(select) and select in runs.columns
    hyper = [h for h in hyper if h in runs.columns]
    cell_cols = panel_by + curve_by + [x]
    rows = []
    for _, cell in runs.groupby([runs[c].map(canon) for c in cell_cols], sort=False, dropna=False):
        settings = cell.groupby([cell[h].map(canon) for h in hyper], sort=True, dropna=False) if hyper else [((), cell)]
        best, best_score, n_settings = cell, np.nan, 0  # without a select metric: all rows of the cell
        for _, rows_h in settings:
            n_settings += 1
            score = float(np.median(_as_inf(rows_h[select]))) if use_select else np.nan
            if use_select and (n_settings == 1 or score < best_score):
                best, best_score = rows_h, score
        vals = _as_inf(best[y])
        finite = vals[np.isfinite(vals)]
        first = best.iloc[0]
        rows.append({
            "panel": label(panel_by, [first[c] for c in panel_by]),
            "curve": label(curve_by, [first[c] for c in curve_by]),
            **{c: first[c] for c in panel_by + curve_by},
            "x": pd.to_numeric(pd.Series([first[x]]), errors="coerce").iloc[0],
            **{h: (first[h] if use_select else np.nan) for h in hyper},
            "n_settings": n_settings, "n_runs": len(best),
            "n_seeds": int(best["seed"].nunique()) if "seed" in best.columns else len(best),
            "select_median": best_score,
            "median": float(np.median(vals)),
            "ymin": float(finite.min()) if finite.size else np.nan,
            "ymax": float(finite.max()) if finite.size else np.nan,
            "n_nonfinite": int((~np.isfinite(vals)).sum()),
        })
    table = pd.DataFrame(rows)
    return table.iloc[sort_cells(table, [*panel_by, *curve_by, "x"])].reset_index(drop=True) if rows else table


def exact_rank(runs: pd.DataFrame, *, x: str, panel_by=(), metric: str = "test/mse_rel",
               tol: float = EXACT_TOL, method_col: str = "train.method", method: str = "construction") -> pd.DataFrame:
    """Per panel: the smallest rank whose median (over seeds) `metric` of the `method` runs is < tol.

    Columns: panel, exact_rank (NaN when no rank reaches tol), n_ranks. Empty when the metric or the
    method's rows are absent.
    """
    if metric not in runs.columns:
        return pd.DataFrame(columns=["panel", "exact_rank", "n_ranks"])
    rows = runs if method_col not in runs.columns else runs[runs[method_col].astype(str) == method]
    panel_by = list(panel_by)
    out = []
    for _, p in (rows.groupby([rows[c].map(canon) for c in panel_by], sort=True) if panel_by else [((), rows)]):
        if p.empty:
            continue
        med = p.groupby(pd.to_numeric(p[x], errors="coerce"))[metric].agg(lambda s: float(np.median(_as_inf(s))))
        hit = med.index[med.to_numpy() < tol]
        out.append({"panel": label(panel_by, [p.iloc[0][c] for c in panel_by]),
                    "exact_rank": float(hit.min()) if len(hit) else np.nan, "n_ranks": int(len(med))})
    return pd.DataFrame(out, columns=["panel", "exact_rank", "n_ranks"])
