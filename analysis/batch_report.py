"""The report section of a batch-selection sweep (`report.kind: batch_selection`; papers.md §3, "Mini-Batch
Optimization of Contrastive Loss"): loss-vs-step curves per strategy, steps to reach ε of the optimum, and
the speed-up of each strategy over shuffled SGD.

Rows carry `train.batch_selection` (the strategy: the curve), the task sizes (`task.n` = N, `task.batch_size`
= B) and the curves table (`analysis.load.read_curves`: one row per (run_id, step) with `full/loss`,
`opt/gap` = full loss − optimum, `opt/dist`). Panels are `report.panel_by`, by default every other config
column that varies (N, d, B, …). A step is one SGD update; an epoch (a pass over the N samples, the paper's
logged iteration) is N/B steps for the mini-batch strategies and one step for `full` and `all_batches`.

(a) Curves: per panel and strategy, `report.y` (default `opt/gap`, log scale) against the step, the mean
    over seeds with the min–max band of the seeds.
(b) Steps to ε: with the rule `report.select` = "<metric><op><ε>" (default opt/gap<=0.001), T_r = the
    first logged step at which run r satisfies the rule (censored at the last step when it never does).
    Per strategy the geometric mean T̄ = exp(mean_r log T_r) with a seed-bootstrap 95% CI (seeds resampled
    with replacement); a strategy with censored runs gets "≥" (T̄ is then a lower bound).
(c) Speed-up over shuffle: S = T̄(shuffle) / T̄(strategy), the CI from independent bootstraps of both
    sides; "≥" when only shuffle is censored (S is a lower bound), "—" when the strategy is censored.
(d) With the rule on `opt/gap` (synthetic sweeps), the issue's checks per panel, computed from the rows:
    fixed stalls (no fixed run satisfies the rule at its last step), full and all_batches reach the same
    final full loss (|Δ| ≤ 0.01), and OSGD / spectral reach ε at least 10× sooner than shuffle (the lower
    CI end, or the lower bound, ≥ 10).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.atomic import save_figure
from analysis.load import read_curves
from analysis.markdown import Section, interval, num, table
from analysis.meta import SweepMeta, canon, is_config_column, label, require, value_key

STRATEGY = "train.batch_selection"
DEFAULT_SELECT = "opt/gap<=0.001"
RULE = re.compile(r"^\s*(?P<metric>[^<>=!\s]+)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[-+0-9.eE]+)\s*$")
OPS = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}
ONE_UPDATE_PER_EPOCH = ("full", "all_batches")
BASELINE = "shuffle"
FAST = ("osgd", "spectral")
SPEEDUP_CLAIM = 10.0
SAME_OPTIMUM_TOL = 0.01


def parse_rule(text: str | None) -> tuple[str, str, float]:
    m = RULE.match(text or DEFAULT_SELECT)
    if not m:
        raise ValueError(f"report.select: must read '<metric><op><value>', e.g. {DEFAULT_SELECT} (got {text!r})")
    return m["metric"], m["op"], float(m["value"])


def panel_columns(runs: pd.DataFrame, meta: SweepMeta) -> list[str]:
    if meta.panel_by:
        require(runs, meta.panel_by, "report.panel_by")
        return list(meta.panel_by)
    return [c for c in runs.columns if is_config_column(c) and c not in (STRATEGY, "seed")
            and runs[c].map(canon).nunique() > 1]


def hitting_steps(runs: pd.DataFrame, curves: pd.DataFrame, metric: str, op: str, eps: float) -> pd.DataFrame:
    """Per run: `hit` = first logged step satisfying the rule (else the last step), `censored`."""
    require(curves, [metric, "step", "run_id"], "report.select (curves table)")
    out = []
    for rid, c in curves[curves["run_id"].isin(set(runs["run_id"]))].groupby("run_id"):
        c = c.sort_values("step")
        ok = OPS[op](c[metric].to_numpy(float), eps)
        out.append({"run_id": rid, "hit": float(c["step"].to_numpy()[ok.argmax()] if ok.any() else c["step"].max()),
                    "censored": not bool(ok.any())})
    return pd.DataFrame(out, columns=["run_id", "hit", "censored"])


def geo_band(values: np.ndarray, n_boot: int, rng) -> tuple[float, float, float]:
    """(geometric mean, 2.5%, 97.5%) over seed-bootstrap resamples of `values` (> 0)."""
    logs = np.log(np.maximum(values, 1.0))
    boots = rng.choice(logs, size=(n_boot, len(logs)), replace=True).mean(1)
    return float(np.exp(logs.mean())), float(np.exp(np.quantile(boots, 0.025))), float(np.exp(np.quantile(boots, 0.975)))


def epochs_per_step(strategy: str, row: pd.Series) -> float:
    if strategy in ONE_UPDATE_PER_EPOCH or "task.n" not in row or "task.batch_size" not in row:
        return 1.0
    return float(row["task.batch_size"]) / float(row["task.n"])


def panel_rows(runs, hits, metric, n_boot, rng):
    """Table rows (one per strategy) of one panel: final values, steps/epochs to ε, speed-up over shuffle."""
    df = runs.merge(hits, on="run_id", how="left")
    logs = {s: np.log(np.maximum(g["hit"].to_numpy(float), 1.0)) for s, g in df.groupby(STRATEGY)}
    base = df[df[STRATEGY] == BASELINE]
    rows = []
    for s in sorted(df[STRATEGY].unique(), key=value_key):
        g = df[df[STRATEGY] == s]
        t, lo, hi = geo_band(g["hit"].to_numpy(float), n_boot, rng)
        cens = int(g["censored"].sum())
        row = {"strategy": s, "runs": len(g), "final_loss": g["full/loss"].mean() if "full/loss" in g else np.nan,
               "final": g[metric].mean() if metric in g else np.nan, "censored": cens,
               "steps": ("≥ " if cens else "") + num(t), "steps_ci": interval(lo, hi),
               "epochs": ("≥ " if cens else "") + num(t * epochs_per_step(s, g.iloc[0])), "t": t, "t_lo": lo}
        if len(base) and s != BASELINE:
            b_cens = bool(base["censored"].any())
            bs = rng.choice(logs[BASELINE], size=(n_boot, len(logs[BASELINE]))).mean(1)
            ss = rng.choice(logs[s], size=(n_boot, len(logs[s]))).mean(1)
            ratio = np.exp(bs - ss)
            sp, sp_lo = float(np.exp(logs[BASELINE].mean() - logs[s].mean())), float(np.quantile(ratio, 0.025))
            row.update(speedup="—" if cens else ("≥ " if b_cens else "") + num(sp),
                       speedup_ci="—" if cens else interval(sp_lo, np.quantile(ratio, 0.975)),
                       sp=np.nan if cens else sp, sp_lo=np.nan if cens else sp_lo)
        rows.append(row)
    return rows


def checks(rows: list[dict], runs: pd.DataFrame, rule: str) -> list[dict]:
    """The issue's 'done means' for one panel, as measured rows: claim, measured value, holds."""
    by = {r["strategy"]: r for r in rows}
    out = []
    if "fixed" in by:
        out.append({"claim": f"fixed stalls (no run reaches {rule})", "measured": f"{by['fixed']['censored']} of "
                    f"{by['fixed']['runs']} censored", "holds": by["fixed"]["censored"] == by["fixed"]["runs"]})
    if "full" in by and "all_batches" in by:
        d = abs(by["full"]["final_loss"] - by["all_batches"]["final_loss"])
        out.append({"claim": f"full and all_batches reach the same loss (|Δ| ≤ {SAME_OPTIMUM_TOL})",
                    "measured": f"|Δ| = {num(d)}", "holds": bool(d <= SAME_OPTIMUM_TOL)})
    for s in FAST:
        if s in by and "sp_lo" in by[s]:
            lo = by[s]["sp_lo"]
            out.append({"claim": f"{s} reaches ε ≥ {num(SPEEDUP_CLAIM)}× sooner than shuffle",
                        "measured": f"speed-up {by[s]['speedup']} (CI low {num(lo)})",
                        "holds": bool(np.isfinite(lo) and lo >= SPEEDUP_CLAIM)})
    return out


def plot_curves(curves: pd.DataFrame, runs: pd.DataFrame, panels: list[tuple[str, pd.DataFrame]], y: str,
                eps: float | None) -> Figure:
    n = max(len(panels), 1)
    fig = Figure(figsize=(5.6 * min(n, 3), 4.2 * -(-n // 3)))
    axes = fig.subplots(-(-n // 3), min(n, 3), squeeze=False).ravel()
    log = y == "opt/gap"
    for ax, (title, pruns) in zip(axes, panels):
        for s in sorted(pruns[STRATEGY].unique(), key=value_key):
            ids = set(pruns.loc[pruns[STRATEGY] == s, "run_id"])
            wide = curves[curves["run_id"].isin(ids)].pivot_table(index="step", columns="run_id", values=y)
            vals = wide.to_numpy(float)
            if log:
                vals = np.maximum(vals, 1e-7)
            mean = np.exp(np.nanmean(np.log(vals), 1)) if log else np.nanmean(vals, 1)
            line, = ax.plot(wide.index, mean, label=s)
            ax.fill_between(wide.index, np.nanmin(vals, 1), np.nanmax(vals, 1), alpha=0.2, color=line.get_color())
        if log:
            ax.set_yscale("log")
        if eps is not None:
            ax.axhline(eps, color="k", lw=0.8, ls=":")
        ax.set(title=title or "all runs", xlabel="step (SGD updates)", ylabel=y)
        ax.legend(fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def batch_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *, figure_name: str, n_boot: int = 1000,
                  seed: int = 0, curves: pd.DataFrame | None = None) -> Section:
    """`outdir` is DIR/report (analysis.report.write_report); the curves are read from DIR unless given."""
    require(runs, [STRATEGY, "run_id"], "report.kind batch_selection")
    curves = read_curves(Path(outdir).parent) if curves is None else curves
    metric, op, eps = parse_rule(meta.select)
    rule = f"{metric}{op}{num(eps)}"
    y = meta.y or metric
    rng = np.random.default_rng(seed)
    hits = hitting_steps(runs, curves, metric, op, eps)
    pcols = panel_columns(runs, meta)
    groups = [(label(pcols, k if isinstance(k, tuple) else (k,)), g) for k, g in runs.groupby(pcols, sort=False)] \
        if pcols else [("", runs)]
    groups.sort(key=lambda t: tuple(value_key(v) for v in t[1][pcols].iloc[0]) if pcols else ())
    md = [(f"Steps to reach `{rule}` (first logged step; one step = one SGD update) per strategy: geometric mean "
           "over seeds with a seed-bootstrap 95% CI; epochs = steps · B/N for the mini-batch strategies, steps for "
           "full and all_batches; speed-up = shuffle's steps / the strategy's. `≥`: some runs never reached the "
           "rule (censored at their last step), so the value is a lower bound.\n")]
    for title, g in groups:
        rows = panel_rows(g, hits, metric, n_boot, rng)
        md.append(f"### {title or 'all runs'}\n")
        md.append(table(rows, [("strategy", "strategy"), ("runs", "runs"), ("final_loss", "final full/loss"),
                               ("final", f"final {metric}"), ("steps", "steps to ε"), ("steps_ci", "95% CI"),
                               ("epochs", "epochs to ε"), ("speedup", "speed-up vs shuffle"),
                               ("speedup_ci", "95% CI")]) + "\n")
        if metric == "opt/gap":                        # the claims are about the synthetic optimum
            md.append(table(checks(rows, g, rule), [("claim", "check"), ("measured", "measured"), ("holds", "holds")])
                      + "\n")
    fig = plot_curves(curves, runs, groups, y, eps if y == metric else None)
    path = save_figure(fig, Path(outdir) / figure_name)
    md.append(f"![{y} vs step per strategy]({path.name})\n")
    return Section("\n".join(md), figures=[path])
