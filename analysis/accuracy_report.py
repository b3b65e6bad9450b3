"""The report section of an accuracy sweep (`report.kind: accuracy_table`): which architecture solves which task,
with how much confidence (Park et al. 2024, "Can Mamba Learn How to Learn?", papers.md §5c: sparse parity and
vector-valued MQAR across transformer / Mamba / hybrid / MambaFormer).

Per panel (`report.panel_by`, e.g. task.name) and curve (`report.curve_by`, e.g. model.name): the final value of
`report.y` (default `val/acc`) — the mean over seeds with a seed-bootstrap 95% CI (`icl_report.mean_band`) — next
to the chance level when the rows carry it (the metric `<y>/chance`, e.g. `val/acc/chance` = 1/2 for parity,
1/n_pairs for MQAR). One sentence per panel names the best and the worst curve and says whether their CIs separate:

    "X beats Y: CIs do not overlap"        best.lo > worst.hi  (for an error/loss y: best.hi < worst.lo)
    "no separation at this scale"          otherwise

`report.theory` may hold the published value of y per cell, keyed by "panel,curve" labels (the format of
`analysis.meta.theory_for`, e.g. {"task.name=mqar,model.name=mamba": 0.8}); then the panel also says whether the
published ordering — every curve with the highest published value vs every curve with the lowest — shows here
(all those pairs separate in the published direction), is reversed (some pair separates the other way), or does
not show at this scale. The figure: accuracy per in-context position (`acc/kNN` columns, mean and band) for a
panel that has them, else a bar chart of y with its CI and the chance line.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.atomic import save_figure
from analysis.icl_report import mean_band
from analysis.markdown import FLAG, Section, interval, num, table
from analysis.meta import SweepMeta, canon, hidden_axes, label, require, theory_for

DEFAULT_Y = "val/acc"
POSITION = re.compile(r"^acc/k(?P<k>\d+)$")
LOWER_IS_BETTER = ("error", "loss", "mse", "bce", "nse")   # a y whose name holds one of these is minimised


def lower_is_better(y: str) -> bool:
    return any(w in y for w in LOWER_IS_BETTER)


def chance_column(y: str) -> str:
    return f"{y}/chance"


def _groups(runs: pd.DataFrame, cols: list[str]):
    """(label, rows) per distinct value of `cols` (canonical values, sorted); one group 'all' without cols."""
    if not cols:
        return [("", runs)]
    return [(label(cols, [sub.iloc[0][c] for c in cols]), sub)
            for _, sub in runs.groupby([runs[c].map(canon) for c in cols], sort=True)]


def accuracy_table(runs: pd.DataFrame, panel_by: list[str], curve_by: list[str], y: str, *, theory: dict | None = None,
                   n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (panel, curve): n (finite seeds), mean, lo, hi of y; chance (mean of `<y>/chance`, NaN if
    absent); paper (the `theory` value of the cell, NaN if none)."""
    rng, rows = np.random.default_rng(seed), []
    for panel, psub in _groups(runs, panel_by):
        for curve, sub in _groups(psub, curve_by):
            vals = pd.to_numeric(sub[y], errors="coerce").to_numpy(float)
            ch = chance_column(y)
            chance = pd.to_numeric(sub[ch], errors="coerce").mean() if ch in sub.columns else float("nan")
            cell = {c: sub.iloc[0][c] for c in [*panel_by, *curve_by]}
            paper = theory_for(theory or {}, cell)
            rows.append({"panel": panel, "curve": curve or "all", "n": int(np.isfinite(vals).sum()),
                         **dict(zip(("mean", "lo", "hi"), mean_band(vals, n_boot, rng))),
                         "chance": float(chance), "paper": float("nan") if paper is None else paper})
    return pd.DataFrame(rows)


def _beats(a: pd.Series, b: pd.Series, lower: bool) -> bool:
    """CI of a lies strictly on the better side of the CI of b."""
    return bool(a["hi"] < b["lo"]) if lower else bool(a["lo"] > b["hi"])


def verdict(panel: pd.DataFrame, lower: bool = False) -> str:
    """The best-vs-worst sentence of one panel's rows (curve, mean, lo, hi)."""
    ok = panel[np.isfinite(panel["mean"].to_numpy(float))]
    if len(ok) < 2:
        return "fewer than two curves with a finite value: nothing to compare."
    order = ok.sort_values("mean", ascending=lower, kind="stable")
    best, worst = order.iloc[0], order.iloc[-1]
    if _beats(best, worst, lower):
        return f"{best['curve']} beats {worst['curve']}: CIs do not overlap."
    return f"{best['curve']} vs {worst['curve']}: no separation at this scale (CIs overlap)."


def published_check(panel: pd.DataFrame, lower: bool = False) -> str | None:
    """Whether the published ordering (report.theory) shows in this panel; None without two distinct values."""
    known = panel[np.isfinite(panel["paper"].to_numpy(float)) & np.isfinite(panel["mean"].to_numpy(float))]
    if known.empty or known["paper"].nunique() < 2:
        return None
    top, bottom = known["paper"].min() if lower else known["paper"].max(), known["paper"].max() if lower else known["paper"].min()
    hi, lo = known[known["paper"] == top], known[known["paper"] == bottom]
    pairs = [(a, b) for _, a in hi.iterrows() for _, b in lo.iterrows()]
    names = f"{', '.join(hi['curve'])} over {', '.join(lo['curve'])}"
    if all(_beats(a, b, lower) for a, b in pairs):
        return f"published ordering ({names}) shows here: every such pair's CIs separate."
    reversed_ = [f"{b['curve']} > {a['curve']}" for a, b in pairs if _beats(b, a, lower)]
    if reversed_:
        return f"published ordering ({names}) is REVERSED here (CIs separate the other way): {'; '.join(reversed_)}."
    missing = [f"{a['curve']} vs {b['curve']}" for a, b in pairs if not _beats(a, b, lower)]
    return f"published ordering ({names}) does not show at this scale: CIs overlap for {'; '.join(missing)}."


def position_curves(runs: pd.DataFrame, curve_by: list[str], *, n_boot: int, seed: int) -> pd.DataFrame:
    """curve, k, mean, lo, hi of the `acc/kNN` columns that hold values in `runs` (empty when none do)."""
    cols = {int(m["k"]): c for c in runs.columns if (m := POSITION.match(str(c)))
            and pd.to_numeric(runs[c], errors="coerce").notna().any()}
    rng, rows = np.random.default_rng(seed), []
    for curve, sub in _groups(runs, curve_by):
        for k, col in sorted(cols.items()):
            vals = pd.to_numeric(sub[col], errors="coerce").to_numpy(float)
            rows.append({"curve": curve or "all", "k": k, **dict(zip(("mean", "lo", "hi"), mean_band(vals, n_boot, rng)))})
    return pd.DataFrame(rows, columns=["curve", "k", "mean", "lo", "hi"])


def plot(tab: pd.DataFrame, positions: dict[str, pd.DataFrame], y: str, path: Path) -> Path:
    """One axis per panel: accuracy vs position when the panel has `acc/kNN`, else bars of y with CIs."""
    panels = list(dict.fromkeys(tab["panel"]))
    fig = Figure(figsize=(5.0 * len(panels), 3.8))                 # no pyplot (analysis/plots.py)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        sub, pos = tab[tab["panel"] == panel], positions.get(panel)
        chance = sub["chance"].dropna()
        if pos is not None and not pos.empty:
            for curve, c in pos.groupby("curve", sort=True):
                ax.plot(c["k"], c["mean"], "-", lw=1.5, label=curve)
                ax.fill_between(c["k"], c["lo"], c["hi"], alpha=0.2)
            ax.set_xlabel("in-context position k")
            ax.set_ylabel("sign accuracy")
        else:
            x = np.arange(len(sub))
            err = np.vstack([sub["mean"] - sub["lo"], sub["hi"] - sub["mean"]]).clip(min=0)
            ax.bar(x, sub["mean"], yerr=err, capsize=3, color="C0", alpha=0.8)
            ax.set_xticks(x, [str(c).split("=")[-1] for c in sub["curve"]], rotation=20, fontsize=8)
            ax.set_ylabel(y)
        if len(chance):
            ax.axhline(float(chance.mean()), color="grey", ls=":", lw=1, label="chance")
        ax.set_title(panel or "all", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def accuracy_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *, figure_name: str = "accuracy_table.png",
                     n_boot: int = 1000, seed: int = 0) -> Section:
    """Markdown and figure for one accuracy_table sweep (`runs` = that sweep's rows)."""
    y = meta.y or DEFAULT_Y
    if y not in runs.columns:
        return Section(f"{FLAG} accuracy_table report skipped: no `{y}` column on the rows (report.y).\n")
    panel_by, curve_by = list(meta.panel_by), list(meta.curve_by)
    require(runs, panel_by + curve_by, "report.curve_by/panel_by")
    ok = runs[runs["status"].astype(str) == "ok"] if "status" in runs.columns else runs
    if ok.empty:
        return Section(f"{FLAG} accuracy_table report skipped: no run finished ok.\n")
    lower = lower_is_better(y)
    flags = []
    hidden = hidden_axes(ok, panel_by + curve_by, set())
    if hidden:
        flags.append(f"{FLAG} columns not in report.curve_by/panel_by vary within a cell and were pooled: "
                     f"{', '.join(hidden)}.")
    tab = accuracy_table(ok, panel_by, curve_by, y, theory=meta.theory, n_boot=n_boot, seed=seed)
    positions = {p: position_curves(sub, curve_by, n_boot=n_boot, seed=seed) for p, sub in _groups(ok, panel_by)}
    fig = plot(tab, positions, y, outdir / figure_name)
    has_paper = bool(np.isfinite(tab["paper"].to_numpy(float)).any())
    head = (f"Final `{y}` per curve ({'lower' if lower else 'higher'} is better): mean over seeds with a "
            f"seed-bootstrap 95% CI; chance = the rows' `{chance_column(y)}`"
            f"{'; paper = the published value (report.theory)' if has_paper else ''}.")
    md = [head, "", *flags]
    for panel, sub in tab.groupby("panel", sort=False):
        rows = [{"curve": r["curve"], "n": r["n"], "mean": num(r["mean"]), "ci": interval(r["lo"], r["hi"]),
                 "chance": num(r["chance"]), "paper": num(r["paper"]),
                 "vs_chance": "—" if not np.isfinite(r["chance"]) else
                 ("above" if r["lo"] > r["chance"] else "below" if r["hi"] < r["chance"] else "at chance")}
                for _, r in sub.iterrows()]
        cols = [("curve", "curve"), ("n", "seeds"), ("mean", y), ("ci", "95% CI"), ("chance", "chance"),
                ("vs_chance", "vs chance")] + ([("paper", "paper")] if has_paper else [])
        md += [f"**{panel or 'all'}**", "", table(rows, cols), "", f"{verdict(sub, lower)}"]
        pub = published_check(sub, lower)
        if pub:
            md += ["", pub[0].upper() + pub[1:]]
        md.append("")
    md += [f"![{y} per curve]({fig.name})", ""]
    return Section("\n".join(md), figures=[fig])
