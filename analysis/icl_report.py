"""The report section of an in-context-learning sweep (`report.kind: icl_curve`): error vs number of
in-context examples k per model, with the baselines computed on the same prompts overlaid (Garg et al.
2022 Fig. 2; papers.md §0.1, §4).

Rows carry `nse/<who>/kNN` — the normalised squared error of `<who>` (`model`, or a baseline such as
`least_squares`) at in-context position k, averaged over the member's evaluation prompts. Per curve
(`report.curve_by`, e.g. model.name) and k: the mean over seeds with a seed-bootstrap 95% band. The
baselines do not depend on the model, so each is pooled over every row of the sweep.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.atomic import save_figure
from analysis.markdown import FLAG, Section, num, table
from analysis.meta import SweepMeta, canon, label, require

COLUMN = re.compile(r"^nse/(?P<who>[A-Za-z0-9_]+)/k(?P<k>\d+)$")
MODEL = "model"


def nse_columns(runs: pd.DataFrame) -> dict[str, dict[int, str]]:
    """who -> {k: column}."""
    out: dict[str, dict[int, str]] = {}
    for c in runs.columns:
        m = COLUMN.match(str(c))
        if m:
            out.setdefault(m["who"], {})[int(m["k"])] = c
    return out


def mean_band(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean over seeds and the 2.5/97.5 percentiles of bootstrap means (NaNs dropped)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    boots = rng.choice(v, size=(n_boot, v.size), replace=True).mean(1)
    return float(v.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def curves(runs: pd.DataFrame, curve_by: list[str], *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Long table: curve, who, k, mean, lo, hi, n (seeds)."""
    cols, rng, rows = nse_columns(runs), np.random.default_rng(seed), []
    groups = runs.groupby([runs[c].map(canon) for c in curve_by], sort=True) if curve_by else [((), runs)]
    for _, sub in groups:
        name = label(curve_by, [sub.iloc[0][c] for c in curve_by]) or "all"
        for k, col in sorted(cols.get(MODEL, {}).items()):
            vals = pd.to_numeric(sub[col], errors="coerce").to_numpy(float)
            rows.append({"curve": name, "who": MODEL, "k": k, "n": int(np.isfinite(vals).sum()),
                         **dict(zip(("mean", "lo", "hi"), mean_band(vals, n_boot, rng)))})
    for who, by_k in sorted(cols.items()):
        if who == MODEL:
            continue
        for k, col in sorted(by_k.items()):
            vals = pd.to_numeric(runs[col], errors="coerce").to_numpy(float)
            rows.append({"curve": who, "who": who, "k": k, "n": int(np.isfinite(vals).sum()),
                         **dict(zip(("mean", "lo", "hi"), mean_band(vals, n_boot, rng)))})
    return pd.DataFrame(rows)


def plot(tab: pd.DataFrame, dim: float | None, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (curve, who), sub in tab.groupby(["curve", "who"], sort=True):
        style = "-" if who == MODEL else "--"
        ax.plot(sub["k"], sub["mean"], style, label=curve, lw=1.6 if who == MODEL else 1.0)
        if who == MODEL:
            ax.fill_between(sub["k"], sub["lo"], sub["hi"], alpha=0.2)
    if dim:
        ax.axvline(dim, color="grey", lw=0.8, ls=":", label=f"k = d = {num(dim)}")
    ax.set_xlabel("in-context examples k")
    ax.set_ylabel("normalised squared error")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def icl_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *, figure_name: str = "icl_curve.png",
                n_boot: int = 1000, seed: int = 0) -> Section:
    """Markdown and figure for one icl_curve sweep (`runs` = that sweep's rows)."""
    if MODEL not in nse_columns(runs):
        return Section(f"{FLAG} icl_curve report skipped: no `nse/model/kNN` columns on the rows.\n")
    require(runs, list(meta.curve_by), "report.curve_by")
    ok = runs[runs["status"].astype(str) == "ok"] if "status" in runs.columns else runs
    if ok.empty:
        return Section(f"{FLAG} icl_curve report skipped: no run finished ok.\n")
    tab = curves(ok, list(meta.curve_by), n_boot=n_boot, seed=seed)
    dims = sorted({float(v) for v in ok["task.dim"].dropna()}) if "task.dim" in ok.columns else []
    dim = dims[0] if len(dims) == 1 else None
    fig = plot(tab, dim, outdir / figure_name)
    K = int(tab["k"].max()) + 1
    picks = sorted({0, *(int(x) for x in ([dim / 2, dim - 1, dim, 2 * dim] if dim else [])), K - 1} & set(range(K)))
    rows = []
    for (curve, who), sub in tab.groupby(["curve", "who"], sort=True):
        by_k = sub.set_index("k")
        rows.append({"curve": curve, "n": int(by_k["n"].max()),
                     **{f"k{k}": f"{num(by_k.at[k, 'mean'])} [{num(by_k.at[k, 'lo'])}, {num(by_k.at[k, 'hi'])}]"
                        if who == MODEL else num(by_k.at[k, "mean"]) for k in picks if k in by_k.index}})
    md = [("Normalised squared error vs in-context examples k (mean over seeds; model curves with a "
           "seed-bootstrap 95% band; baselines on the same evaluation prompts, dashed)."), "",
          table(rows, [("curve", "curve"), ("n", "seeds")] + [(f"k{k}", f"k={k}") for k in picks]), "",
          f"![error vs k]({fig.name})", ""]
    return Section("\n".join(md), figures=[fig])
