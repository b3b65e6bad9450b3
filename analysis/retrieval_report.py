"""The report section of a retrieval sweep (`report.kind: retrieval`; papers.md §6, "From Artificial Needles
to Real Haystacks"): accuracy heat maps over context length × gold position, and the context-capacity curve.

Rows carry `acc/pos{i}` — exact-match accuracy of the prompts whose gold dict is at slot i of n
(`ftcore.tasks.kv_retrieval`) — and `report.x` (the context-length knob, e.g. `task.n_dicts`; n = the number
of acc/pos columns present on the row). Model sizes are the values of `report.curve_by`.

(a) Heat map per model size. Slot i of n sits at the relative depth f_i = (i + ½)/n ∈ (0, 1); bin
    b = ⌊f_i · n_bins⌋ collects the slots of every context length, so lengths share a position axis:

        H[size](x, b) = mean over seeds of  mean_{i : ⌊f_i n_bins⌋ = b}  acc/pos{i}

    (empty when no slot of that length falls in the bin). Rows of the table also give `acc/mean` and
    `task/context_tokens` (mean prompt length in tokens).

(b) Context capacity. With the rule `report.select` = "<metric><op><threshold>" (default acc/mean>=0.9) and
    ā(size, x) the seed mean of the metric, the longest context that passes is

        L_max(size) = max { x : ā(size, x) passes }

    Censored: no x passes (L_max < min x) or the largest x passes (L_max ≥ max x); both are listed and left
    out of the fit. A size whose passing set is not a prefix of the x grid is flagged non-monotone.
    Fit L_max ∝ size^α per group (the last `report.curve_by` column is the size, the others and
    `report.panel_by` split the groups) with `analysis.powerlaw.fit_powerlaw`; the CI is the union of the
    OLS t-interval and a seed bootstrap (seeds resampled with replacement, shared across x, L_max
    recomputed; censored replicates dropped). One fits.json record per group, as `capacity_report`.
"""
from __future__ import annotations

import math
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.atomic import save_figure
from analysis.markdown import FLAG, Section, interval, num, table
from analysis.meta import (
    SweepMeta,
    canon,
    hidden_axes,
    label,
    require,
    theory_for,
    value_key,
)
from analysis.plots import panel_grid, plot_capacity
from analysis.powerlaw import fit_powerlaw

POS = re.compile(r"^acc/pos(?P<i>\d+)$")
DEFAULT_SELECT = "acc/mean>=0.9"
RULE = re.compile(r"^\s*(?P<metric>[^<>=!\s]+)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[-+0-9.eE]+)\s*$")
OPS = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}
N_BINS = 5


def pos_columns(runs: pd.DataFrame) -> dict[int, str]:
    """slot i -> column `acc/pos{i}`."""
    return {int(m["i"]): c for c in runs.columns if (m := POS.match(str(c)))}


def parse_rule(text: str | None) -> tuple[str, str, float]:
    """'acc/mean>=0.9' -> ('acc/mean', '>=', 0.9); ValueError naming report.select otherwise."""
    m = RULE.match(text or DEFAULT_SELECT)
    if not m:
        raise ValueError(f"report.select: must read like {DEFAULT_SELECT!r} (metric, one of >= > <= <, number); "
                         f"got {text!r}")
    return m["metric"], m["op"], float(m["value"])


def bin_labels(n_bins: int) -> list[str]:
    return [f"{round(100 * b / n_bins)}–{round(100 * (b + 1) / n_bins)}%" for b in range(n_bins)]


def position_bins(runs: pd.DataFrame, n_bins: int = N_BINS) -> np.ndarray:
    """(rows, n_bins) per-row mean accuracy in each relative-depth bin (NaN where no slot of the row falls)."""
    cols = pos_columns(runs)
    acc = np.full((len(runs), max(cols, default=-1) + 1), np.nan)
    for i, c in cols.items():
        acc[:, i] = pd.to_numeric(runs[c], errors="coerce").to_numpy(float)
    n = np.isfinite(acc).sum(1)                                     # slots present on each row = its n_dicts
    out = np.full((len(runs), n_bins), np.nan)
    for r in range(len(runs)):
        if n[r] == 0:
            continue
        f = (np.arange(n[r]) + 0.5) / n[r]
        b = np.minimum((f * n_bins).astype(int), n_bins - 1)
        for k in range(n_bins):
            if (b == k).any():
                out[r, k] = np.nanmean(acc[r, :n[r]][b == k])
    return out


def heat_tables(runs: pd.DataFrame, x: str, curve_cols: list[str], n_bins: int = N_BINS) -> pd.DataFrame:
    """Long table: curve, x, bin, mean (over seeds), n (seeds); plus bin = -1 rows for acc/mean and tokens."""
    bins = position_bins(runs, n_bins)
    keys = [runs[c].map(canon) for c in curve_cols] + [runs[x].map(canon)]
    rows = []
    for _, idx in _sorted_groups(runs.groupby(keys, sort=False).indices):
        sub = runs.iloc[idx]
        curve = label(curve_cols, [sub.iloc[0][c] for c in curve_cols]) or "all"
        base = {"curve": curve, "x": float(sub.iloc[0][x]), "n": len(sub)}
        for b in range(n_bins):
            vals = bins[idx, b]
            rows.append({**base, "bin": b, "mean": float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan})
        for metric, b in (("acc/mean", -1), ("task/context_tokens", -2)):
            v = pd.to_numeric(sub[metric], errors="coerce") if metric in sub.columns else pd.Series(dtype=float)
            rows.append({**base, "bin": b, "mean": float(v.mean()) if v.notna().any() else math.nan})
    return pd.DataFrame(rows)


def _sorted_groups(indices: dict) -> list:
    """groupby(...).indices items in numeric-aware order of their (canonical) keys: 32 before 128."""
    return sorted(indices.items(), key=lambda kv: tuple(value_key(v) for v in
                                                        (kv[0] if isinstance(kv[0], tuple) else (kv[0],))))


# ------------------------------------------------------------------------------------- context capacity

def longest_passing(xs: np.ndarray, means: np.ndarray, op: str, thr: float) -> tuple[float, str, bool]:
    """(L_max, censoring, monotone) for x grid `xs` (sorted) and seed means: censoring is '' | 'none passes'
    | 'all pass'; L_max is NaN when censored."""
    ok = OPS[op](np.nan_to_num(means, nan=-np.inf if op[0] == ">" else np.inf), thr)
    if not ok.any():
        return math.nan, "none passes", True
    last = int(np.flatnonzero(ok)[-1])
    monotone = bool(ok[: last + 1].all())
    if last == len(xs) - 1:
        return math.nan, "all pass", monotone
    return float(xs[last]), "", monotone


def longest_passing_replicates(xs: np.ndarray, means: np.ndarray, op: str, thr: float) -> np.ndarray:
    """`longest_passing`'s L_max for every column of means (X, B) at once; NaN where censored."""
    ok = OPS[op](np.nan_to_num(means, nan=-np.inf if op[0] == ">" else np.inf), thr)    # (X, B)
    last = len(xs) - 1 - np.argmax(ok[::-1], axis=0)                                   # last passing row
    return np.where(ok.any(0) & (last < len(xs) - 1), xs[np.minimum(last, len(xs) - 1)], np.nan)


def capacity_table(runs: pd.DataFrame, x: str, size: str, group_cols: list[str], metric: str, op: str,
                   thr: float, n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per (group, size): L_max, its seed-bootstrap 95% interval, censoring; plus replicates (rows, B).

    Seeds are resampled with replacement, the same draw for every x of a size (one replicate = one
    resampled seed set), with a numpy Generator seeded from the cell's label (independent of other cells).
    """
    seed_col = "seed" if "seed" in runs.columns else None
    rows, reps = [], []
    keys = [runs[c].map(canon) for c in group_cols + [size]]
    for _, idx in _sorted_groups(runs.groupby(keys, sort=False).indices):
        sub = runs.iloc[idx]
        xs = np.array(sorted({float(v) for v in pd.to_numeric(sub[x], errors="coerce").dropna()}))
        seeds = sorted(sub[seed_col].unique(), key=value_key) if seed_col else [0]
        M = np.full((len(xs), len(seeds)), np.nan)                           # (X, S) metric per x and seed
        xv = pd.to_numeric(sub[x], errors="coerce").to_numpy(float)
        sv = sub[seed_col].to_numpy() if seed_col else np.zeros(len(sub))
        mv = pd.to_numeric(sub[metric], errors="coerce").to_numpy(float)
        for xi, si, m in zip(xv, sv, mv):
            M[np.searchsorted(xs, xi), seeds.index(si)] = m
        means = np.nanmean(np.where(np.isfinite(M), M, np.nan), 1) if M.size else np.array([])
        L, cens, mono = longest_passing(xs, means, op, thr)
        name = label(group_cols, [sub.iloc[0][c] for c in group_cols])
        rng = np.random.default_rng([seed, zlib.crc32(f"{name}|{canon(sub.iloc[0][size])}".encode())])
        idx_b = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))       # (B, S)
        with np.errstate(invalid="ignore"):
            Mb = M[:, idx_b]                                                  # (X, B, S)
            have = np.isfinite(Mb)
            mb = np.where(have, Mb, 0).sum(-1) / np.maximum(have.sum(-1), 1)
            mb[~have.any(-1)] = np.nan                                        # (X, B)
        rep = longest_passing_replicates(xs, mb, op, thr)
        fin = rep[np.isfinite(rep)]
        lo, hi = (np.percentile(fin, [2.5, 97.5]) if fin.size else (math.nan, math.nan))
        rows.append({"panel": "", "curve": name, "size": float(sub.iloc[0][size]), "L_max": L,
                     "ci_low": float(lo), "ci_high": float(hi), "censoring": cens, "censored": bool(cens),
                     "monotone": mono, "x_min": float(xs.min()), "x_max": float(xs.max()), "n_seeds": len(seeds),
                     "boot_censored_frac": float(1 - fin.size / n_boot) if n_boot else math.nan,
                     "passing": ", ".join(f"{num(a)}:{num(b, 2)}" for a, b in zip(xs, means))})
        reps.append(rep)
    return pd.DataFrame(rows), (np.vstack(reps) if reps else np.zeros((0, n_boot)))


def fit_capacity(cap: pd.DataFrame, reps: np.ndarray, meta: SweepMeta, size: str, y_name: str) -> list[dict]:
    """One fits.json record per group: L_max = c · size^α on the uncensored sizes."""
    out = []
    for curve, c in cap.groupby("curve", sort=False):
        use = ~c["censored"].to_numpy(bool)
        fit = fit_powerlaw(c["size"].to_numpy(float)[use], c["L_max"].to_numpy(float)[use],
                           replicates=reps[c.index.to_numpy()][use])
        theory = theory_for(meta.theory, dict(_parse(curve)))
        out.append({
            "sweep": meta.sweep, "panel": "", "group": curve, "x": size, "y": y_name,
            "exponent": fit.exponent, "ci_low": fit.ci_low, "ci_high": fit.ci_high, "n_points": fit.n_points,
            "theory": theory, "consistent_with_theory": None if theory is None or not fit.ok else fit.contains(theory),
            "intercept": fit.intercept, "r2": fit.r2, "method": fit.method, "n_censored": int((~use).sum()),
            "reason": fit.reason,
        })
    return out


def _parse(curve: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in curve.split(",") if "=" in item)


# ------------------------------------------------------------------------------------------------ figure

def plot_heat(heat: pd.DataFrame, n_bins: int, x_label: str, title: str):
    curves = list(dict.fromkeys(heat["curve"]))
    fig, axes = panel_grid(len(curves), width=4.2, height=3.6)
    im = None
    for ax, curve in zip(axes, curves):
        h = heat[(heat["curve"] == curve) & (heat["bin"] >= 0)]
        xs = sorted(h["x"].unique())
        grid = np.full((len(xs), n_bins), np.nan)
        for r in h.itertuples(index=False):
            grid[xs.index(r.x), int(r.bin)] = r.mean
        im = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
        ax.set_xticks(range(n_bins), bin_labels(n_bins), fontsize=7)
        ax.set_yticks(range(len(xs)), [num(v) for v in xs], fontsize=7)
        ax.set_xlabel("gold position (depth in the context)")
        ax.set_ylabel(x_label)
        ax.set_title(curve, fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=list(axes[:len(curves)]), shrink=0.8, label="exact-match accuracy")
    fig.suptitle(title, fontsize=9)
    return fig


# ------------------------------------------------------------------------------------------------ section

def retrieval_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *, n_boot: int = 1000, seed: int = 0,
                      figure_name: str = "retrieval.png", n_bins: int = N_BINS) -> Section:
    """Markdown, fits and figures for one retrieval sweep (`runs` = that sweep's rows)."""
    if not pos_columns(runs):
        return Section(f"{FLAG} retrieval report skipped: no `acc/pos<i>` columns on the rows.\n")
    if not meta.x:
        return Section(f"{FLAG} retrieval report skipped: `report.x` (the context length, e.g. task.n_dicts) "
                       "is not set on the rows.\n")
    metric, op, thr = parse_rule(meta.select)
    require(runs, [meta.x, *meta.curve_by, *meta.panel_by, metric], "report.x/curve_by/panel_by/select")
    ok = runs[runs["status"].astype(str) == "ok"] if "status" in runs.columns else runs
    if ok.empty:
        return Section(f"{FLAG} retrieval report skipped: no run finished ok.\n")
    hidden = hidden_axes(ok, list(meta.panel_by + meta.curve_by) + [meta.x], set())
    curve_cols = list(meta.panel_by) + list(meta.curve_by) + hidden
    heat = heat_tables(ok, meta.x, curve_cols, n_bins)
    figures = [save_figure(plot_heat(heat, n_bins, meta.x, f"{meta.sweep}: accuracy by context × gold position"),
                           outdir / figure_name)]
    md = [(f"Exact-match accuracy by context length (`{meta.x}`) × gold position: slot i of n at depth (i + ½)/n, "
          f"in {n_bins} bins; mean over seeds (status ok). `tokens` = mean prompt length."), ""]
    if hidden:
        md += [(f"{FLAG} columns not in report.curve_by/panel_by vary between cells: {', '.join(hidden)}; added to "
               "the curve labels so that cells are not mixed."), ""]
    labels = bin_labels(n_bins)
    for curve, h in heat.groupby("curve", sort=False):
        rows = []
        for xv, hx in h.groupby("x", sort=False):
            by = dict(zip(hx["bin"], hx["mean"]))
            rows.append({"x": xv, "tokens": by.get(-2), "all": by.get(-1), "n": int(hx["n"].iloc[0]),
                         **{f"b{b}": by.get(b) for b in range(n_bins)}})
        md += [f"**{curve}**", "", table(rows, [("x", meta.x), ("tokens", "tokens"), ("n", "seeds"), ("all", "acc (all)")]
                                         + [(f"b{b}", labels[b]) for b in range(n_bins)]), ""]
    md += [f"![accuracy heat map]({figures[0].name})", ""]

    # context capacity
    size_cols = list(meta.curve_by) + hidden
    md += ["### Context capacity", ""]
    if not size_cols:
        return Section("\n".join(md + [f"{FLAG} no context-capacity curve: `report.curve_by` names no model size.", ""]),
                       figures=figures)
    size, groups = size_cols[-1], list(meta.panel_by) + size_cols[:-1]
    if not pd.to_numeric(ok[size], errors="coerce").notna().all():
        return Section("\n".join(md + [f"{FLAG} no context-capacity curve: the size column `{size}` is not numeric.",
                                       ""]), figures=figures)
    cap, reps = capacity_table(ok, meta.x, size, groups, metric, op, thr, n_boot=n_boot, seed=seed)
    y_name = f"L_max({meta.x} | {metric}{op}{num(thr)})"
    fits = fit_capacity(cap, reps, meta, size, y_name)
    md += [(f"L_max = the longest `{meta.x}` whose seed-mean `{metric}` {op} {num(thr)} (`report.select`), per "
           f"`{size}`; 95% interval from a seed bootstrap (B = {n_boot}). Censored cells are listed and left out of "
           f"the fit L_max ∝ {size}^α (exponent CI: union of the OLS t-interval and the seed bootstrap)."), "",
           table([{**r, "L": r["L_max"] if not r["censored"] else
                   (f"< {num(r['x_min'])}" if r["censoring"] == "none passes" else f"≥ {num(r['x_max'])}"),
                   "ci": interval(r["ci_low"], r["ci_high"]), "curve": r["curve"] or "all"}
                  for r in cap.to_dict("records")],
                 [("curve", "group"), ("size", size), ("L", "L_max"), ("ci", "95% CI"), ("censoring", "censored"),
                  ("monotone", "monotone"), ("n_seeds", "seeds"), ("passing", f"{meta.x}: mean {metric}")]), "",
           table([{**f, "ci": interval(f["ci_low"], f["ci_high"]), "group": f["group"] or "all"} for f in fits],
                 [("group", "group"), ("exponent", "exponent α"), ("ci", "95% CI"), ("n_points", "points"),
                  ("n_censored", "censored"), ("r2", "R²"), ("reason", "no fit because")]), ""]
    flags = [f"{FLAG} censored: `{r['curve'] or 'all'}` at {size} = {num(r['size'])}: "
             + (f"no {meta.x} reaches {metric} {op} {num(thr)} (L_max < {num(r['x_min'])})"
                if r["censoring"] == "none passes" else
                f"every {meta.x} up to {num(r['x_max'])} passes (L_max ≥ {num(r['x_max'])})") + "; excluded from the fit."
             for r in cap.to_dict("records") if r["censored"]]
    flags += [f"{FLAG} non-monotone: `{r['curve'] or 'all'}` at {size} = {num(r['size'])}: a shorter context fails "
              f"while a longer one passes ({r['passing']}); L_max = the longest passing." for r in cap.to_dict("records")
              if not r["monotone"]]
    flags += [f"{FLAG} `{f['group'] or 'all'}`: no exponent ({f['reason']})." for f in fits if f["reason"]]
    md += flags if flags else ["No flags."]
    if (~cap["censored"]).any():
        thr_tab = cap.rename(columns={"size": "x", "L_max": "threshold"}).assign(
            max_probe=np.where(cap["censoring"] == "all pass", cap["x_max"], cap["x_min"]))
        figures.append(save_figure(plot_capacity(thr_tab, fits, x_label=size, y_label=f"L_max ({meta.x})",
                                                 title=f"{meta.sweep}: context capacity"),
                                   outdir / figure_name.replace(".png", "_capacity.png")))
        md += ["", f"![context capacity]({figures[-1].name})"]
    return Section("\n".join(md) + "\n", fits, figures)
