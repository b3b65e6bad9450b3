"""The report section of the artificial-needles fine-tuning sweep (`report.kind: needles`; papers.md §6(b)–(d),
Xiong et al., ICLR 2025): retrieval by gold position before and after fine-tuning, the retention cost, and a
computed statement whether the published effect shows (DESIGN.md §8: the control is the same base before
fine-tuning, every statement a number with a CI, "does not show" when the CI does not support it).

Rows (`ftcore.tasks.needles_finetune`) carry `mdqa/pos{i}` (exact match with the answer fact in document i of N)
after fine-tuning and `before/mdqa/pos{i}` on the frozen base, `retain/lm_ce` and `before/retain/lm_ce` (held-out
stage-1 LM loss). Curves: the values of `report.curve_by` (e.g. adapter.name, adapter.rank; a column a row lacks,
as adapter.rank on `full`, is left out of its label). For curve c with seeds s = 1..S, a_s(i) after and
b_s(i) before (the same seed: paired):

    middle gain    Δ_mid = mean_s mean_{i ∈ M} (a_s(i) − b_s(i)),   M = {⌊N/3⌋, …, N − ⌊N/3⌋ − 1}
    flattening     Δ_range = mean_s [(max_i a_s(i) − min_i a_s(i)) − (max_i b_s(i) − min_i b_s(i))]
    mean change    Δ_all = mean_s mean_i (a_s(i) − b_s(i))
    retention      cost = mean_s (r_s^after − r_s^before),  relative cost = mean_s (r_s^after − r_s^before) / r_s^before

95% CI of each: the paired Student-t interval of its per-seed values (`analysis.verdict`, the one interval
method of every report). Verdicts (`analysis.verdict.Claim`, control = the same base before fine-tuning):

    middle positions up      shows iff CI(Δ_mid) lies above 0
    position curve flatter   shows iff CI(Δ_range) lies below 0 and CI(Δ_all) does not lie below 0 (a curve
                             that flattens by falling everywhere is not the published effect)
    little forgetting        shows iff CI(relative cost) lies below the tolerance (report.theory.retain_tol,
                             default 0.02: papers.md §6(d) "held-out generic LM loss changes by < 2%")
    published effect         shows iff all three show

otherwise "does not show" (always so with fewer than 2 seeds: no CI). The paper's own target (+10.5 points at
MDQA position 10 for GPT-3.5) needs its models; §6(d)'s engineering target (≥ 5 points in the middle) is a column.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.atomic import save_figure
from analysis.markdown import FLAG, Section, interval, num, table
from analysis.meta import SweepMeta, canon, hidden_axes, value_key
from analysis.verdict import NOT, SHOWS, Claim, all_show, claim, mean_effect

POS = re.compile(r"^mdqa/pos(?P<i>\d+)$")
RETAIN, RETAIN_TOL, MID_TARGET = "retain/lm_ce", 0.02, 0.05


def positions(runs: pd.DataFrame) -> list[tuple[int, str]]:
    """[(i, 'mdqa/pos{i}')] sorted by i, for the positions whose before column is present too."""
    cols = [(int(m["i"]), c) for c in runs.columns if (m := POS.match(str(c))) and f"before/{c}" in runs.columns]
    return sorted(cols)


def middle(n: int) -> list[int]:
    """The middle third of n positions: ⌊n/3⌋ … n − ⌊n/3⌋ − 1 (n = 6: 2, 3; n = 20: 6 … 13)."""
    return list(range(n // 3, n - n // 3))


STATS = ("mid_gain", "d_range", "cost", "rel_cost", "d_all")


def per_seed(after: np.ndarray, before: np.ndarray, r_after: np.ndarray, r_before: np.ndarray) -> dict:
    """after, before (S, N) accuracy by position; r_after, r_before (S,) retention LM loss -> {stat: (S,)}."""
    mid = middle(after.shape[1])
    return {"mid_gain": (after[:, mid] - before[:, mid]).mean(1),
            "d_range": np.ptp(after, 1) - np.ptp(before, 1),
            "cost": r_after - r_before,
            "rel_cost": (r_after - r_before) / r_before,
            "d_all": (after - before).mean(1)}


def effect_stats(after: np.ndarray, before: np.ndarray, r_after: np.ndarray, r_before: np.ndarray) -> dict:
    """The statistics of the module docstring, each with its paired t-interval (`{name}`, `{name}_lo/_hi`)."""
    S, N = after.shape
    mid = middle(N)
    out = {"n_seeds": S, "n_pos": N, "mid": f"{mid[0]}–{mid[-1]}" if mid else ""}
    for name, values in per_seed(after, before, r_after, r_before).items():
        e = mean_effect(values)
        out |= {name: e.estimate, f"{name}_lo": e.lo, f"{name}_hi": e.hi, f"_{name}": e}
    out |= {"range_before": float(np.ptp(before.mean(0))), "range_after": float(np.ptp(after.mean(0))),
            "retain_before": float(r_before.mean()), "retain_after": float(r_after.mean())}
    return out


def claims(st: dict, tol: float = RETAIN_TOL) -> dict[str, Claim]:
    """The three statements of the module docstring as claims against the base before fine-tuning."""
    base = "the same base before fine-tuning (paired seeds)"
    flatter = claim("the position curve gets flatter", st["_d_range"], base, below=0)
    if st["_d_all"].below(0):                          # flattening by falling everywhere is not the effect
        flatter = Claim(flatter.statement, flatter.effect, base, flatter.rule + " and CI(Δ_all) not below 0", NOT)
    return {"middle_up": claim("middle positions go up", st["_mid_gain"], base, above=0),
            "flatter": flatter,
            "little_forgetting": claim("little forgetting (relative held-out LM loss cost)", st["_rel_cost"],
                                       base, below=tol)}


def verdicts(st: dict, tol: float = RETAIN_TOL) -> dict:
    """'shows' / 'does not show' per statement (a NaN CI never shows)."""
    cl = claims(st, tol)
    v = {k: c.verdict for k, c in cl.items()}
    v["published_effect"] = all_show("published effect", list(cl.values()))
    v["mid_target"] = st["mid_gain_lo"] > MID_TARGET
    return v


def curve_label(row: pd.Series, cols: list[str]) -> str:
    return ",".join(f"{c}={canon(row[c])}" for c in cols if c in row.index and not pd.isna(row[c])) or "all"


def curve_groups(ok: pd.DataFrame, cols: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per curve, in numeric-aware order of the curve columns' values."""
    labels = ok.apply(lambda r: curve_label(r, cols), axis=1)
    keys = {lab: tuple(value_key(ok.loc[labels == lab].iloc[0].get(c)) for c in cols) for lab in labels.unique()}
    return [(lab, ok[labels == lab]) for lab in sorted(keys, key=lambda k: (keys[k], k))]


def plot_positions(curves: list[tuple[str, np.ndarray, np.ndarray]], title: str) -> Figure:
    """Accuracy by gold position: one colour per curve, after solid, before dashed."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for k, (lab, a, b) in enumerate(curves):
        color = f"C{k % 10}"
        x = np.arange(a.shape[1])
        ax.plot(x, a.mean(0), "-o", color=color, ms=3, label=f"{lab} (after)")
        ax.plot(x, b.mean(0), "--", color=color, alpha=0.7, label=f"{lab} (before)")
    ax.set_xlabel("gold document position")
    ax.set_ylabel("MDQA exact match")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    return fig


def needles_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *, n_boot: int = 1000, seed: int = 0,
                    figure_name: str = "needles.png") -> Section:
    """Markdown, records and the figure for one needles fine-tuning sweep (`runs` = that sweep's rows);
    n_boot and seed are the report's shared signature (this section's intervals are t-intervals)."""
    pos = positions(runs)
    if not pos:
        return Section(f"{FLAG} needles report skipped: no `mdqa/pos<i>` columns with their `before/` twins.\n")
    missing = [c for c in (RETAIN, f"before/{RETAIN}") if c not in runs.columns]
    if missing:
        return Section(f"{FLAG} needles report skipped: no `{missing[0]}` column on the rows.\n")
    ok = runs[runs["status"].astype(str) == "ok"] if "status" in runs.columns else runs
    if ok.empty:
        return Section(f"{FLAG} needles report skipped: no run finished ok.\n")
    tol = float(meta.theory.get("retain_tol", RETAIN_TOL))
    cols = list(meta.curve_by)
    hidden = hidden_axes(ok, cols, set())
    cols += hidden
    num_ = lambda df, c: pd.to_numeric(df[c], errors="coerce").to_numpy(float)    # noqa: E731
    recs, plotted, acc_rows, claim_recs = [], [], [], []
    for lab, sub in curve_groups(ok, cols):
        a = np.stack([num_(sub, c) for _, c in pos], 1)                           # (S, N)
        b = np.stack([num_(sub, f"before/{c}") for _, c in pos], 1)
        ra, rb = num_(sub, RETAIN), num_(sub, f"before/{RETAIN}")
        keep = np.isfinite(a).all(1) & np.isfinite(b).all(1) & np.isfinite(ra) & np.isfinite(rb)
        a, b, ra, rb = a[keep], b[keep], ra[keep], rb[keep]
        if not len(a):
            continue
        st = effect_stats(a, b, ra, rb)
        claim_recs += [c.record(curve=lab) for c in claims(st, tol).values()]
        verdicts_ = verdicts(st, tol)
        extra = {k: float(np.nanmean(num_(sub, k))) if k in sub.columns else math.nan
                 for k in ("kv/acc", "before/kv/acc", "mdqa/mean", "before/mdqa/mean")}
        st = {k: v for k, v in st.items() if not k.startswith("_")}
        recs.append({"sweep": meta.sweep, "curve": lab, **st, **verdicts_, **extra, "retain_tol": tol})
        plotted.append((lab, a, b))
        for when, m in (("before", b), ("after", a)):
            acc_rows.append({"curve": lab, "when": when, "n": len(m), "mean": float(m.mean()),
                             **{f"p{i}": float(v) for (i, _), v in zip(pos, m.mean(0))}})
    if not recs:
        return Section(f"{FLAG} needles report skipped: no row has every position and retention value.\n")
    fig = save_figure(plot_positions(plotted, f"{meta.sweep}: MDQA accuracy by gold position (before dashed)"),
                      outdir / figure_name)
    N = len(pos)
    md = [f"MDQA stand-in: {N} documents, exact match by the position of the document holding the answer; "
          "`before` = the frozen base (step 0), `after` = fine-tuned; mean over seeds (status ok).", ""]
    if hidden:
        md += [f"{FLAG} columns not in report.curve_by vary: {', '.join(hidden)}; added to the curve labels.", ""]
    md += [table(acc_rows, [("curve", "curve"), ("when", ""), ("n", "seeds"), ("mean", "mean")]
                 + [(f"p{i}", f"pos {i}") for i, _ in pos]), "", f"![accuracy by gold position]({fig.name})", "",
           "### Effects against the base (95% CI: paired t over seeds)", "",
           table([{**r, "g": f"{num(r['mid_gain'])} {interval(r['mid_gain_lo'], r['mid_gain_hi'])}",
                   "rng": f"{num(r['range_before'])} → {num(r['range_after'])}",
                   "dr": f"{num(r['d_range'])} {interval(r['d_range_lo'], r['d_range_hi'])}",
                   "ret": f"{num(r['retain_before'], 4)} → {num(r['retain_after'], 4)}",
                   "c": f"{num(r['cost'])} {interval(r['cost_lo'], r['cost_hi'])}",
                   "rc": f"{num(r['rel_cost'])} {interval(r['rel_cost_lo'], r['rel_cost_hi'])}",
                   "kv": f"{num(r['before/kv/acc'])} → {num(r['kv/acc'])}"} for r in recs],
                 [("curve", "curve"), ("n_seeds", "seeds"), ("g", f"middle gain (pos {recs[0]['mid']})"),
                  ("mid_target", "≥ +0.05"), ("rng", "range before → after"), ("dr", "Δ range"),
                  ("ret", "retain LM CE before → after"), ("c", "retention cost"), ("rc", "relative cost"),
                  ("kv", "kv/acc before → after")]), "", "### Does the published effect show?", ""]
    for r in recs:
        md.append(f"* `{r['curve']}`: middle positions up — **{r['middle_up']}** (Δ = {num(r['mid_gain'])} "
                  f"{interval(r['mid_gain_lo'], r['mid_gain_hi'])}); position curve flatter — **{r['flatter']}** "
                  f"(Δ range = {num(r['d_range'])} {interval(r['d_range_lo'], r['d_range_hi'])}, mean change "
                  f"{num(r['d_all'])} {interval(r['d_all_lo'], r['d_all_hi'])}); little forgetting "
                  f"— **{r['little_forgetting']}** (relative cost {num(r['rel_cost'])} "
                  f"{interval(r['rel_cost_lo'], r['rel_cost_hi'])} vs tolerance {num(tol)}). "
                  f"Published effect: **{r['published_effect']}**." + (" (fewer than 2 seeds: no CI.)"
                                                                        if r["n_seeds"] < 2 else ""))
    shows = [r["curve"] for r in recs if r["published_effect"] == SHOWS]
    md += ["", f"The published effect shows for {', '.join(f'`{c}`' for c in shows)}." if shows else
           "The published effect does not show for any curve at this scale.", ""]
    return Section("\n".join(md) + "\n", [], [fig], claim_recs)
