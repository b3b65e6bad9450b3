"""Figures: capacity threshold vs problem size (log-log) and error vs rank.

Figures are built on `matplotlib.figure.Figure` directly (Agg rendering on save), never through
pyplot, so importing `analysis` changes no global backend and works headless.

Capacity plot: per curve, m* vs x with the bootstrap interval as error bars; the fit
m* = exp(intercept) x^b as a solid line (the upper-half fit dotted); the theory slope t as a dashed line through the curve's
geometric-mean point (x_g, m_g) = (exp mean log x, exp mean log m*), i.e. m = m_g (x / x_g)^t, since
only the slope is a prediction (gradient-trained constants differ from constructive ones); censored
cells as open up-triangles at the largest probed value (m* > that value).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

LOG_FLOOR = 1e-16  # rank plots: values <= this (an exact construction) are drawn at the floor


def panel_grid(n_panels: int, width: float = 5.2, height: float = 5.0):
    """A figure of n_panels axes, at most 3 per row, unused axes hidden: (fig, axes flat)."""
    ncols = min(max(n_panels, 1), 3)
    nrows = math.ceil(max(n_panels, 1) / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def _fmt(v: float) -> str:
    return "nan" if not np.isfinite(v) else f"{v:.2f}"


def plot_capacity(thresholds: pd.DataFrame, fits: list[dict], *, x_label: str, y_label: str,
                  title: str = "") -> Figure:
    """Minimal capacity vs x, one panel per `panel`, one series per `curve`.

    thresholds: output of `analysis.thresholds.capacity_thresholds`.
    fits: records with keys panel, group (= curve label), exponent, ci_low, ci_high, intercept, theory and
    optionally range ("all" or "upper", with x_min/x_max): the whole-range fit is solid, the upper-range fit
    dotted over its x values. A curve whose label names `train.method=construction` (an optimizer-free
    reference) is drawn with squares. Left-censored cells (m* <= smallest probe) as open down-triangles.
    """
    panels = list(dict.fromkeys(thresholds["panel"])) or [""]
    fig, axes = panel_grid(len(panels), width=6.2)
    fit_of = {(f.get("panel", ""), f["group"], f.get("range", "all")): f for f in fits}
    colors = [f"C{i}" for i in range(10)]
    for ax, panel in zip(axes, panels):
        sub = thresholds[thresholds["panel"] == panel]
        labelled = set()
        for i, (curve, c) in enumerate(sub.groupby("curve", sort=False)):
            color = colors[i % len(colors)]
            pts = c[~c["censored"]]
            fit = fit_of.get((panel, curve, "all"), {})
            up = fit_of.get((panel, curve, "upper"), {})
            b, lo, hi, theory = (fit.get(k) for k in ("exponent", "ci_low", "ci_high", "theory"))
            name = curve or "all"
            if b is not None and np.isfinite(b):
                name += f": b = {_fmt(b)} [{_fmt(lo)}, {_fmt(hi)}]"
            if up.get("exponent") is not None and np.isfinite(up["exponent"]):
                name += f", upper {_fmt(up['exponent'])} [{_fmt(up['ci_low'])}, {_fmt(up['ci_high'])}]"
            if theory is not None:
                name += f" (theory {theory:g})"
            yerr = np.vstack([(pts["threshold"] - pts["ci_low"]).to_numpy(float),
                              (pts["ci_high"] - pts["threshold"]).to_numpy(float)])
            yerr = np.clip(np.nan_to_num(yerr, nan=0.0), 0, None)
            marker = "s" if "construction" in str(curve) else "o"
            ax.errorbar(pts["x"], pts["threshold"], yerr=yerr, fmt=marker, color=color, capsize=3, label=name)
            for kind, cells, y, m in (("censored (m* > largest probe)", c[c["censored"]], "max_probe", "^"),
                                      ("m* <= smallest probe", c[_left(c)], "min_probe", "v")):
                if len(cells):
                    ax.scatter(cells["x"], cells[y], marker=m, facecolors="none", edgecolors=color, s=60,
                               label=None if kind in labelled else kind)
                    labelled.add(kind)
            if len(pts) >= 1:
                xs = np.geomspace(c["x"].min(), c["x"].max(), 50) if c["x"].nunique() > 1 else c["x"].to_numpy(float)
                if b is not None and np.isfinite(b):
                    ax.plot(xs, math.exp(fit["intercept"]) * xs ** b, "-", color=color, lw=1.5)
                if up.get("exponent") is not None and np.isfinite(up["exponent"]) and up.get("x_min"):
                    xu = np.geomspace(up["x_min"], up["x_max"], 20)
                    ax.plot(xu, math.exp(up["intercept"]) * xu ** up["exponent"], ":", color=color, lw=2.2)
                if theory is not None:
                    xg = math.exp(np.log(pts["x"].to_numpy(float)).mean())
                    mg = math.exp(np.log(pts["threshold"].to_numpy(float)).mean())
                    ax.plot(xs, mg * (xs / xg) ** theory, "--", color=color, lw=1, alpha=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_ticks(ax, sorted(set(sub["x"].dropna())))
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"minimal {y_label}")
        ax.set_title(" ".join(filter(None, [title, panel])), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, title="fit: all (solid), upper half (dotted); theory slope (dashed)",
                      title_fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14))  # below the axes
    return fig


def _left(c: pd.DataFrame) -> pd.Series:
    """Left-censored cells (the smallest probe > 1 already passes); False where the columns are absent."""
    if "lower_censored" not in c or "min_probe" not in c:
        return pd.Series(False, index=c.index)
    return c["lower_censored"].astype(bool) & ~c["censored"].astype(bool) & (c["min_probe"] > 1)


def _plain_log_ticks(ax, xs: list) -> None:
    """Log axes labelled with plain numbers: x ticks at the measured sizes, y at 1-2-5 steps."""
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_rank_curves(table: pd.DataFrame, *, x_label: str, y_label: str, theory: dict | None = None,
                     title: str = "") -> Figure:
    """Selected median y vs rank with min-max band, one line per curve, one panel per panel value.

    table: output of `analysis.rank_curves.select_rank_curves`. theory: panel -> list of R* values,
    each drawn as a vertical line.
    """
    theory = theory or {}
    panels = list(dict.fromkeys(table["panel"])) or [""]
    fig, axes = panel_grid(len(panels))
    for ax, panel in zip(axes, panels):
        sub = table[table["panel"] == panel]
        for i, (curve, c) in enumerate(sub.groupby("curve", sort=False)):
            c = c.sort_values("x")
            med = np.clip(c["median"].to_numpy(float), LOG_FLOOR, None)
            ok = np.isfinite(med)
            ax.plot(c["x"][ok], med[ok], "o-", color=f"C{i % 10}", label=curve or "all", ms=4)
            lo = np.clip(c["ymin"].to_numpy(float), LOG_FLOOR, None)
            hi = np.clip(c["ymax"].to_numpy(float), LOG_FLOOR, None)
            band = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(c["x"][band], lo[band], hi[band], color=f"C{i % 10}", alpha=0.2, lw=0)
        for r in theory.get(panel, []):
            if np.isfinite(r):
                ax.axvline(r, color="k", ls="--", lw=1, label=f"theory R* = {r:g}")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{y_label} (median over seeds, min-max band)")
        ax.set_title(" ".join(filter(None, [title, panel])), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig
