"""The report section of an in-context-learning sweep (`report.kind: icl_curve`): error vs number of
in-context examples k per model, with the baselines computed on the same prompts overlaid (Garg et al.
2022 Fig. 2; papers.md §0.1, §4).

Rows carry `nse/<who>/kNN` — the normalised squared error of `<who>` (`model`, or a baseline such as
`least_squares` or the closed-form `bayes` predictor) at in-context position k, averaged over the member's
evaluation prompts. Per curve (`report.curve_by`, e.g. model.name) and k: the mean over seeds with a
seed-bootstrap 95% band. The baselines do not depend on the model, so each is pooled over the rows that
share the `task.*` columns of `report.curve_by` (over every row when it names none); they depend on the
task (a δ axis changes the Bayes predictor), so one baseline curve per task value. Optional
`nse_long/<who>/kN` columns (a closed-form curve over a longer k range than the model's context, e.g.
`dual_modes`'s Bayes risk up to k = 4096) get the same treatment in a second table.

Early ascent (Lin & Lee 2024, papers.md §7c): every curve gets a shape statement. With b the k of the
largest mean, a the k of the smallest mean at k ≤ b and e the smallest at k ≥ b, the curve *rises* when
b > a and m_b − m_a exceeds a noise threshold, and *falls* when e > b and m_b − m_e does; "early ascent" =
rises then falls. The threshold is z·SE of a paired difference, SE from the runs' two-way residual spread
pooled over every k, z Bonferroni-corrected for the K(K−1) pairs the search could pick (`shape`). Why not
the per-k bootstrap bands shown in the table: with 3 seeds their coverage is far below 95% and the max/min
search exploits it — a flat curve with noise was called "early ascent" in 12 of 40 synthetic trials by the
non-overlapping-bands rule, 0 of 40 by this one (tests/test_analysis_icl.py). Fewer than 2 complete runs:
no noise estimate, nothing counts as beyond noise.

Extra model curves: `nse/model_<tag>/kNN` columns (e.g. `model_b`, a looped model read after its trained loop
count b when it is evaluated at b' > b) are per-curve like `model`, labelled "<curve> (model_<tag>)".

Computed comparisons (analysis/verdict.py; papers.md §4(d) for looped vs standard, §5 for transformer vs Mamba),
at k_ref = min(2d, K − 1), with `report.select` naming the control curve by a label (e.g.
"model.name=transformer"): every other model curve is compared with the control curve that agrees with it on
the remaining `report.curve_by` columns (e.g. the same depth) —

    error ratio      ρ_err = GM(nse_curve) / GM(nse_control) over seeds (Welch on logs); claim "comparable"
                     shows iff the CI lies within [1/W, W], W = report.theory["error_ratio_within"] (default 2.5,
                     the factor of papers.md §4(d))
    parameter ratio  ρ_par = n_trainable ratio (deterministic: the CI is the point); a claim only when
                     report.theory["param_ratio_below"] is set (the looped paper's < 1/10): shows iff below it
    loops b → b'     for a curve with `model_b`: GM(nse at b') / GM(nse at b), paired over runs; claim "no
                     worse past the trained loop count" shows iff the CI is below
                     report.theory["loop_ratio_below"] (default 1.25)
    learns           per model curve: nse(k_ref) / nse(k = 0), paired over runs; "learns in context" shows iff
                     the CI is below report.theory["learn_ratio_below"] (default 0.5) — a model still on the
                     plateau makes the loop claim vacuous and the error ratio meaningless, and this says so
Without `report.select` the comparison table is descriptive only (no claims).
"""
from __future__ import annotations

import re
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.atomic import save_figure
from analysis.markdown import FLAG, Section, num, table
from analysis.meta import SweepMeta, canon, label, parse_label, require
from analysis.verdict import Claim, claim, claims_markdown, ratio

COLUMN = re.compile(r"^nse/(?P<who>[A-Za-z0-9_]+)/k(?P<k>\d+)$")
LONG = re.compile(r"^nse_long/(?P<who>[A-Za-z0-9_]+)/k(?P<k>\d+)$")
MODEL = "model"
BAYES = "bayes"
ERROR_WITHIN, LOOP_BELOW, LEARN_BELOW = 2.5, 1.25, 0.5   # report.theory defaults (module docstring)


def is_model(who: str) -> bool:
    """`model` and the extra model read-outs `model_<tag>` (per curve, not pooled like a baseline)."""
    return who == MODEL or who.startswith(MODEL + "_")


def nse_columns(runs: pd.DataFrame, pattern: re.Pattern = COLUMN) -> dict[str, dict[int, str]]:
    """who -> {k: column}."""
    out: dict[str, dict[int, str]] = {}
    for c in runs.columns:
        m = pattern.match(str(c))
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


def _groups(runs: pd.DataFrame, cols: list[str]):
    """(label, rows) per distinct value of `cols` (one group labelled '' when cols is empty)."""
    if not cols:
        return [("", runs)]
    return [(label(cols, [sub.iloc[0][c] for c in cols]), sub)
            for _, sub in runs.groupby([runs[c].map(canon) for c in cols], sort=True)]


def curves(runs: pd.DataFrame, curve_by: list[str], *, n_boot: int = 1000, seed: int = 0,
           pattern: re.Pattern = COLUMN) -> pd.DataFrame:
    """Long table: curve, who, task (label of the curve's task.* columns), k, mean, lo, hi, n (seeds)."""
    cols, rng, rows = nse_columns(runs, pattern), np.random.default_rng(seed), []
    task_by = [c for c in curve_by if c.startswith("task.")]

    def add(curve, who, task, sub, by_k):
        for k, col in sorted(by_k.items()):
            vals = pd.to_numeric(sub[col], errors="coerce").to_numpy(float)
            rows.append({"curve": curve, "who": who, "task": task, "k": k, "n": int(np.isfinite(vals).sum()),
                         **dict(zip(("mean", "lo", "hi"), mean_band(vals, n_boot, rng))),
                         "runs": tuple(vals)})                   # per row, same row order at every k (paired)

    for name, sub in _groups(runs, curve_by):
        task = label(task_by, [sub.iloc[0][c] for c in task_by])
        add(name or "all", MODEL, task, sub, cols.get(MODEL, {}))
        for who in sorted(w for w in cols if is_model(w) and w != MODEL):
            if sub[list(cols[who].values())].apply(pd.to_numeric, errors="coerce").notna().any().any():
                add(f"{name or 'all'} ({who})", who, task, sub, cols[who])      # only curves that report it
    for who, by_k in sorted(cols.items()):
        if not is_model(who):
            for task, sub in _groups(runs, task_by):
                add(f"{who} ({task})" if task else who, who, task, sub, by_k)
    return pd.DataFrame(rows)


def pooled_se(runs: np.ndarray) -> float:
    """SE of a paired difference of two k-means, m_i − m_j, from a (K, n) matrix of per-run values: two-way
    residuals r = v − (k mean) − (run offset) give σ² = Σr² / ((K−1)(n−1)) and SE = σ √(2/n). NaN when n < 2
    or any value is missing (runs that skip a k are not paired)."""
    K, n = runs.shape
    if n < 2 or K < 2 or not np.isfinite(runs).all():
        return float("nan")
    r = runs - runs.mean(1, keepdims=True) - runs.mean(0, keepdims=True) + runs.mean()
    return float(np.sqrt((r ** 2).sum() / ((K - 1) * (n - 1)) * 2 / n))


def shape(sub: pd.DataFrame, alpha: float = 0.05) -> tuple[str, bool]:
    """(statement, early ascent?) for one curve's rows (k, mean, n, runs); see the module docstring.

    A rise a → b (or fall b → e) is beyond noise when m_b − m_a > z · SE, SE from `pooled_se`, z the normal
    quantile at 1 − α / (K(K−1)) (Bonferroni over the ordered pairs the max/min search could have picked)."""
    c = sub.sort_values("k").reset_index(drop=True)
    c = c[np.isfinite(c["mean"].to_numpy(float))].reset_index(drop=True)
    if c.empty:
        return "no finite values", False
    k, m = c["k"].to_numpy(float), c["mean"].to_numpy(float)
    K = len(k)
    b = int(m.argmax())
    a = int(m[: b + 1].argmin())
    e = b + int(m[b:].argmin())
    se = pooled_se(np.array([list(r) for r in c["runs"]], float))                   # (K, n) -> scalar
    z = NormalDist().inv_cdf(1 - alpha / max(K * (K - 1), 1))
    banded = np.isfinite(se)
    rises = b > a and banded and m[b] - m[a] > z * se
    falls = e > b and banded and m[b] - m[e] > z * se

    def at(i):
        return f"k={int(k[i])} ({num(m[i])})"
    margin = f" [noise threshold {num(z * se)}]" if banded else ""
    if rises and falls:
        return f"early ascent: rises from {at(a)} to a peak at {at(b)}, then falls to {at(e)}{margin}", True
    if rises:
        return f"rises from {at(a)} to {at(b)}; no fall beyond noise by k={int(k[-1])} ({num(m[-1])}){margin}", False
    note = margin if banded else " (fewer than 2 complete runs: no noise estimate, nothing counts as beyond noise)"
    if b > a:
        note = f"; its largest rise, {at(a)} to {at(b)}, is within noise" + note
    first_fall = int(m.argmin())
    if falls or (b == 0 and first_fall > 0 and banded and m[0] - m[first_fall] > z * se):
        return f"no early ascent: falls from {at(b)} to {at(e)}{note}", False
    return f"no early ascent, no change beyond noise: {at(0)} … {at(K - 1)}{note}", False


def shape_lines(tab: pd.DataFrame) -> list[str]:
    """One bullet per curve, then a flag per model curve that misses the early ascent its task's Bayes curve has."""
    lines, bayes_up, missed = [], {}, []
    for (curve, who), sub in tab.groupby(["curve", "who"], sort=True):
        text, up = shape(sub)
        lines.append(f"- `{curve}`: {text}")
        if who == BAYES:
            bayes_up[sub["task"].iloc[0]] = up
        elif who == MODEL and not up:
            missed.append((curve, sub["task"].iloc[0]))
    for curve, task in missed:
        if bayes_up.get(task):
            lines.append(f"- {FLAG} `{curve}`: the Bayes curve of its task shows early ascent and this model "
                         "curve does not (the published effect does not show at this scale).")
    return lines


def plot(tab: pd.DataFrame, dim: float | None, path: Path) -> Path:
    fig = Figure(figsize=(6.4, 4.2))                                # no pyplot (analysis/plots.py)
    ax = fig.subplots()
    for (curve, who), sub in tab.groupby(["curve", "who"], sort=True):
        style = "-" if who == MODEL else "-." if is_model(who) else "--"
        (line,) = ax.plot(sub["k"], sub["mean"], style, label=curve, lw=1.6 if who == MODEL else 1.0)
        if who == MODEL:
            ax.fill_between(sub["k"], sub["lo"], sub["hi"], color=line.get_color(), alpha=0.2)
    if dim:
        ax.axvline(dim, color="grey", lw=0.8, ls=":", label=f"k = d = {num(dim)}")
    ax.set_xlabel("in-context examples k")
    ax.set_ylabel("normalised squared error")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def _params(runs: pd.DataFrame, curve_by: list[str]) -> dict[str, np.ndarray]:
    """curve -> n_trainable per run (same row order as `curves`' runs); empty without the column."""
    if "n_trainable" not in runs.columns:
        return {}
    return {name or "all": pd.to_numeric(sub["n_trainable"], errors="coerce").to_numpy(float)
            for name, sub in _groups(runs, curve_by)}


def control_of(curve: str, names: list[str], control: str) -> str | None:
    """The curve of `names` that matches the `control` label and agrees with `curve` on every other column;
    None when `curve` is itself a control or none matches."""
    want, mine = parse_label(control), parse_label(curve)
    if all(mine.get(c) == v for c, v in want.items()):
        return None
    for n in names:
        lab = parse_label(n)
        if all(lab.get(c) == v for c, v in want.items()) and \
                all(lab.get(c) == v for c, v in mine.items() if c not in want):
            return n
    return None


def comparison_claims(runs: pd.DataFrame, tab: pd.DataFrame, curve_by: list[str], k_ref: int,
                      control: str | None, theory: dict | None = None) -> tuple[list[dict], list[Claim]]:
    """(table rows, claims) at k = k_ref; see the module docstring. Without `control`: rows only, the
    ratios taken to the curve with the lowest error (descriptive)."""
    theory = theory or {}
    at = tab[(tab["who"] == MODEL) & (tab["k"] == k_ref)].set_index("curve")
    if len(at) < 2 or not at["mean"].notna().any():
        return [], []
    params = _params(runs, curve_by)
    names = list(at.index)
    within = float(theory.get("error_ratio_within", ERROR_WITHIN))
    par_below = theory.get("param_ratio_below")
    rows, claims = [], []
    for c in names:
        ctrl = control_of(c, names, control) if control else (at["mean"].idxmin() if c != at["mean"].idxmin() else None)
        r = at.loc[c]
        row = {"curve": c, "params": num(np.nanmedian(params[c]) if c in params else float("nan")),
               "err": f"{num(r['mean'])} [{num(r['lo'])}, {num(r['hi'])}]", "control": ctrl or "—",
               "err_ratio": "—", "param_ratio": "—"}
        if ctrl is not None:
            e_err = ratio(np.asarray(r["runs"], float), np.asarray(at.loc[ctrl, "runs"], float))
            row["err_ratio"] = e_err.text()
            if c in params and ctrl in params:
                e_par = ratio(params[c], params[ctrl])
                row["param_ratio"] = e_par.text(4)
                if control and par_below is not None:
                    claims.append(claim(f"{c} has fewer than {num(float(par_below))}× the parameters of {ctrl}",
                                        e_par, ctrl, below=float(par_below)))
            if control:
                claims.append(claim(f"{c}'s error at k={k_ref} is comparable to {ctrl}'s (within {num(within)}×)",
                                    e_err, ctrl, within=(1 / within, within)))
        rows.append(row)
    return rows, claims


def loop_claims(tab: pd.DataFrame, k_ref: int, theory: dict | None = None) -> list[Claim]:
    """Per curve with a `model_b` read-out: nse at b' over nse at b, paired over runs, at k_ref."""
    below = float((theory or {}).get("loop_ratio_below", LOOP_BELOW))
    at = tab[tab["k"] == k_ref]
    out = []
    for _, b in at[at["who"] == "model_b"].iterrows():
        base = b["curve"].removesuffix(" (model_b)")
        m = at[(at["who"] == MODEL) & (at["curve"] == base)]
        if m.empty:
            continue
        eff = ratio(np.asarray(m.iloc[0]["runs"], float), np.asarray(b["runs"], float), paired=True)
        out.append(claim(f"{base} run past its trained loop count (b' > b) is no worse than at b, k={k_ref}",
                         eff, f"{base} at b loops", below=below))
    return out


def learn_claims(tab: pd.DataFrame, k_ref: int, theory: dict | None = None) -> list[Claim]:
    """Per model curve: error at k_ref over error at k = 0 (no context), paired over runs; "learns in context"
    shows iff the CI is below report.theory["learn_ratio_below"] (default 0.5). It qualifies the other claims:
    a model that never left the plateau is trivially "no worse past b" and far from its control."""
    below = float((theory or {}).get("learn_ratio_below", LEARN_BELOW))
    out = []
    for curve, sub in tab[tab["who"] == MODEL].groupby("curve", sort=True):
        by_k = sub.set_index("k")
        if k_ref not in by_k.index or 0 not in by_k.index:
            continue
        eff = ratio(np.asarray(by_k.at[k_ref, "runs"], float), np.asarray(by_k.at[0, "runs"], float), paired=True)
        out.append(claim(f"{curve} learns in context: its error at k={k_ref} is below {num(below)}× its error at k=0",
                         eff, f"{curve} at k=0", below=below))
    return out


def comparison(runs: pd.DataFrame, tab: pd.DataFrame, curve_by: list[str], k_ref: int) -> tuple[list[dict], str]:
    """Descriptive comparison (no control): table rows with ratios to the lowest-error curve, one sentence."""
    rows, _ = comparison_claims(runs, tab, curve_by, k_ref, None)
    if not rows:
        return [], ""
    at = tab[(tab["who"] == MODEL) & (tab["k"] == k_ref)].set_index("curve")
    return rows, f"At k = {k_ref}, {at['mean'].idxmin()} has the lowest error."


def _comparison_md(runs, tab, curve_by, k_ref, control=None, theory=None) -> tuple[list[str], list[Claim]]:
    rows, claims = comparison_claims(runs, tab, curve_by, k_ref, control, theory)
    claims = learn_claims(tab, k_ref, theory) + claims + loop_claims(tab, k_ref, theory) if control else []
    if not rows:
        return [], claims
    cols = [("curve", "curve"), ("params", "parameters"), ("err", f"error at k={k_ref} [95% band]"),
            ("control", "compared with"), ("err_ratio", "error ratio [95% CI]"),
            ("param_ratio", "parameter ratio [95% CI]")]
    what = (f"against the control `{control}` (report.select)" if control else
            "against the lowest-error curve (descriptive: no report.select control, no claims)")
    md = [f"Models compared at k = {k_ref} (2d, or the last position), {what}:", "", table(rows, cols), ""]
    if control and all(r["control"] == "—" for r in rows):
        md += [f"{FLAG} report.select `{control}` matches no curve with a counterpart: nothing compared.", ""]
    if claims:
        md += [claims_markdown(claims)]
    return md, claims


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
    peaks = {int(sub.loc[sub["mean"].idxmax(), "k"]) for _, sub in tab[tab["who"] == BAYES].groupby("curve")
             if sub["mean"].notna().any()}
    picks = sorted({0, *(int(x) for x in ([dim / 2, dim - 1, dim, 2 * dim] if dim else [])), *sorted(peaks)[:3],
                    K - 1} & set(range(K)))
    k_ref = min(int(2 * dim), K - 1) if dim else K - 1
    comp_md, claims = _comparison_md(ok, tab, list(meta.curve_by), k_ref, meta.select, meta.theory)
    rows = []
    for (curve, who), sub in tab.groupby(["curve", "who"], sort=True):
        by_k = sub.set_index("k")
        rows.append({"curve": curve, "n": int(by_k["n"].max()),
                     **{f"k{k}": f"{num(by_k.at[k, 'mean'])} [{num(by_k.at[k, 'lo'])}, {num(by_k.at[k, 'hi'])}]"
                        if is_model(who) else num(by_k.at[k, "mean"]) for k in picks if k in by_k.index}})
    md = [("Normalised squared error vs in-context examples k (mean over seeds; model curves with a "
           "seed-bootstrap 95% band; baselines on the same evaluation prompts, dashed)."), "",
          table(rows, [("curve", "curve"), ("n", "seeds")] + [(f"k{k}", f"k={k}") for k in picks]), "",
          *comp_md,
          ("Shape of each curve (early ascent: papers.md §7c; a rise or fall counts when it beats a noise "
           "threshold from the seeds' spread, corrected for picking the peak; see analysis/icl_report.py):"), "",
          *shape_lines(tab), "", f"![error vs k]({fig.name})", ""]
    long = curves(ok, list(meta.curve_by), n_boot=n_boot, seed=seed, pattern=LONG)
    if not long.empty:
        ks = sorted(long["k"].unique())
        rows = [{"curve": curve, **{f"k{k}": num(v) for k, v in zip(sub["k"], sub["mean"])}}
                for curve, sub in long.groupby("curve", sort=True)]
        md += ["Closed-form curves past the model's context (`nse_long/*`, mean over seeds):", "",
               table(rows, [("curve", "curve")] + [(f"k{k}", f"k={k}") for k in ks]), "",
               *shape_lines(long), ""]
    return Section("\n".join(md), figures=[fig], claims=[c.record(check="comparison", k=k_ref) for c in claims])
