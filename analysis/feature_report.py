"""Report kind `feature_retrieval`: the ANALOGUE of mobile-feature retrieval (papers.md §10) — bi-encoder against
the term-frequency baseline per query kind, the teacher's batch-selection strategies, and the distillation
capacity curve (the smallest student width keeping `keep` = 95% of the teacher's MRR).

Intervals are analysis.verdict's Student-t 95% intervals over seeds:

* query kinds: Δ_k = MRR_model − MRR_tfidf on kind k, paired by row (TF-IDF is deterministic: the split is fixed,
  so its value is the same on every row and the interval is the model's seed spread). Claims (the paper's
  abstract): "contextual queries: the bi-encoder beats term-frequency search" (Δ_contextual CI above 0) and "even on
  keyword queries" (Δ_keyword CI above 0).
* strategies: Welch difference of test/mrr against `shuffle` (the batch-selection paper's control) for every
  strategy; a claim for the paper's methods (spectral, osgd): "their batches give a higher test MRR than shuffle".
* width: per seed s, ρ_s(w) = test/mrr / teacher/mrr at each student width w (the teacher is evaluated on the same
  queries inside the student's task); w*_s = the smallest ladder width with ρ_s ≥ keep, log-linearly interpolated
  from the width before it (log2 w* = log2 w_{k-1} + (keep − ρ_{k-1}) / (ρ_k − ρ_{k-1})); w*_s = w_1 when the
  smallest width already passes, censored when no width does. Reported: the geometric mean of w* with the t-interval
  of mean log2 w* (no interval when a seed is censored or fewer than 2 seeds). Claim: "a student narrower than the
  teacher keeps ≥ keep of its MRR" — shows iff the upper end of that interval is below the teacher's width.
* distillation: per width, the test MRR of students at α < 1 against the α = 1 (hard-label) students of the same
  seeds, paired t; claim "distilled students retrieve better than hard-label students" per width.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.atomic import save_figure
from analysis.markdown import FLAG, Section, num, table
from analysis.meta import SweepMeta, hidden_axes, label, value_key
from analysis.verdict import METHOD, Claim, Effect, claim, difference, mean_effect

KINDS = ("keyword", "paraphrase", "situation", "contextual")
KEEP = 0.95
CONTROL = "shuffle"
PAPER_STRATEGIES = ("spectral", "osgd")      # the batch-selection paper's methods (papers.md §3): claimed to beat shuffle
WIDTH, ALPHA, STRATEGY = "model.width", "task.distill_alpha", "train.batch_selection"


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(df[col], errors="coerce").to_numpy(float) if col in df.columns else np.full(len(df), np.nan)


def _mean(a: np.ndarray) -> float:
    """Mean of the finite values; NaN (silently) when there are none."""
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def kind_rows(sub: pd.DataFrame) -> list[dict]:
    """Per query kind: model and TF-IDF MRR and top-1 (means over rows) and Δ MRR with its paired interval."""
    out = []
    for k in KINDS:
        m, t = _num(sub, f"test/mrr/{k}"), _num(sub, f"tfidf/mrr/{k}")
        if not np.isfinite(m).any():
            continue
        e = difference(m, t, paired=True)
        out.append({"kind": k, "model": _mean(m), "tfidf": _mean(t),
                    "model_top1": _mean(_num(sub, f"test/top1/{k}")),
                    "tfidf_top1": _mean(_num(sub, f"tfidf/top1/{k}")), "effect": e})
    return out


def kind_claims(rows: list[dict], where: str) -> list[Claim]:
    """The paper's two claims against term-frequency search, from `kind_rows`."""
    by = {r["kind"]: r["effect"] for r in rows}
    out = []
    for k, text in (("contextual", "contextual queries: the bi-encoder's MRR beats term-frequency search"),
                    ("keyword", "keyword queries: the bi-encoder's MRR beats term-frequency search too")):
        if k in by:
            out.append(claim(f"{text} ({where})", by[k], "TF-IDF on the same queries", above=0.0))
    return out


def threshold_widths(widths: np.ndarray, ratio: np.ndarray, keep: float = KEEP) -> np.ndarray:
    """widths (W,) ascending, ratio (S, W) -> w* (S,): the first width with ratio >= keep, log-linearly
    interpolated from the width before it; widths[0] when it already passes; NaN when none passes."""
    out = np.full(ratio.shape[0], np.nan)
    lw = np.log2(widths.astype(float))
    for s, r in enumerate(ratio):
        hit = np.flatnonzero(r >= keep)
        if not hit.size:
            continue
        k = int(hit[0])
        if k == 0:
            out[s] = widths[0]
            continue
        frac = (keep - r[k - 1]) / (r[k] - r[k - 1]) if r[k] != r[k - 1] else 1.0
        out[s] = 2.0 ** (lw[k - 1] + np.clip(frac, 0.0, 1.0) * (lw[k] - lw[k - 1]))
    return out


def width_effect(wstar: np.ndarray) -> Effect:
    """Geometric mean of w* with the t-interval of mean log2 w*; no interval if a seed is censored (NaN)."""
    if not len(wstar) or np.isnan(wstar).any():
        g = float(2.0 ** np.nanmean(np.log2(wstar))) if np.isfinite(wstar).any() else math.nan
        return Effect(g, math.nan, math.nan, "mean", (int(np.isfinite(wstar).sum()),))
    e = mean_effect(np.log2(wstar))
    return Effect(2.0 ** e.estimate, 2.0 ** e.lo if math.isfinite(e.lo) else math.nan,
                  2.0 ** e.hi if math.isfinite(e.hi) else math.nan, "mean", e.n,
                  "geometric mean; Student-t 95% interval of mean log2 w* over seeds")


def width_curve(sub: pd.DataFrame, keep: float) -> dict | None:
    """One student curve: per width the MRR ratio with its interval, and w* per seed with its effect."""
    if WIDTH not in sub.columns or "distill/mrr_ratio" not in sub.columns:
        return None
    pivot = sub.assign(_r=_num(sub, "distill/mrr_ratio"), _w=_num(sub, WIDTH)).pivot_table(
        index="seed", columns="_w", values="_r", aggfunc="mean")
    pivot = pivot.dropna()                                                      # seeds with every width
    if pivot.empty or pivot.shape[1] < 2:
        return None
    widths = pivot.columns.to_numpy(float)
    ratio = pivot.to_numpy(float)
    wstar = threshold_widths(widths, ratio, keep)
    per = [{"width": w, "effect": mean_effect(ratio[:, i]),
            "mrr": _mean(_num(sub[_num(sub, WIDTH) == w], "test/mrr"))} for i, w in enumerate(widths)]
    return {"widths": widths, "ratio": ratio, "wstar": wstar, "effect": width_effect(wstar), "per_width": per,
            "teacher_width": _mean(_num(sub, "teacher/width")),
            "teacher_mrr": _mean(_num(sub, "teacher/mrr"))}


def width_claim(curve: dict, keep: float, where: str) -> Claim:
    e, tw = curve["effect"], curve["teacher_width"]
    rule_below = tw if math.isfinite(tw) else math.nan
    return claim(f"a student narrower than the teacher (width {num(tw)}) keeps >= {keep:g} of its MRR ({where}): "
                 f"the threshold width w*", e, "the teacher's width", below=rule_below)


def strategy_rows(ok: pd.DataFrame, others: list[str]) -> tuple[list[dict], list[Claim]]:
    """test/mrr per batch-selection strategy and its Welch difference against shuffle (same other columns)."""
    rows, claims = [], []
    if STRATEGY not in ok.columns or ok[STRATEGY].nunique() < 2:
        return rows, claims
    for lab, sub in _groups(ok, others):
        ctrl = sub[sub[STRATEGY].astype(str) == CONTROL]
        for strat, part in sorted(sub.groupby(sub[STRATEGY].astype(str)), key=lambda kv: kv[0]):
            r = {"curve": lab, "strategy": strat, "n": len(part), "mrr": _mean(_num(part, "test/mrr")),
                 "ctx": _mean(_num(part, "test/mrr/contextual")),
                 "forwards": _mean(_num(part, "cost/forwards"))}
            if strat != CONTROL and len(ctrl):
                e = difference(_num(part, "test/mrr"), _num(ctrl, "test/mrr"))
                r["diff"] = e.text()
                if strat not in PAPER_STRATEGIES:        # fixed, full: compared, not the paper's claim
                    rows.append(r)
                    continue
                c = claim(f"{strat} batches give a higher test MRR than shuffle{f' ({lab})' if lab else ''}", e,
                          "shuffle (Welch over seeds)", above=0.0)
                r["verdict"] = c.verdict
                claims.append(c)
            rows.append(r)
    return rows, claims


def kd_rows(ok: pd.DataFrame) -> tuple[list[dict], list[Claim]]:
    """Per width and distillation weight α < 1: test MRR against the α = 1 (hard-label) students of the same
    seeds (same initialisation and batches: paired t over seeds), a claim each."""
    rows, claims = [], []
    if ALPHA not in ok.columns or WIDTH not in ok.columns or not (_num(ok, ALPHA) == 1.0).any():
        return rows, claims
    a, w = _num(ok, ALPHA), _num(ok, WIDTH)
    for alpha in sorted(set(a[np.isfinite(a)]) - {1.0}):
        for width in sorted(set(w[np.isfinite(w)])):
            kd = ok[(a == alpha) & (w == width)].groupby("seed")["test/mrr"].mean()
            hard = ok[(a == 1.0) & (w == width)].groupby("seed")["test/mrr"].mean()
            seeds = sorted(set(kd.index) & set(hard.index))
            if not seeds:
                continue
            e = difference(kd[seeds].to_numpy(float), hard[seeds].to_numpy(float), paired=True)
            c = claim(f"distilled students (α={num(alpha)}) retrieve better than hard-label students at width "
                      f"{num(width)}", e, "α=1 students of the same seeds (paired)", above=0.0)
            claims.append(c)
            rows.append({"alpha": alpha, "width": width, "kd": float(kd[seeds].mean()),
                         "hard": float(hard[seeds].mean()), "d": e.text(), "verdict": c.verdict})
    return rows, claims


def _groups(ok: pd.DataFrame, cols: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per value combination of `cols`, in numeric-aware order."""
    if not cols:
        return [("", ok)]
    keys = ok[cols].apply(lambda r: tuple(value_key(v) for v in r), axis=1)
    out = []
    for key in sorted(set(keys)):
        sub = ok[keys == key]
        out.append((label(cols, [sub.iloc[0][c] for c in cols]), sub))
    return out


def plot_widths(curves: list[tuple[str, dict]], title: str, keep: float) -> Figure:
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for k, (lab, c) in enumerate(curves):
        ax.errorbar(c["widths"], c["ratio"].mean(0), yerr=c["ratio"].std(0, ddof=1) if len(c["ratio"]) > 1 else None,
                    fmt="-o", ms=3, color=f"C{k % 10}", label=lab or "students")
    ax.axhline(keep, color="k", ls="--", lw=0.8, label=f"{keep:g} of the teacher")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("student width")
    ax.set_ylabel("test MRR / teacher MRR")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return fig


ENCODERS = {"mlp": "hashed-word `mlp`", "hf_causal_lm": "Hugging Face causal LM (last-token hidden state)"}


def feature_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *, n_boot: int = 1000, seed: int = 0,
                    figure_name: str = "feature_retrieval.png") -> Section:
    """Markdown, claims and the width figure for one feature-retrieval sweep (pretrain, teacher or students);
    n_boot and seed are the report's shared signature (this section's intervals are t-intervals)."""
    if "test/mrr" not in runs.columns:
        return Section(f"{FLAG} feature_retrieval report skipped: no `test/mrr` column on the rows.\n")
    ok = runs[runs["status"].astype(str) == "ok"] if "status" in runs.columns else runs
    if ok.empty:
        return Section(f"{FLAG} feature_retrieval report skipped: no run finished ok.\n")
    keep = float(meta.theory.get("keep", KEEP))
    axes = list(meta.curve_by) or hidden_axes(ok, [], set())
    distill = "distill/mrr_ratio" in ok.columns and np.isfinite(_num(ok, "distill/mrr_ratio")).any()
    names = set(ok["model.name"].astype(str)) if "model.name" in ok.columns else {"mlp"}
    encoder = " and ".join(sorted(ENCODERS.get(n, f"`{n}`") for n in names))
    md = [f"ANALOGUE of mobile-feature retrieval (papers.md §10): a generated catalogue, {encoder} bi-encoder, "
          "TF-IDF as the term-frequency baseline; means over seeds (status ok).", ""]
    claims: list[Claim] = []
    krows = []
    for lab, sub in _groups(ok, axes):
        rows = kind_rows(sub)
        krows += [{**r, "curve": lab, "d": r["effect"].text()} for r in rows]
        if not distill:                # the paper's comparison is the relevance model's (students: table only)
            claims += kind_claims(rows, lab or meta.sweep)
    md += ["### Query kinds against TF-IDF (test MRR; Δ with paired 95% t-interval over seeds)", "",
           table(krows, [("curve", "curve"), ("kind", "kind"), ("model", "bi-encoder MRR"), ("tfidf", "TF-IDF MRR"),
                         ("d", "Δ MRR"), ("model_top1", "bi-encoder top-1"), ("tfidf_top1", "TF-IDF top-1")]), ""]
    srows, sclaims = strategy_rows(ok, [c for c in axes if c != STRATEGY])
    if srows:
        claims += sclaims
        md += ["### Batch selection (test MRR against shuffle, Welch 95% t-interval)", "",
               table(srows, [("curve", "curve"), ("strategy", "strategy"), ("n", "seeds"), ("mrr", "test MRR"),
                             ("ctx", "contextual MRR"), ("diff", "Δ vs shuffle"), ("verdict", "verdict"),
                             ("forwards", "pair-forwards")]), ""]
    figures = []
    if distill:
        plotted, wrows = [], []
        for lab, sub in _groups(ok, [c for c in axes if c != WIDTH]):
            c = width_curve(sub, keep)
            if c is None:
                continue
            plotted.append((lab, c))
            cl = width_claim(c, keep, lab or meta.sweep)
            claims.append(cl)
            wrows.append({"curve": lab, "teacher": f"{num(c['teacher_mrr'])} (width {num(c['teacher_width'])})",
                          "per": "; ".join(f"{num(p['width'])}: {num(p['mrr'])} / {p['effect'].text()}"
                                           for p in c["per_width"]),
                          "wstar": c["effect"].text(), "censored": int(np.isnan(c["wstar"]).sum()),
                          "verdict": cl.verdict})
        if plotted:
            figures.append(save_figure(plot_widths(plotted, f"{meta.sweep}: students against the teacher", keep),
                                       outdir / figure_name))
            md += [f"### Distillation: width keeping {keep:g} of the teacher's MRR", "",
                   "Per width: student test MRR / ratio to the teacher with its 95% t-interval. w*: geometric mean "
                   "over seeds with the t-interval of mean log2 w* (per seed: first width reaching the ratio, "
                   "log-linear between ladder widths).", "",
                   table(wrows, [("curve", "curve"), ("teacher", "teacher MRR"), ("per", "width: MRR / ratio"),
                                 ("wstar", "w*"), ("censored", "seeds censored"), ("verdict", "verdict")]), "",
                   f"![students against the teacher]({figures[0].name})", ""]
    if distill:
        rows, kclaims = kd_rows(ok)
        if rows:
            claims += kclaims
            md += ["### Distillation against the hard-label control (test MRR; Δ paired over seeds)", "",
                   table(rows, [("alpha", "α"), ("width", "width"), ("kd", "distilled MRR"),
                                ("hard", "hard-label MRR (α=1)"), ("d", "Δ"), ("verdict", "verdict")]), ""]
    md += ["### Does the paper's effect show?", ""]
    md += [f"- {c.line()}" for c in claims] or ["_(no claim could be computed)_"]
    md += ["", f"Intervals: {METHOD}.", ""]
    return Section("\n".join(md), claims=[c.record(sweep=meta.sweep) for c in claims], figures=figures)
