"""The report section of a `lora_threshold` sweep: gradient-LoRA rank thresholds against R* per setting, the
linear case's Eckart–Young bound beside the measured error, claims (Zeng & Lee, ICLR 2024; papers.md §2).

Settings are the values of `report.panel_by` (e.g. model.activation, model.width, model.depth,
task.target_depth) plus any config column that varies between cells without being named; curves are
`report.curve_by` (train.method). ε is `report.theory["epsilon"]` (default `lora_threshold.EPSILON`, flagged).
The construction curve (train.method = construction) is the reference; every other curve gets the claims.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.atomic import save_figure
from analysis.lora_plots import plot_error_curves, plot_thresholds
from analysis.lora_threshold import (
    EPSILON,
    EY_WITHIN,
    TAIL,
    Y,
    excess,
    ey_claim,
    ey_pairs,
    median_threshold,
    overall_claim,
    seed_thresholds,
    selected_rows,
    threshold_claim,
)
from analysis.markdown import FLAG, Section, num, table
from analysis.meta import SweepMeta, canon, hidden_axes, label, require, value_key
from analysis.rank_curves import HYPER, theory_rank
from analysis.verdict import claims_markdown

CONSTRUCTION = "construction"
SHORT = (("model.activation", ""), ("model.width", "D="), ("model.depth", "L="), ("task.target_depth", "L̄="),
         ("task.pretrained", "pretrained="))


def _short(first: pd.Series, setting_by: list[str]) -> str:
    names = dict(SHORT)
    return " ".join(f"{names.get(c, c + '=')}{canon(first[c])}" for c in setting_by)


def _seed_text(t: pd.Series, max_rank: float) -> str:
    return ", ".join(num(v) if np.isfinite(v) else f">{num(max_rank)}" for v in t.to_numpy(float))


def _excess_text(cl, x_s: np.ndarray) -> str:
    """'0 [0, 0]'; with censored seeds (never reach ε) 'k of n censored; others a, b' (no interval: the claim
    does not show)."""
    n_cens = int(np.isinf(x_s).sum())
    if not n_cens:
        return cl.effect.text()
    others = x_s[np.isfinite(x_s)]
    return f"{n_cens} of {len(x_s)} censored" + (f"; others {', '.join(num(v) for v in others)}" if others.size else "")


def _is_construction(curve_label: str) -> bool:
    return f"={CONSTRUCTION}" in curve_label


def lora_threshold_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *,
                           figure_name: str = "lora_threshold.png", n_boot: int = 1000, seed: int = 0) -> Section:
    """Markdown, claims and two figures (thresholds; error curves with the Eckart–Young tail); n_boot and seed
    are the report's shared signature (analysis.report_kinds): no interval here is a bootstrap."""
    x = meta.x or "adapter.rank"
    require(runs, [x, Y, "seed", "model.width", "model.depth", "task.target_depth"], "lora_threshold report")
    require(runs, list(meta.panel_by) + list(meta.curve_by), "report.curve_by/panel_by")
    flags = []
    eps = meta.theory.get("epsilon")
    if eps is None:
        eps = EPSILON
        flags.append(f"{FLAG} report.theory has no `epsilon`: ε = {EPSILON:g} (the default).")
    eps = float(eps)
    curve_by = list(meta.curve_by)
    hidden = hidden_axes(runs, list(meta.panel_by) + curve_by + [x], set(HYPER))
    if hidden:
        flags.append(f"{FLAG} columns not in report.panel_by vary between cells: {', '.join(hidden)}; "
                     "they are part of the setting.")
    setting_by = list(meta.panel_by) + hidden
    select = meta.select if meta.select in runs.columns else None
    ok = runs[~runs["status"].astype(str).isin(["failed", "pruned"])] if "status" in runs.columns else runs
    sel = selected_rows(ok, x=x, select=select, cell_by=setting_by + curve_by)
    sel = sel.assign(_rstar=theory_rank(sel))
    seeds = seed_thresholds(sel, x=x, setting_by=setting_by, curve_by=curve_by, eps=eps)

    rows, claims, curves, ey_rows = [], [], [], []
    gradient_claims, gradient_seeds = [], []
    groups = [g for _, g in sel.groupby([sel[c].map(canon) for c in setting_by], sort=False, dropna=False)]
    groups.sort(key=lambda g: tuple(value_key(g.iloc[0][c]) for c in setting_by))     # numeric order: 8 before 16
    for g in groups:
        first = g.iloc[0]
        setting = label(setting_by, [first[c] for c in setting_by])
        short = _short(first, setting_by)
        r_star = float(g["_rstar"].iloc[0])
        by_curve = {label(curve_by, [c.iloc[0][k] for k in curve_by]): c
                    for _, c in g.groupby([g[k].map(canon) for k in curve_by], sort=True)} if curve_by else {"": g}
        cons = next((c for k, c in by_curve.items() if _is_construction(k)), None)
        cons_thr = median_threshold(cons, x=x, eps=eps) if cons is not None else np.nan
        for curve, c in by_curve.items():
            ranks = pd.to_numeric(c[x], errors="coerce")
            med = c.groupby(ranks)[Y].agg(lambda s: float(np.median(pd.to_numeric(s, errors="coerce"))))
            lo, hi = c.groupby(ranks)[Y].min(), c.groupby(ranks)[Y].max()
            tail = (c.groupby(ranks)[TAIL + "_rel"].median() if TAIL + "_rel" in c.columns
                    else pd.Series(np.nan, index=med.index))
            curves += [{"setting": short, "curve": curve or "all", "x": r, "median": med[r], "ymin": lo[r],
                        "ymax": hi[r], "r_star": r_star, "tail": tail.get(r, np.nan)} for r in med.index]
            if _is_construction(curve):
                continue
            th = seeds[(seeds["setting"] == setting) & (seeds["curve"] == curve)]
            cl = threshold_claim(th, short, eps)
            claims.append(cl.record(panel=setting, curve=curve, r_star=r_star))
            gradient_claims.append(cl)
            gradient_seeds.append(th)
            x_s = excess(th)
            rows.append({"setting": setting, "short": short, "curve": curve or "all", "r_star": r_star,
                         "seeds": _seed_text(th["threshold"], float(th["max_rank"].max())),
                         "median_threshold": median_threshold(c, x=x, eps=eps), "construction": cons_thr,
                         "max_rank": float(th["max_rank"].max()),
                         "excess": _excess_text(cl, x_s), "censored": int(np.isinf(x_s).sum()), "verdict": cl.verdict})
            pairs = ey_pairs(c, x=x)
            if not pairs.empty:
                ecl = ey_claim(pairs, short)
                claims.append(ecl.record(panel=setting, curve=curve, r_star=r_star))
                cons_pairs = ey_pairs(cons, x=x) if cons is not None else pairs.iloc[:0]
                ey_rows.append({"short": short, "curve": curve or "all", "pairs": len(pairs),
                                "ratio": ecl.effect.text(),
                                "construction": (float(np.exp(np.median(np.log(cons_pairs["test/mse"].to_numpy(float)
                                                 / cons_pairs[TAIL].to_numpy(float))))) if len(cons_pairs) else np.nan),
                                "verdict": ecl.verdict, "claim": ecl})
    if not rows:
        return Section(f"{FLAG} lora_threshold report: no gradient (non-construction) curve in the rows.\n")
    overall = overall_claim(gradient_claims, pd.concat(gradient_seeds), eps)
    claims.append(overall.record(panel="all", curve="all"))
    all_claims = gradient_claims + [overall] + [r["claim"] for r in ey_rows]

    curves_df = pd.DataFrame(curves)
    fig1 = save_figure(plot_thresholds(rows, seeds, eps=eps, title=meta.sweep), outdir / figure_name)
    fig2 = save_figure(plot_error_curves(curves_df, eps=eps, title=""),
                       outdir / figure_name.replace(".png", "_curves.png"))
    hyper = [h for h in HYPER if h in runs.columns and runs[h].nunique() > 1]
    lines = [
        f"Error measure: **`{Y}` = test MSE / the target's output variance** (`test/target_var`, the test MSE "
        "of predicting the target's mean; the paper reports the raw `nn.MSELoss`, kept as `test/mse`). "
        f"ε = {eps:g}. Threshold of a seed: the smallest probed rank from which on every probed rank has "
        f"`{Y}` < ε (censored, written >max, when the largest rank misses ε); per rank the hyper-parameters "
        + (f"({', '.join(f'`{h}`' for h in hyper)}) with the lowest median `{select}` over seeds. " if hyper and select
           else "are fixed. ")
        + "R* = ⌈D·L̄/L⌉. Claim per setting: the excess max(T − R*, 0) over seeds, shown iff no seed is censored "
        "and its interval lies below 0.5.",
        "", "### Thresholds", "",
        table(rows, [("short", "setting"), ("curve", "curve"), ("r_star", "R*"), ("seeds", "threshold per seed"),
                     ("median_threshold", "median-curve threshold"), ("construction", "construction threshold"),
                     ("excess", "excess over R* [CI]"), ("verdict", "reaches ε from R* on")]),
        "", f"![{meta.sweep} thresholds]({fig1.name})", "",
    ]
    if ey_rows:
        lines += ["### Linear case: Eckart–Young bound", "",
                  "Bound: `test/ey_tail` = Σ_{i>L·R} σ_i(∏W̄ − ∏W)²/D, the least test MSE of any rank-R LoRA on an "
                  "identity-activation network (the paper's linear-network result; drawn dashed beside the measured "
                  f"error). Ratio = test/mse / bound over ranks below R* (geometric mean, paired by seed and rank); "
                  f"shows iff its interval lies within [{1 / EY_WITHIN:.2g}, {EY_WITHIN:g}].", "",
                  table(ey_rows, [("short", "setting"), ("curve", "curve"), ("pairs", "(rank, seed) pairs"),
                                  ("ratio", "measured / bound [CI]"), ("construction", "construction / bound (median)"),
                                  ("verdict", "attains the bound")]), ""]
    lines += [f"![{meta.sweep} error curves]({fig2.name})", "", "### Claims", "", claims_markdown(all_claims),
              "### Flags", ""]
    lines += flags or ["No flags."]
    return Section("\n".join(lines) + "\n", [], [fig1, fig2], claims)
