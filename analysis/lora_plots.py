"""Figures of the LoRA threshold report (Zeng & Lee, ICLR 2024; papers.md §2).

`plot_thresholds`: one column per setting; the theory rank R* as a black bar, each seed's measured threshold
as a dot (jittered), a censored seed (never reached ε up to the largest rank) as an open up-triangle above
the largest rank, the median curve's threshold as a cross, the construction's threshold as a grey square.
`plot_error_curves`: per setting, median `test/mse_rel` vs rank (min-max band over seeds) per method, ε as a
horizontal line, R* as a vertical line and, for identity activations, the Eckart–Young tail (the linear
case's below-threshold bound) as a dashed black curve.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.plots import LOG_FLOOR, panel_grid


def plot_thresholds(rows: list[dict], seeds: pd.DataFrame, *, eps: float, title: str = "") -> Figure:
    """rows: one dict per (setting, curve) with setting, curve, r_star, median_threshold, construction,
    max_rank; seeds: `analysis.lora_threshold.seed_thresholds` rows of the same curves."""
    fig = Figure(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.8))
    ax = fig.subplots()
    for i, r in enumerate(rows):
        ax.hlines(r["r_star"], i - 0.35, i + 0.35, color="k", lw=2.5, label="theory R*" if i == 0 else None)
        s = seeds[(seeds["setting"] == r["setting"]) & (seeds["curve"] == r["curve"])]
        t = s["threshold"].to_numpy(float)
        jit = np.linspace(-0.2, 0.2, max(len(t), 1))[: len(t)]
        ok = np.isfinite(t)
        ax.plot(i + jit[ok], t[ok], "o", color="C0", ms=6, alpha=0.8, label="seed threshold" if i == 0 else None)
        ax.plot(i + jit[~ok], np.full((~ok).sum(), r["max_rank"] + 1), "^", mfc="none", color="C3", ms=8,
                label="seed censored (> largest rank)" if i == 0 else None)
        med = r["median_threshold"]
        ax.plot(i, med if np.isfinite(med) else r["max_rank"] + 1, "x", color="C1", ms=10, mew=2,
                label="median-curve threshold" if i == 0 else None)
        if np.isfinite(r.get("construction", np.nan)):
            ax.plot(i + 0.3, r["construction"], "s", color="0.5", ms=6,
                    label="construction threshold" if i == 0 else None)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["short"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"smallest rank from which test/mse_rel < {eps:g}")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_error_curves(curves: pd.DataFrame, *, eps: float, title: str = "") -> Figure:
    """curves: one row per (setting, curve, rank) with setting, curve, x, median, ymin, ymax, r_star and
    optionally tail (median Eckart–Young tail, relative)."""
    settings = list(dict.fromkeys(curves["setting"])) or [""]
    fig, axes = panel_grid(len(settings), width=5.2, height=4.4)
    for ax, setting in zip(axes, settings):
        sub = curves[curves["setting"] == setting]
        for i, (curve, c) in enumerate(sub.groupby("curve", sort=False)):
            c = c.sort_values("x")
            med = np.clip(c["median"].to_numpy(float), LOG_FLOOR, None)
            ax.plot(c["x"], med, "o-", color=f"C{i}", ms=3, label=curve)
            lo, hi = (np.clip(c[k].to_numpy(float), LOG_FLOOR, None) for k in ("ymin", "ymax"))
            band = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(c["x"][band], lo[band], hi[band], color=f"C{i}", alpha=0.2, lw=0)
        if "tail" in sub.columns and sub["tail"].notna().any():
            t = sub.drop_duplicates("x").sort_values("x")
            ax.plot(t["x"], np.clip(t["tail"].to_numpy(float), LOG_FLOOR, None), "k--", lw=1.2,
                    label="Eckart–Young tail (bound)")
        ax.axhline(eps, color="C3", ls=":", lw=1, label=f"ε = {eps:g}")
        rs = sub["r_star"].dropna().unique()
        if len(rs) == 1:
            ax.axvline(rs[0], color="k", ls="--", lw=0.8, label=f"R* = {rs[0]:g}")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("adapter.rank")
        ax.set_ylabel("test/mse_rel (median, min–max band)")
        ax.set_title(" ".join(filter(None, [title, setting])), fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return fig
