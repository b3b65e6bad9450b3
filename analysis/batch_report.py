"""The report section of a batch-selection sweep (`report.kind: batch_selection`; papers.md §3, "Mini-Batch
Optimization of Contrastive Loss", Cho et al., TMLR 2024): the paper's claims as ratios and differences with
Student-t CIs (analysis.verdict) against shuffled SGD, decided by rules that can fail.

Rows carry `train.batch_selection` (the strategy), `train.schedule` and the task sizes; the curves table
(`analysis.load.read_curves`) one row per (run_id, step) with the rule metric (`opt/gap` = full loss − optimum
for the synthetic task, `test/retrieval` for digits) and `cost/forwards` (pair-forwards spent so far,
ftcore.batching.cost). An *arm* is a strategy, suffixed `+<schedule>` when `train.schedule` varies and is not
constant (`shuffle+cosine`). The *controls* are the shuffle arms: shuffled SGD at constant lr, and with a
decaying lr when the sweep has it. Panels are `report.panel_by`, by default every other varying config column
(N, d, B). Per-run measures (analysis.batch_measures): steps and compute to each ε of `report.select`, the
area under the (log-)metric curve per step, the tail level (floor), the final value.

Claims, per panel, for each fast arm A ∈ {osgd, spectral} against each control C, seeds independent (Welch):

    steps     ratio T_C / T_A of the geometric means of the steps to ε          shows iff CI above 1
    10×       the same ratio (the paper's "order of magnitude"; gap rules only)  shows iff CI above 10
    compute   ratio F_C / F_A of the pair-forwards to ε                           shows iff CI above 1
    area      difference area_A − area_C                    shows iff CI below 0 (above 0 if higher is better)
    final     difference y_A(T) − y_C(T) (and full/loss when it is not the rule metric), same direction

Censoring, thought through. A run that never meets the rule is censored at the budget T: its true hitting
time is ≥ T, possibly ∞ — constant-lr SGD settles at a noise floor and an ε under it is never reached, so
T_C/T_A then grows with the budget without bound (the former ε = 0.003 "≥ 10×" passed this way). A censored
control therefore gives only a lower bound of the speed-up, and a lower bound is never read as a verdict here:
a speed-up claim at ε is *decidable* only when every control run has settled beyond ε — its floor, the level
over the last quarter of the budget (geometric mean of the gap), lies on the reachable side of ε. That implies
every control run reached ε (no censoring) and that its hitting time measures its descent, not a lucky
fluctuation at its floor. Otherwise the claim is "does not show" whatever the numbers, and the table says
"undecidable" with the number of control runs whose floor is not beyond ε. A censored fast-arm run makes its
T_A only a lower bound, the ratio an upper bound: also "does not show". The area and the final values need no
such care (no censoring); the floor of each arm is listed with its t-interval over seeds.

Other claims per panel with the gap rule: fixed stalls — ratio of fixed's final gap to constant-lr shuffle's,
CI above 1; the equivalence theorem — full and all_batches reach the same final full loss, difference CI
within ±SAME_OPTIMUM_TOL.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.atomic import save_figure
from analysis.batch_measures import CLIP, Rule, parse_rules, run_measures
from analysis.load import drop_pruned, read_curves
from analysis.markdown import Section, interval, num, table
from analysis.meta import SweepMeta, canon, is_config_column, label, require, value_key
from analysis.verdict import METHOD, NOT, SHOWS, Claim, Effect, claim, claims_markdown, difference, mean_effect, ratio

STRATEGY, SCHEDULE = "train.batch_selection", "train.schedule"
CONTROL = "shuffle"                 # the controls: shuffle arms (constant lr, decayed lr)
FAST = ("osgd", "spectral")         # the paper's high-loss batch selections
ORDER = 10.0                        # the paper's "an order of magnitude sooner" (synthetic, gap rules)
SAME_OPTIMUM_TOL = 0.01
COST = "cost/forwards"
ONE_UPDATE_PER_EPOCH = ("full", "all_batches")


def arm_labels(runs: pd.DataFrame) -> pd.Series:
    """strategy, or strategy+schedule when train.schedule varies in the sweep and is not constant."""
    arm = runs[STRATEGY].map(canon)
    if SCHEDULE in runs.columns and runs[SCHEDULE].map(canon).nunique() > 1:
        sched = runs[SCHEDULE].map(canon)
        arm = arm.where(sched == "constant", arm + "+" + sched)
    return arm


def panel_columns(runs: pd.DataFrame, meta: SweepMeta) -> list[str]:
    if meta.panel_by:
        require(runs, meta.panel_by, "report.panel_by")
        return list(meta.panel_by)
    return [c for c in runs.columns if is_config_column(c) and c not in (STRATEGY, SCHEDULE, "seed")
            and runs[c].map(canon).nunique() > 1]


def pos(x) -> np.ndarray:
    """Steps or forwards as positive numbers for log ratios (a target met at step 0 counts as 1)."""
    return np.maximum(np.asarray(x, dtype=float), 1.0)


def floor_effect(m: pd.DataFrame, rule: Rule) -> Effect:
    """The tail level over seeds: geometric mean with the t-interval of the logs (gaps), else the mean."""
    if not rule.lower:
        return mean_effect(m["tail"])
    e = mean_effect(np.log10(np.maximum(m["tail"].to_numpy(float), CLIP)))
    return Effect(10 ** e.estimate, 10 ** e.lo, 10 ** e.hi, "mean", e.n)


def not_beyond(c: pd.DataFrame, rule: Rule) -> int:
    """How many of the control's runs have their floor (tail level) NOT beyond ε (NaN counts as not)."""
    tail = c["tail"].to_numpy(float)
    beyond = tail < rule.eps if rule.lower else tail > rule.eps
    return int((~beyond).sum())


def beyond_floor(c: pd.DataFrame, rule: Rule) -> bool:
    """Every control run has settled beyond ε (and there is at least one)."""
    return len(c) > 0 and not_beyond(c, rule) == 0


def decided(c: Claim, ok: bool, why: str) -> Claim:
    """c with its rule extended by the decidability condition; verdict NOT when the condition fails."""
    return Claim(c.statement, c.effect, c.control, f"{c.rule} and {why}", c.verdict if ok else NOT)


def speed_claims(m: pd.DataFrame, arm: str, ctrl: str, i: int, rule: Rule, tag: str) -> dict[str, Claim]:
    """{"steps": > 1, "10×": > ORDER (gap rules), "compute": > 1} to rule i of `arm` against control `ctrl`;
    decided only when ε is beyond every control run's floor and every `arm` run reaches ε."""
    a, c = m[m["_arm"] == arm], m[m["_arm"] == ctrl]
    a_cens, c_cens = int(a[f"censored_{i}"].sum()), int(c[f"censored_{i}"].sum())
    ok = beyond_floor(c, rule) and a_cens == 0 and len(a) > 0
    why = (f"ε beyond every {ctrl} run's floor ({not_beyond(c, rule)} of {len(c)} not) and every {arm} run "
           f"reaches ε ({a_cens} of {len(a)} censored)")
    bound = f" ({c_cens} of {len(c)} {ctrl} runs censored: a lower bound only)" if c_cens else ""
    steps = ratio(pos(c[f"hit_{i}"]), pos(a[f"hit_{i}"]))
    out = {"steps": decided(claim(f"{tag}{arm} reaches {rule.text()} sooner than {ctrl} (steps){bound}", steps,
                                  ctrl, above=1.0), ok, why)}
    if rule.metric == "opt/gap":
        out["10×"] = decided(claim(f"{tag}{arm} reaches {rule.text()} ≥ {ORDER:g}× sooner than {ctrl} (steps){bound}",
                                   steps, ctrl, above=ORDER), ok, why)
    if a[f"cost_{i}"].notna().all() and c[f"cost_{i}"].notna().all() and len(a) and len(c):
        cost = ratio(pos(c[f"cost_{i}"]), pos(a[f"cost_{i}"]))
        out["compute"] = decided(claim(f"{tag}{arm} reaches {rule.text()} with less compute than {ctrl} "
                                       f"(pair-forwards){bound}", cost, ctrl, above=1.0), ok, why)
    return out


def level_claims(m: pd.DataFrame, runs: pd.DataFrame, arm: str, ctrl: str, rule: Rule, tag: str) -> list[Claim]:
    """Area and final values of `arm` against `ctrl` (no censoring): differences, direction from the rule."""
    a, c = m[m["_arm"] == arm], m[m["_arm"] == ctrl]
    side = {"below": 0.0} if rule.lower else {"above": 0.0}
    word = "lower" if rule.lower else "higher"
    scale = f"mean log10 {rule.metric}" if rule.lower else f"mean {rule.metric}"
    out = [claim(f"{tag}{arm}'s area under the {rule.metric} curve ({scale} over the budget) is {word} than "
                 f"{ctrl}'s", difference(a["area"], c["area"]), ctrl, **side),
           claim(f"{tag}{arm}'s final {rule.metric} is {word} than {ctrl}'s", difference(a["final"], c["final"]),
                 ctrl, **side)]
    if rule.metric != "opt/gap" and "full/loss" in runs.columns:
        la, lc = (runs.loc[runs["_arm"] == x, "full/loss"] for x in (arm, ctrl))
        out.append(claim(f"{tag}{arm}'s final full/loss is lower than {ctrl}'s", difference(la, lc), ctrl,
                         below=0.0))
    return out


def paper_claims(m: pd.DataFrame, runs: pd.DataFrame, rule: Rule, tag: str) -> list[Claim]:
    """fixed stalls (final gap ratio to constant-lr shuffle, CI above 1); full ≡ all_batches (final loss)."""
    out, arms = [], set(m["_arm"])
    if rule.metric != "opt/gap":
        return out
    if "fixed" in arms and CONTROL in arms:
        f, s = (m.loc[m["_arm"] == x, "final"] for x in ("fixed", CONTROL))
        out.append(claim(f"{tag}fixed stalls above shuffle's final gap", ratio(pos_gap(f), pos_gap(s)), CONTROL,
                         above=1.0))
    if {"full", "all_batches"} <= arms and "full/loss" in runs.columns:
        f, b = (runs.loc[runs["_arm"] == x, "full/loss"] for x in ("full", "all_batches"))
        out.append(claim(f"{tag}full and all_batches reach the same full loss", difference(f, b), "all_batches",
                         within=(-SAME_OPTIMUM_TOL, SAME_OPTIMUM_TOL)))
    return out


def pos_gap(x) -> np.ndarray:
    return np.maximum(np.asarray(x, dtype=float), CLIP)


def geo(values) -> Effect:
    """Geometric mean of positive values with the t-interval of the logs."""
    e = mean_effect(np.log(pos(values)))
    return Effect(float(np.exp(e.estimate)), float(np.exp(e.lo)), float(np.exp(e.hi)), "mean", e.n)


def measure_rows(m: pd.DataFrame, rules: list[Rule], n: float | None, b: float | None) -> tuple[list, list]:
    """(per-arm rows: final, floor, area, cost per step; per (ε, arm) rows: steps, epochs, compute to ε)."""
    arms, per_eps = [], []
    for arm in sorted(m["_arm"].unique(), key=value_key):
        g = m[m["_arm"] == arm]
        fl, ar = floor_effect(g, rules[0]), mean_effect(g["area"])
        arms.append({"arm": arm, "runs": len(g), "final": g["final"].mean(), "floor": num(fl.estimate),
                     "floor_ci": interval(fl.lo, fl.hi), "area": ar.text(), "cps": g["cost_per_step"].mean()})
        per_epoch = 1.0 if arm.split("+")[0] in ONE_UPDATE_PER_EPOCH or not (n and b) else b / n
        for i, r in enumerate(rules):
            cens = int(g[f"censored_{i}"].sum())
            t, f = geo(g[f"hit_{i}"]), geo(g[f"cost_{i}"]) if g[f"cost_{i}"].notna().all() else None
            mark = "≥ " if cens else ""
            per_eps.append({"eps": r.text(), "arm": arm, "cens": f"{cens}/{len(g)}", "steps": mark + num(t.estimate),
                            "steps_ci": interval(t.lo, t.hi), "epochs": mark + num(t.estimate * per_epoch),
                            "compute": mark + num(f.estimate) if f else "—",
                            "compute_ci": interval(f.lo, f.hi) if f else "—"})
    return arms, per_eps


def claim_rows(claims: list[Claim]) -> list[dict]:
    return [{"verdict": f"**{c.verdict}**", "statement": c.statement, "effect": c.effect.text(), "rule": c.rule}
            for c in claims]


def plot_curves(curves: pd.DataFrame, runs: pd.DataFrame, panels: list[tuple[str, pd.DataFrame]], y: str,
                x: str, rules: list[Rule] | None) -> Figure:
    n = max(len(panels), 1)
    fig = Figure(figsize=(5.6 * min(n, 3), 4.2 * -(-n // 3)))
    axes = fig.subplots(-(-n // 3), min(n, 3), squeeze=False).ravel()
    log = y == "opt/gap"
    for ax, (title, pruns) in zip(axes, panels):
        for arm in sorted(pruns["_arm"].unique(), key=value_key):
            ids = set(pruns.loc[pruns["_arm"] == arm, "run_id"])
            c = curves[curves["run_id"].isin(ids)]
            wide = c.pivot_table(index="step", columns="run_id", values=y)
            xs = c.groupby("step")[x].mean().reindex(wide.index) if x != "step" else wide.index.to_series()
            vals = wide.to_numpy(float)
            if log:
                vals = np.maximum(vals, CLIP)
            mean = np.exp(np.nanmean(np.log(vals), 1)) if log else np.nanmean(vals, 1)
            line, = ax.plot(xs.to_numpy(float), mean, label=arm, ls="--" if "+" in arm else "-")
            ax.fill_between(xs.to_numpy(float), np.nanmin(vals, 1), np.nanmax(vals, 1), alpha=0.15,
                            color=line.get_color())
        if log:
            ax.set_yscale("log")
        if x != "step":
            ax.set_xscale("log")
        for r in rules or []:
            ax.axhline(r.eps, color="k", lw=0.6, ls=":")
        ax.set(title=title or "all runs", xlabel="step (SGD updates)" if x == "step" else f"{x} (cumulative)",
               ylabel=y)
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def panel_claims(m: pd.DataFrame, g: pd.DataFrame, rules: list[Rule], tag: str) -> tuple[list[Claim], list[dict]]:
    """Every claim of one panel, and the speed-up table's rows (one per ε, fast arm, control)."""
    arms = set(m["_arm"])
    controls = sorted((a for a in arms if a.split("+")[0] == CONTROL), key=lambda a: (a != CONTROL, a))
    fast = [a for a in sorted(arms) if a.split("+")[0] in FAST]
    claims, rows = [], []
    for ctrl in controls:
        c = m[m["_arm"] == ctrl]
        for arm in fast:
            for i, r in enumerate(rules):
                by = speed_claims(m, arm, ctrl, i, r, tag)
                claims += list(by.values())
                rows.append({"eps": r.text(), "arm": arm, "ctrl": ctrl,
                             "beyond": "yes" if beyond_floor(c, r) else
                             f"no: {not_beyond(c, r)} of {len(c)} (undecidable)",
                             **{k: f"{by[k].effect.text()} **{by[k].verdict}**" if k in by else "—"
                                for k in ("steps", "compute")},
                             "10×": f"**{by['10×'].verdict}**" if "10×" in by else "—"})
            claims += level_claims(m, g, arm, ctrl, rules[0], tag)
    return claims + paper_claims(m, g, rules[0], tag), rows


def batch_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *, figure_name: str, n_boot: int = 1000,
                  seed: int = 0, curves: pd.DataFrame | None = None) -> Section:
    """`outdir` is DIR/report (analysis.report.write_report); the curves are read from DIR unless given.
    (`n_boot`, `seed`: unused — every interval is analysis.verdict's Student-t; kept for the dispatch.)"""
    require(runs, [STRATEGY, "run_id"], "report.kind batch_selection")
    curves = read_curves(Path(outdir).parent) if curves is None else curves
    rules = parse_rules(meta.select)
    y = meta.y or rules[0].metric
    runs = drop_pruned(runs)                 # stopped early: not a run of the budget
    runs = runs.assign(_arm=arm_labels(runs))
    meas = run_measures(runs, curves, rules, COST).merge(runs[["run_id", "_arm"]], on="run_id")
    pcols = panel_columns(runs, meta)
    groups = [(label(pcols, k if isinstance(k, tuple) else (k,)), g) for k, g in runs.groupby(pcols, sort=False)] \
        if pcols else [("", runs)]
    groups.sort(key=lambda t: tuple(value_key(v) for v in t[1][pcols].iloc[0]) if pcols else ())
    md = [f"Rules `{'; '.join(r.text() for r in rules)}`. Per run: the first logged step meeting each rule "
          "(censored at the budget when none does; one step = one optimizer update), the pair-forwards spent "
          f"by then (`{COST}`: training pairs + the selection's own embeddings, ftcore.batching.cost), the area "
          "under the curve per step (log10 for a gap), the floor (level over the last quarter of the budget), "
          "the final value. Steps and compute: geometric means over seeds; `≥`: some runs censored (a lower "
          "bound). Speed-ups are control / strategy, against each shuffle arm; unless every control run's floor "
          "lies beyond ε (so every control run reached ε and sits past it) the comparison is undecidable: "
          f"verdict does not show, whatever the ratio. Intervals: {METHOD}.\n"]
    all_claims: list[Claim] = []
    records: list[dict] = []
    for title, g in groups:
        m = meas[meas["run_id"].isin(set(g["run_id"]))]
        first = g.iloc[0]
        n, b = (float(first[c]) if c in g.columns else None for c in ("task.n", "task.batch_size"))
        arms, per_eps = measure_rows(m, rules, n, b)
        tag = f"[{title}] " if title else ""
        claims, rows = panel_claims(m, g, rules, tag)
        all_claims += claims
        records += [c.record(panel=title or "all runs") for c in claims]
        md.append(f"### {title or 'all runs'}\n")
        md.append(table(arms, [("arm", "arm"), ("runs", "runs"), ("final", f"final {rules[0].metric}"),
                               ("floor", "floor (last ¼)"), ("floor_ci", "95% CI"), ("area", "area [CI]"),
                               ("cps", "pair-forwards / step")]) + "\n")
        md.append(table(per_eps, [("eps", "rule"), ("arm", "arm"), ("cens", "censored"), ("steps", "steps"),
                                  ("steps_ci", "95% CI"), ("epochs", "epochs"), ("compute", "pair-forwards"),
                                  ("compute_ci", "95% CI")]) + "\n")
        if rows:
            md.append(table(rows, [("eps", "rule"), ("arm", "arm"), ("ctrl", "control"),
                                   ("beyond", "ε beyond every control floor"), ("steps", "speed-up (steps) > 1"),
                                   ("10×", f"≥ {ORDER:g}×"), ("compute", "speed-up (compute) > 1")]) + "\n")
        other = [c for c in claims if "sooner" not in c.statement and "less compute" not in c.statement]
        if other:
            md.append(claims_markdown(other))
    shown = sum(c.shows for c in all_claims)
    md.insert(1, f"**{shown} of {len(all_claims)} claims show** (every claim with its interval and rule in "
                 "claims.json; the speed-up claims per panel in the tables below).\n")
    figs = [save_figure(plot_curves(curves, runs, groups, y, "step", rules if y == rules[0].metric else None),
                        Path(outdir) / figure_name)]
    md.append(f"![{y} vs step per arm]({figs[0].name})\n")
    if COST in curves.columns:
        name = Path(figure_name).with_name(Path(figure_name).stem + "_compute.png").name
        figs.append(save_figure(plot_curves(curves, runs, groups, y, COST, rules if y == rules[0].metric else None),
                                Path(outdir) / name))
        md.append(f"![{y} vs pair-forwards per arm]({figs[1].name})\n")
    return Section("\n".join(md), figures=figs, claims=records)


__all__ = ["batch_section", "arm_labels", "beyond_floor", "floor_effect", "SHOWS", "NOT"]
