"""The gradient-LoRA rank threshold against the theory rank R* (Zeng & Lee, ICLR 2024; papers.md §2).

The paper's expressivity result: a depth-L frozen FNN of width D adapts *exactly* to a depth-L̄ target with
per-layer LoRA rank R >= R* = ⌈D·L̄/L⌉ (`analysis.rank_curves.theory_rank`). Its empirical content is that
gradient-trained LoRA follows that threshold. Measured here, per setting (D, L, L̄, ...) and curve (method):

    per cell (setting, method, rank): h* = argmin_h median_s val(h, s)       (the rank-curve selection)
    per seed s:   T_s = the smallest probed rank R such that y(h*_R, s, R') < ε for every probed R' >= R
                  ("reaches ε from R on"; censored — T_s > max probed rank — when the largest rank misses ε)
    median curve: T_med, the same rule on median_s y(h*_R, s, R)
    excess:       X_s = max(T_s − R*, 0)  — the rank beyond the theory rank that seed s needed

y is `test/mse_rel` = test MSE / the target's output variance (the MSE of predicting the target's mean).
Claim per setting: "gradient LoRA reaches ε from R* on" shows iff no seed is censored and the Student-t 95%
interval of mean_s X_s lies below 0.5 (with integer ranks: every seed at or below R* up to noise).
Overall: the pooled excess over all settings and seeds, shown iff every setting's claim shows.

Linear case (identity activation): the Eckart–Young tail `test/ey_tail` (Σ_{i > L·R} σ_i(Ē)²/D of the needed
update Ē = ∏W̄ − ∏W) is the least test MSE any rank-R LoRA can reach. Claim per linear setting: "gradient LoRA
attains the Eckart–Young bound below R*": the paired ratio of geometric means test/mse / ey_tail over the
(rank < R*, seed) pairs with a positive tail, shown iff its interval lies within [1/EY_WITHIN, EY_WITHIN].
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.meta import canon, label
from analysis.rank_curves import HYPER, theory_rank
from analysis.verdict import NOT, Claim, all_show, claim, mean_effect, ratio

EPSILON = 1e-2        # default ε when report.theory has no "epsilon"
EY_WITHIN = 1.25      # linear claim: measured / bound within [1/1.25, 1.25]
Y = "test/mse_rel"
TAIL = "test/ey_tail"


def _as_inf(v) -> np.ndarray:
    a = pd.to_numeric(pd.Series(v), errors="coerce").to_numpy(float)
    return np.where(np.isnan(a), np.inf, a)


def selected_rows(runs: pd.DataFrame, *, x: str, select: str | None, cell_by: list[str],
                  hyper=HYPER) -> pd.DataFrame:
    """The rows of the chosen hyper-parameter setting in each cell (cell_by + [x]): lowest median `select`
    over seeds (NaN as +inf); every row of the cell without a select metric or hyper columns."""
    hyper = [h for h in hyper if h in runs.columns]
    use = bool(select) and select in runs.columns
    keep = []
    for _, cell in runs.groupby([runs[c].map(canon) for c in cell_by + [x]], sort=False, dropna=False):
        if not (use and hyper):
            keep.append(cell)
            continue
        best, score = None, math.inf
        for _, rows_h in cell.groupby([cell[h].map(canon) for h in hyper], sort=True, dropna=False):
            s = float(np.median(_as_inf(rows_h[select])))
            if best is None or s < score:
                best, score = rows_h, s
        keep.append(best)
    return pd.concat(keep) if keep else runs.iloc[:0]


def threshold_from_on(ranks, values, eps: float) -> float:
    """Smallest rank R with value < eps at R and at every larger rank given; NaN (censored) if the largest
    rank misses eps. NaN values count as misses."""
    r = np.asarray(ranks, float)
    v = np.asarray(values, float)
    order = np.argsort(r)
    r, v = r[order], np.where(np.isnan(v[order]), np.inf, v[order])
    hit = v < eps
    if not len(r) or not hit[-1]:
        return math.nan
    first_bad = np.nonzero(~hit)[0]
    return float(r[first_bad[-1] + 1] if first_bad.size else r[0])


def seed_thresholds(sel: pd.DataFrame, *, x: str, setting_by: list[str], curve_by: list[str], eps: float,
                    y: str = Y) -> pd.DataFrame:
    """One row per (setting, curve, seed): setting, curve, seed, threshold (NaN = censored), max_rank, r_star."""
    rstar = theory_rank(sel)
    rows = []
    keys = setting_by + curve_by + ["seed"]
    for _, g in sel.groupby([sel[c].map(canon) for c in keys], sort=True, dropna=False):
        first = g.iloc[0]
        ranks = pd.to_numeric(g[x], errors="coerce").to_numpy(float)
        rs = rstar.loc[g.index].dropna().unique()
        rows.append({"setting": label(setting_by, [first[c] for c in setting_by]),
                     "curve": label(curve_by, [first[c] for c in curve_by]), "seed": first["seed"],
                     "threshold": threshold_from_on(ranks, g[y].to_numpy(float), eps),
                     "max_rank": float(np.nanmax(ranks)) if len(ranks) else math.nan,
                     "r_star": float(rs[0]) if len(rs) == 1 else math.nan})
    return pd.DataFrame(rows, columns=["setting", "curve", "seed", "threshold", "max_rank", "r_star"])


def median_threshold(sel: pd.DataFrame, *, x: str, eps: float, y: str = Y) -> float:
    """The from-on threshold of the median-over-seeds curve of one (setting, curve)."""
    med = sel.groupby(pd.to_numeric(sel[x], errors="coerce"))[y].agg(lambda s: float(np.median(_as_inf(s))))
    return threshold_from_on(med.index.to_numpy(float), med.to_numpy(float), eps)


def excess(th: pd.DataFrame) -> np.ndarray:
    """X_s = max(T_s − R*, 0), censored seeds as +inf."""
    t = np.where(np.isnan(th["threshold"].to_numpy(float)), np.inf, th["threshold"].to_numpy(float))
    return np.maximum(t - th["r_star"].to_numpy(float), 0.0)


def threshold_claim(th: pd.DataFrame, setting: str, eps: float) -> Claim:
    """"gradient LoRA reaches ε from R* on" for one setting's per-seed thresholds (rows of one curve)."""
    x = excess(th)
    n_cens = int(np.isinf(x).sum())
    eff = mean_effect(np.where(np.isinf(x), np.nan, x))
    statement = f"gradient LoRA reaches `{Y}` < {eps:g} from R* on ({setting})"
    c = claim(statement, eff, "theory rank R* = ⌈D·L̄/L⌉ (excess rank max(T − R*, 0))", below=0.5)
    if n_cens or eff.n[0] < len(x):
        return Claim(statement + f"; {n_cens} of {len(x)} seeds never reach ε (censored)", eff, c.control,
                     c.rule + " and no seed censored", NOT)
    return Claim(c.statement, eff, c.control, c.rule + " and no seed censored", c.verdict)


def overall_claim(per_setting: list[Claim], th: pd.DataFrame, eps: float) -> Claim:
    """Pooled excess over every (setting, seed); shows iff every setting's claim shows."""
    x = excess(th)
    eff = mean_effect(np.where(np.isinf(x), np.nan, x))
    statement = (f"gradient LoRA reaches `{Y}` < {eps:g} from R* on in all {len(per_setting)} settings "
                 f"({int(np.isinf(x).sum())} censored seeds)")
    return Claim(statement, eff, "theory rank R* per setting", "every setting's claim shows",
                 all_show(statement, per_setting))


def ey_pairs(sel: pd.DataFrame, *, x: str) -> pd.DataFrame:
    """Rows below R* with a positive finite Eckart–Young tail (the bound's range): test/mse and the tail."""
    if TAIL not in sel.columns:
        return sel.iloc[:0]
    tail = pd.to_numeric(sel[TAIL], errors="coerce")
    below = pd.to_numeric(sel[x], errors="coerce") < theory_rank(sel)
    return sel[below & np.isfinite(tail) & (tail > 0)]


def ey_claim(pairs: pd.DataFrame, setting: str, within: float = EY_WITHIN) -> Claim:
    """"gradient LoRA attains the Eckart–Young bound below R*": paired ratio test/mse / ey_tail."""
    eff = ratio(pairs["test/mse"].to_numpy(float), pairs[TAIL].to_numpy(float), paired=True)
    return claim(f"gradient LoRA attains the Eckart–Young bound below R* ({setting})", eff,
                 "the Eckart–Young tail Σ_{i>L·R} σ_i(∏W̄ − ∏W)²/D", within=(1 / within, within))
