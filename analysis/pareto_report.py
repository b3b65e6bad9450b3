"""Pareto fronts of a multi-objective Optuna search: the rows of a sweep with `search.kind = optuna` and several
`search.directions` (sweeps/search/optuna_search.py writes search.metrics, search.directions and search.params on
every row of such a sweep, comma-joined).

A *proposal* is one (group, optuna.trial): its values are the medians over its seeds of the `search.metrics` columns,
what the search told its study. A proposal with a seed that is not ok (failed, diverged, pruned) or a non-finite
metric is left out, as the study holds it as FAIL or PRUNED. With directions d_k, proposal a dominates b when
a_k is no worse than b_k for every k (min: a_k <= b_k, max: a_k >= b_k) and strictly better for one; a group's front
is its proposals that no other proposal of the group dominates (one study per group), the trials Optuna's
`study.best_trials` returns (Deb et al., "A fast and elitist multiobjective genetic algorithm: NSGA-II", 2002, §III-A).

The section: per group, the front's proposals (trial, searched values, objectives) and how many proposals were
complete, failed or pruned; a figure of the first two objectives, every complete proposal in grey and the front
joined as a staircase (a third objective and beyond are in the table only).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.atomic import save_figure
from analysis.markdown import FLAG, Section, table
from analysis.meta import canon, value_key
from analysis.plots import panel_grid

TRIAL = "optuna.trial"


def _const(runs: pd.DataFrame, col: str) -> str:
    vals = runs[col].dropna().astype(str).unique() if col in runs.columns else []
    if len(vals) > 1:
        raise ValueError(f"{col} must be constant within a sweep; found {sorted(vals)[:4]}")
    return str(vals[0]).strip() if len(vals) else ""


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def objectives(runs: pd.DataFrame) -> list[tuple[str, str]] | None:
    """[(metric, min | max)] of a multi-objective Optuna sweep's rows; None for any other sweep."""
    if _const(runs, "search.kind") != "optuna":
        return None
    metrics, directions = _split(_const(runs, "search.metrics")), _split(_const(runs, "search.directions"))
    if len(directions) < 2:
        return None
    if len(metrics) != len(directions) or not set(directions) <= {"min", "max"}:
        raise ValueError(f"search.metrics {metrics} and search.directions {directions} do not pair up")
    return list(zip(metrics, directions))


def proposals(runs: pd.DataFrame, objs: list[tuple[str, str]]) -> pd.DataFrame:
    """One row per (group, optuna.trial): the searched columns, each objective's median over seeds (NaN unless every
    seed is ok with a finite value), n_seeds and `outcome` (complete | failed | pruned)."""
    metrics = [m for m, _ in objs]
    missing = [c for c in metrics + [TRIAL, "status"] if c not in runs.columns]
    if missing:
        raise ValueError(f"search.metrics: column(s) not in runs: {', '.join(missing)}")
    params = [p for p in _split(_const(runs, "search.params")) if p in runs.columns]
    rows = runs[runs[TRIAL].notna()].copy()
    rows["group"] = rows["group"].astype(str) if "group" in rows.columns else ""
    out = []
    for (g, t), r in rows.groupby(["group", TRIAL], sort=True):
        vals = r[metrics].apply(pd.to_numeric, errors="coerce")
        outcome = _outcome(r["status"].astype(str).tolist(), np.isfinite(vals.to_numpy(float)).all(axis=1).tolist())
        ok = outcome == "complete"
        rec = {"group": g, "trial": int(t), "n_seeds": len(r), "outcome": outcome}
        rec.update({p: r[p].iloc[0] for p in params})
        rec.update({m: float(vals[m].median()) if ok else math.nan for m in metrics})
        out.append(rec)
    return pd.DataFrame(out, columns=["group", "trial", "n_seeds", "outcome", *params, *metrics])


def _outcome(statuses: list[str], finite: list[bool]) -> str:
    """How the search told the study a proposal's seeds (status, all metrics finite): failed when a seed is neither
    ok nor pruned or an ok seed has a non-finite metric, else pruned when a seed was pruned, else complete."""
    if any(s not in ("ok", "pruned") or (s == "ok" and not f) for s, f in zip(statuses, finite)):
        return "failed"
    return "pruned" if "pruned" in statuses else "complete"


def _cell(v):
    """A searched value as the table shows it: numbers through `table`'s formatting, anything else canonical."""
    number = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
    return v if number else canon(v)


def pareto_mask(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """values (n, k), one direction per column -> (n,) bool: True where no other row dominates the row."""
    signed = np.asarray(values, dtype=float) * np.array([1.0 if d == "min" else -1.0 for d in directions])  # minimise
    no_worse = (signed[:, None, :] <= signed[None, :, :]).all(axis=2)        # [a, b]: a no worse than b everywhere
    better = (signed[:, None, :] < signed[None, :, :]).any(axis=2)           # [a, b]: a better somewhere
    dominated = (no_worse & better).any(axis=0)                              # some a dominates b
    return ~dominated


def fronts(props: pd.DataFrame, objs: list[tuple[str, str]]) -> pd.DataFrame:
    """`props`' complete proposals with a bool column `front` (per group), sorted by group then first objective."""
    metrics, directions = [m for m, _ in objs], [d for _, d in objs]
    done = props[props["outcome"] == "complete"].copy()
    done["front"] = False
    for _, idx in done.groupby("group").groups.items():
        done.loc[idx, "front"] = pareto_mask(done.loc[idx, metrics].to_numpy(float), directions)
    return done.sort_values(["group", metrics[0], "trial"]).reset_index(drop=True)


def plot_fronts(done: pd.DataFrame, objs: list[tuple[str, str]], title: str = "") -> Figure:
    """First objective (x) against the second (y), one panel per group; log axes when positive over > 2 decades."""
    (mx, dx), (my, dy) = objs[0], objs[1]
    groups = sorted(done["group"].unique(), key=value_key) or [""]
    fig, axes = panel_grid(len(groups), width=5.4, height=4.4)
    for ax, g in zip(axes, groups):
        sub = done[done["group"] == g]
        rest, front = sub[~sub["front"]], sub[sub["front"]].sort_values(mx)
        ax.scatter(rest[mx], rest[my], color="0.6", s=22, label=f"dominated ({len(rest)})")
        ax.plot(front[mx], front[my], "o", color="C3", ms=6, label=f"Pareto front ({len(front)})")
        ax.step(front[mx], front[my], where="post", color="C3", lw=1.2)
        for _, r in front.iterrows():                               # trial numbers, as in the section's table
            ax.annotate(f"#{int(r['trial'])}", (r[mx], r[my]), xytext=(4, 4), textcoords="offset points", fontsize=7)
        for col, setter in ((mx, ax.set_xscale), (my, ax.set_yscale)):
            v = sub[col].to_numpy(float)
            if len(v) and (v > 0).all() and v.max() / v.min() > 100:
                setter("log")
        ax.set_xlabel(f"{mx} ({dx})")
        ax.set_ylabel(f"{my} ({dy})")
        ax.set_title(g or "all runs", fontsize=9)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def pareto_section(runs: pd.DataFrame, outdir: Path, *, figure_name: str) -> Section | None:
    """The Pareto section of one sweep's rows, or None when they are no multi-objective Optuna search."""
    objs = objectives(runs)
    if objs is None:
        return None
    props = proposals(runs, objs)
    metrics = [m for m, _ in objs]
    params = [c for c in props.columns if c not in ("group", "trial", "n_seeds", "outcome", *metrics)]
    done = fronts(props, objs)
    said = ", ".join(f"{m} ({d})" for m, d in objs)
    md = [f"### Pareto front over {said}", "",
          "Each proposal's objectives are the medians over its seeds (what its Optuna study was told); the front is "
          "the proposals no other proposal of the group is at least as good as in every objective and better in one.",
          ""]
    if done.empty:
        md.append(f"{FLAG} no complete proposal: no front.")
        return Section("\n".join(md) + "\n")
    for g in sorted(props["group"].unique(), key=value_key):
        p, d = props[props["group"] == g], done[done["group"] == g]
        counts = p["outcome"].value_counts()
        md += [f"**{g or 'all runs'}**: {len(p)} proposals: complete {int(counts.get('complete', 0))}, "
               f"failed {int(counts.get('failed', 0))}, pruned {int(counts.get('pruned', 0))}; "
               f"front {int(d['front'].sum())}.", ""]
        front = [{**r, **{c: _cell(r[c]) for c in params}} for r in d[d["front"]].to_dict("records")]
        md += [table(front, [("trial", "trial")] + [(c, c) for c in params] + [(m, m) for m in metrics]), ""]
    fig_path = save_figure(plot_fronts(done, objs, title=f"Pareto front: {str(runs['sweep'].iloc[0])}"
                                       if "sweep" in runs.columns else ""), Path(outdir) / figure_name)
    md += [f"![Pareto front]({figure_name})", ""]
    if len(objs) > 2:
        md += [f"The figure shows {metrics[0]} against {metrics[1]}; the front is over all {len(objs)} objectives.", ""]
    return Section("\n".join(md) + "\n", figures=[fig_path])


def appended(sec: Section | None, extra: Section | None) -> Section | None:
    """`sec` followed by `extra` (text, fits, figures and claims of both); either may be None."""
    if sec is None or extra is None:
        return sec or extra
    return Section(sec.markdown.rstrip() + "\n\n" + extra.markdown, sec.fits + extra.fits,
                   sec.figures + extra.figures, sec.claims + extra.claims)
