"""The report section of an accuracy sweep (`report.kind: accuracy_table`): which architecture solves which task,
with how much confidence (Park et al. 2024, "Can Mamba Learn How to Learn?", papers.md §5c: sparse parity and
vector-valued MQAR across transformer / Mamba / hybrid / MambaFormer).

Per panel (`report.panel_by`, e.g. task.name), curve (`report.curve_by`, e.g. model.name) and, when set, x value
(`report.x`, e.g. task.n_pairs — rows without that column form one x value "—"): the final value of `report.y`
(default `val/acc`) — the mean over seeds with a seed-bootstrap 95% band (`icl_report.mean_band`, descriptive) —
next to the chance level when the rows carry it (the metric `<y>/chance`, e.g. 1/2 for parity, 1/n_pairs for MQAR).

Comparisons are computed claims (analysis/verdict.py, Welch t-interval over seeds):

* per panel and x, best vs worst curve: Δ = mean(best) − mean(worst), "best is more accurate than worst"
  shows iff the CI of Δ is above 0 (below 0 for an error/loss y);
* `report.theory` holds the published value of y per cell ("panel,curve" labels, `analysis.meta.theory_for`,
  e.g. {"task.name=mqar,model.name=mamba": 0.8}); per panel and x, every curve with the highest published value
  is compared with every curve with the lowest (its control): Δ = mean(top) − mean(bottom), shows iff the CI is
  above 0. A published ordering that fails to show reads "does not show" (the CI may straddle 0 or lie below it:
  the report names the estimate and the interval either way).

The figure: y against x per curve (band, chance line) for a panel with several x values; else accuracy per
in-context position (`acc/kNN` columns) when the panel has them; else a bar chart of y with its band.
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
from analysis.meta import SweepMeta, canon, hidden_axes, label, require, theory_for, value_key
from analysis.verdict import Claim, claim, claims_markdown, difference

DEFAULT_Y = "val/acc"
POSITION = re.compile(r"^acc/k(?P<k>\d+)$")
LOWER_IS_BETTER = ("error", "loss", "mse", "bce", "nse")   # a y whose name holds one of these is minimised


def lower_is_better(y: str) -> bool:
    return any(w in y for w in LOWER_IS_BETTER)


def chance_column(y: str) -> str:
    return f"{y}/chance"


def _groups(runs: pd.DataFrame, cols: list[str]):
    """(label, rows) per distinct value of `cols` (canonical values, sorted); one group '' without cols."""
    if not cols:
        return [("", runs)]
    return [(label(cols, [sub.iloc[0][c] for c in cols]), sub)
            for _, sub in runs.groupby([runs[c].map(canon) for c in cols], sort=True)]


def _x_groups(runs: pd.DataFrame, x: str | None):
    """(x value as float (NaN: no x), rows) in numeric order; one group (NaN, runs) without an x column."""
    if not x or x not in runs.columns:
        return [(float("nan"), runs)]
    keys = runs[x].map(canon)
    out = []
    for key in sorted(keys.unique(), key=value_key):
        sub = runs[keys == key]
        v = pd.to_numeric(sub[x], errors="coerce").iloc[0]
        out.append((float(v) if pd.notna(v) else float("nan"), sub))
    return out


def accuracy_table(runs: pd.DataFrame, panel_by: list[str], curve_by: list[str], y: str, *, x: str | None = None,
                   theory: dict | None = None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (panel, x, curve): x (NaN without report.x), n (finite seeds), mean, lo, hi of y (bootstrap
    band); chance (mean of `<y>/chance`, NaN if absent); paper (the `theory` value of the cell, NaN if none);
    runs (the per-seed values, for the claims)."""
    rng, rows = np.random.default_rng(seed), []
    for panel, psub in _groups(runs, panel_by):
        for xv, xsub in _x_groups(psub, x):
            for curve, sub in _groups(xsub, curve_by):
                vals = pd.to_numeric(sub[y], errors="coerce").to_numpy(float)
                ch = chance_column(y)
                chance = pd.to_numeric(sub[ch], errors="coerce").mean() if ch in sub.columns else float("nan")
                cell = {c: sub.iloc[0][c] for c in [*panel_by, *curve_by]}
                paper = theory_for(theory or {}, cell)
                rows.append({"panel": panel, "x": xv, "curve": curve or "all", "n": int(np.isfinite(vals).sum()),
                             **dict(zip(("mean", "lo", "hi"), mean_band(vals, n_boot, rng))),
                             "chance": float(chance), "paper": float("nan") if paper is None else paper,
                             "runs": tuple(vals)})
    return pd.DataFrame(rows, columns=["panel", "x", "curve", "n", "mean", "lo", "hi", "chance", "paper", "runs"])


def _where(x: str | None, xv: float) -> str:
    return f" at {x}={num(xv)}" if x and np.isfinite(xv) else ""


def _better(a: pd.Series, b: pd.Series, lower: bool, where: str) -> Claim:
    """'a is better than b' with Δ = mean(a) − mean(b) (Welch); shows iff the CI is on a's side of 0."""
    eff = difference(np.asarray(a["runs"], float), np.asarray(b["runs"], float))
    word = "has lower error than" if lower else "is more accurate than"
    rule = {"below": 0.0} if lower else {"above": 0.0}
    return claim(f"{a['curve']} {word} {b['curve']}{where}", eff, str(b["curve"]), **rule)


def best_vs_worst(cell: pd.DataFrame, lower: bool = False, x: str | None = None) -> Claim | None:
    """The claim 'best curve beats worst curve' in one (panel, x) cell's rows; None with < 2 finite curves."""
    ok = cell[np.isfinite(cell["mean"].to_numpy(float))]
    if len(ok) < 2:
        return None
    order = ok.sort_values("mean", ascending=lower, kind="stable")
    return _better(order.iloc[0], order.iloc[-1], lower, _where(x, float(ok["x"].iloc[0])))


def published_claims(cell: pd.DataFrame, lower: bool = False, x: str | None = None) -> list[Claim]:
    """One claim per (top, bottom) pair of published values (report.theory) in one (panel, x) cell: top is
    better than bottom (the control). Empty without two distinct published values."""
    known = cell[np.isfinite(cell["paper"].to_numpy(float))]
    if known["paper"].nunique() < 2:
        return []
    top = known["paper"].min() if lower else known["paper"].max()
    bottom = known["paper"].max() if lower else known["paper"].min()
    where = _where(x, float(cell["x"].iloc[0]))
    return [_better(a, b, lower, where) for _, a in known[known["paper"] == top].iterrows()
            for _, b in known[known["paper"] == bottom].iterrows()]


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


def plot(tab: pd.DataFrame, positions: dict[str, pd.DataFrame], y: str, path: Path, x: str | None = None) -> Path:
    """One axis per panel: y vs x with several x values; accuracy vs position with `acc/kNN`; else bars."""
    panels = list(dict.fromkeys(tab["panel"]))
    fig = Figure(figsize=(5.0 * len(panels), 3.8))                 # no pyplot (analysis/plots.py)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        sub, pos = tab[tab["panel"] == panel], positions.get(panel)
        xs = sub["x"].to_numpy(float)
        if np.isfinite(xs).sum() and sub["x"].nunique() > 1:
            for curve, c in sub.groupby("curve", sort=True):
                c = c.sort_values("x")
                ax.plot(c["x"], c["mean"], "o-", lw=1.5, label=curve)
                ax.fill_between(c["x"], c["lo"], c["hi"], alpha=0.2)
            ch = sub.groupby("x")["chance"].mean().dropna()
            if len(ch):
                ax.plot(ch.index, ch.to_numpy(), color="grey", ls=":", lw=1, label="chance")
            ax.set_xscale("log", base=2)
            ax.set_xlabel(x)
            ax.set_ylabel(y)
        else:
            chance = sub["chance"].dropna()
            if pos is not None and not pos.empty:
                for curve, c in pos.groupby("curve", sort=True):
                    ax.plot(c["k"], c["mean"], "-", lw=1.5, label=curve)
                    ax.fill_between(c["k"], c["lo"], c["hi"], alpha=0.2)
                ax.set_xlabel("in-context position k")
                ax.set_ylabel("sign accuracy")
            else:
                xb = np.arange(len(sub))
                err = np.vstack([sub["mean"] - sub["lo"], sub["hi"] - sub["mean"]]).clip(min=0)
                ax.bar(xb, sub["mean"], yerr=err, capsize=3, color="C0", alpha=0.8)
                ax.set_xticks(xb, [str(c).split("=")[-1] for c in sub["curve"]], rotation=20, fontsize=8)
                ax.set_ylabel(y)
            if len(chance):
                ax.axhline(float(chance.mean()), color="grey", ls=":", lw=1, label="chance")
        ax.set_title(panel or "all", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def _table_md(sub: pd.DataFrame, y: str, x: str | None, has_paper: bool) -> str:
    has_x = bool(x) and bool(np.isfinite(sub["x"].to_numpy(float)).any())
    rows = [{"x": num(r["x"]), "curve": r["curve"], "n": r["n"], "mean": num(r["mean"]),
             "ci": interval(r["lo"], r["hi"]), "chance": num(r["chance"]), "paper": num(r["paper"]),
             "vs_chance": "—" if not np.isfinite(r["chance"]) else
             ("above" if r["lo"] > r["chance"] else "below" if r["hi"] < r["chance"] else "at chance")}
            for _, r in sub.iterrows()]
    cols = ([("x", x)] if has_x else []) + [("curve", "curve"), ("n", "seeds"), ("mean", y), ("ci", "95% band"),
                                            ("chance", "chance"), ("vs_chance", "vs chance")]
    return table(rows, cols + ([("paper", "paper")] if has_paper else []))


def accuracy_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *, figure_name: str = "accuracy_table.png",
                     n_boot: int = 1000, seed: int = 0) -> Section:
    """Markdown, claims and figure for one accuracy_table sweep (`runs` = that sweep's rows)."""
    y = meta.y or DEFAULT_Y
    if y not in runs.columns:
        return Section(f"{FLAG} accuracy_table report skipped: no `{y}` column on the rows (report.y).\n")
    panel_by, curve_by, x = list(meta.panel_by), list(meta.curve_by), meta.x
    require(runs, panel_by + curve_by, "report.curve_by/panel_by")
    ok = runs[runs["status"].astype(str) == "ok"] if "status" in runs.columns else runs
    if ok.empty:
        return Section(f"{FLAG} accuracy_table report skipped: no run finished ok.\n")
    lower = lower_is_better(y)
    flags = []
    hidden = hidden_axes(ok, panel_by + curve_by + ([x] if x else []), set())
    if hidden:
        flags.append(f"{FLAG} columns not in report.x/curve_by/panel_by vary within a cell and were pooled: "
                     f"{', '.join(hidden)}.")
    tab = accuracy_table(ok, panel_by, curve_by, y, x=x, theory=meta.theory, n_boot=n_boot, seed=seed)
    positions = {p: position_curves(sub, curve_by, n_boot=n_boot, seed=seed) for p, sub in _groups(ok, panel_by)}
    fig = plot(tab, positions, y, outdir / figure_name, x)
    has_paper = bool(np.isfinite(tab["paper"].to_numpy(float)).any())
    head = (f"Final `{y}` per curve ({'lower' if lower else 'higher'} is better): mean over seeds with a "
            f"seed-bootstrap 95% band; chance = the rows' `{chance_column(y)}`"
            f"{'; paper = the published value (report.theory)' if has_paper else ''}. Comparisons below are "
            "differences of seed means with a Welch t-interval (analysis/verdict.py); the published ordering is "
            "tested per cell as every top-published curve against every bottom-published curve (the control).")
    md, records = [head, "", *flags], []
    for panel, psub in tab.groupby("panel", sort=False):
        md += [f"**{panel or 'all'}**", "", _table_md(psub, y, x, has_paper), ""]
        best, pub = [], []
        for _, cell in psub.groupby(psub["x"].map(canon), sort=False):
            b = best_vs_worst(cell, lower, x)
            best += [b] if b else []
            pub += published_claims(cell, lower, x)
        if best:
            md += ["Best vs worst curve:", "", claims_markdown(best)]
        if pub:
            md += ["Published ordering (report.theory):", "", claims_markdown(pub)]
        records += [c.record(panel=panel, check="best_vs_worst") for c in best]
        records += [c.record(panel=panel, check="published") for c in pub]
    md += [f"![{y} per curve]({fig.name})", ""]
    return Section("\n".join(md), figures=[fig], claims=records)
