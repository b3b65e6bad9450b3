"""The report section of the criterion-clustering sweep (`report.kind: criterion_clustering`): an ANALOGUE of IC|TC
(Kwon et al., ICLR 2024, "Image Clustering Conditioned on Text Criteria"; papers.md §9) — clusters formed from a
small captioner's words under a text criterion, against criterion-blind k-means on pixels and on a generic encoder.

Rows (`ftcore.tasks.criterion_clustering`) carry, per criterion c, `acc/<c>` (ours), `base_pixels/acc/<c>`,
`base_encoder/acc/<c>` (Hungarian accuracy against c's ground truth, K_c clusters), the `nmi/` twins and `k/<c>`.
Cells: panels by `report.panel_by` (default task.n_clusters, K), x = `report.x` (default model.width, the
captioner's capacity). Ours and a baseline come from the same member (same seed, same evaluation images), so each
comparison is paired: for seeds s = 1..S at width w,

    Δ_b(c, w) = mean_s (acc_s(c) − base_b,s(c)),   95% CI: the paired Student-t interval (analysis.verdict)

Verdicts (analysis.verdict.Claim), per panel, criterion and width:
    "clustering by the text criterion beats <b> on c"   shows iff CI(Δ_b) lies above 0
    beats criterion-blind clustering on c at w         shows iff it shows against both baselines
and per panel and criterion: the paper's effect (text-criterion clustering beats criterion-blind clustering on the
criterion) shows iff it shows at the largest width; "starts to show at" = the smallest width from which it shows
at every larger width too (none when it does not show at the largest). Fewer than 2 seeds: no CI, never "shows".
Descriptive: per baseline, the criterion its clusters agree with most (highest NMI), the attribute it clusters by.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.atomic import save_figure
from analysis.markdown import FLAG, Section, num, table
from analysis.meta import SweepMeta, canon, hidden_axes, label, value_key
from analysis.verdict import NOT, SHOWS, Claim, all_show, claim, difference

OURS = "acc"
BASELINES = {"base_pixels": "k-means on pixels", "base_encoder": "k-means on the criterion-blind encoder"}
DEFAULT_X, DEFAULT_PANEL = "model.width", "task.n_clusters"
CRITERION = re.compile(r"^acc/(?P<c>[^/]+)$")


def criteria(runs: pd.DataFrame) -> list[str]:
    """Criteria with ours and both baselines' accuracy columns, in column order ('mean' excluded)."""
    out = []
    for col in runs.columns:
        m = CRITERION.match(str(col))
        if m and m["c"] != "mean" and all(f"{b}/acc/{m['c']}" in runs.columns for b in BASELINES):
            out.append(m["c"])
    return out


def _values(df: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(df[col], errors="coerce").to_numpy(float) if col in df.columns else np.full(len(df), np.nan)


def width_claims(cell: pd.DataFrame, c: str) -> dict[str, Claim]:
    """{baseline: claim "ours beats it on c"} for one cell's rows (one row per seed, paired)."""
    ours = _values(cell, f"{OURS}/{c}")
    return {b: claim(f"clustering by the text criterion beats {what} on {c}",
                     difference(ours, _values(cell, f"{b}/acc/{c}"), paired=True), f"{what} (paired seeds)", above=0)
            for b, what in BASELINES.items()}


def onset(shows_by_x: list[tuple[float, bool]]) -> float | None:
    """The smallest x from which the verdict shows at every larger x ([(x, shows)] sorted by x); None if the
    largest does not show."""
    start = None
    for x, shows in reversed(shows_by_x):
        if not shows:
            break
        start = x
    return start


def _groups(df: pd.DataFrame, cols: list[str]) -> list[tuple[str, pd.DataFrame]]:
    if not cols:
        return [("all", df)]
    keys = df[cols].apply(lambda r: tuple(value_key(v) for v in r), axis=1)
    return [(label(cols, [df.loc[keys == k].iloc[0][c] for c in cols]), df[keys == k]) for k in sorted(keys.unique())]


def analyse(ok: pd.DataFrame, x: str, panels: list[str], crit: list[str]) -> tuple[list[dict], list[dict], list]:
    """-> (rows per panel/criterion/width, verdict per panel/criterion, claim records)."""
    cells, summary, records = [], [], []
    for plab, pdf in _groups(ok, panels):
        xs = sorted(pdf[x].dropna().unique(), key=value_key)
        if not xs:
            continue
        for c in crit:
            by_x = []
            for xv in xs:
                sub = pdf[pdf[x] == xv]
                cl = width_claims(sub, c)
                both = all_show(f"beats criterion-blind clustering on {c}", list(cl.values()))
                by_x.append((xv, both == SHOWS))
                records += [k.record(panel=plab, criterion=c, x=canon(xv), baseline=b) for b, k in cl.items()]
                row = {"panel": plab, "criterion": c, "x": xv, "n": len(sub), "k": np.nanmean(_values(sub, f"k/{c}")),
                       "ours": np.nanmean(_values(sub, f"{OURS}/{c}")), "nmi": np.nanmean(_values(sub, f"nmi/{c}")),
                       "caption": np.nanmean(_values(sub, f"caption_acc/{c}")), "both": both}
                for b, k in cl.items():
                    row |= {b: np.nanmean(_values(sub, f"{b}/acc/{c}")), f"{b}_nmi": np.nanmean(_values(sub, f"{b}/nmi/{c}")),
                            f"d_{b}": k.effect.text()}
                cells.append(row)
            start = onset(by_x)
            summary.append({"panel": plab, "criterion": c, "k": cells[-1]["k"], "x_max": xs[-1],
                            "verdict": SHOWS if by_x[-1][1] else NOT, "onset": start,
                            "ours": cells[-1]["ours"], **{b: cells[-1][b] for b in BASELINES},
                            **{f"d_{b}": cells[-1][f"d_{b}"] for b in BASELINES}})
    return cells, summary, records


def plot(cells: list[dict], x: str, title: str) -> Figure:
    """Accuracy vs x per criterion and panel: ours solid, encoder baseline dashed, pixel baseline dotted."""
    panels = list(dict.fromkeys(r["panel"] for r in cells))
    fig = Figure(figsize=(4.2 * len(panels), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    for ax, p in zip(axes, panels):
        rows = [r for r in cells if r["panel"] == p]
        for k, c in enumerate(dict.fromkeys(r["criterion"] for r in rows)):
            rc = [r for r in rows if r["criterion"] == c]
            xs = [float(r["x"]) for r in rc]
            ax.plot(xs, [r["ours"] for r in rc], "-o", color=f"C{k}", ms=3, label=c)
            ax.plot(xs, [r["base_encoder"] for r in rc], "--", color=f"C{k}", alpha=0.7)
            ax.plot(xs, [r["base_pixels"] for r in rc], ":", color=f"C{k}", alpha=0.7)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(x)
        ax.set_ylabel("Hungarian accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title(p, fontsize=8)
        ax.legend(fontsize=6, title="ours —, encoder --, pixels ··", title_fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def most_agreed(ok: pd.DataFrame, panels: list[str], x: str, crit: list[str]) -> list[str]:
    """Per panel and baseline at the largest x: the criterion whose truth its clusters share most NMI with."""
    out = []
    for plab, pdf in _groups(ok, panels):
        top = pdf[pdf[x] == max(pdf[x].dropna().unique(), key=value_key)]
        for b, what in BASELINES.items():
            nmis = {c: float(np.nanmean(_values(top, f"{b}/nmi/{c}"))) for c in crit}
            nmis = {c: v for c, v in nmis.items() if np.isfinite(v)}
            if nmis:
                c = max(nmis, key=nmis.get)
                out.append(f"* `{plab}`: {what} agrees most with **{c}** (NMI {num(nmis[c])}; "
                           + ", ".join(f"{k} {num(v)}" for k, v in nmis.items() if k != c) + ")")
    return out


def clustering_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *, n_boot: int = 1000, seed: int = 0,
                       figure_name: str = "criterion_clustering.png") -> Section:
    """Markdown, claims and the figure for one criterion-clustering sweep (n_boot, seed: the reports' shared
    signature; this section's intervals are paired t-intervals)."""
    crit = criteria(runs)
    if not crit:
        return Section(f"{FLAG} criterion-clustering report skipped: no `acc/<criterion>` columns with their "
                       f"`base_pixels/` and `base_encoder/` twins.\n")
    x = meta.x or DEFAULT_X
    if x not in runs.columns:
        return Section(f"{FLAG} criterion-clustering report skipped: no `{x}` column (report.x).\n")
    ok = runs[runs["status"].astype(str) == "ok"] if "status" in runs.columns else runs
    if ok.empty:
        return Section(f"{FLAG} criterion-clustering report skipped: no run finished ok.\n")
    panels = list(meta.panel_by) or ([DEFAULT_PANEL] if DEFAULT_PANEL in ok.columns else [])
    hidden = hidden_axes(ok, [x, *panels], set())
    panels += hidden
    cells, summary, records = analyse(ok, x, panels, crit)
    fig = save_figure(plot(cells, x, f"{meta.sweep}: clustering accuracy by criterion (ANALOGUE of IC|TC)"),
                      outdir / figure_name)
    vlm = "model.name" in ok.columns and set(ok["model.name"].astype(str)) == {"hf_vlm"}
    who = ("a pretrained Hugging Face vision-language model (train.steps 0: zero-shot; more: LoRA on generated "
           "captions) scores the caption words as its answer to the criterion's question for each image"
           if vlm else "a small captioner trained from scratch on generated captions describes each image under a "
           "text criterion")
    encoder = "the model's pooled image tokens" if vlm else "the same network's describe-everything features"
    md = [f"ANALOGUE of IC|TC (Kwon et al., ICLR 2024): {who}; clusters = its words (the K most frequent become the "
          "cluster names); scored by Hungarian accuracy against the criterion's truth, next to criterion-blind k-means "
          f"on pixels and on {encoder}. Mean over seeds (status ok); Δ = ours − baseline with the paired Student-t "
          "95% CI.", ""]
    if hidden:
        md += [f"{FLAG} columns not in report.panel_by vary: {', '.join(hidden)}; added to the panel labels.", ""]
    md += [table([{**r, "xv": canon(r["x"])} for r in cells],
                 [("panel", "panel"), ("criterion", "criterion"), ("k", "K"), ("xv", x), ("n", "seeds"),
                  ("ours", "ours acc"), ("nmi", "ours NMI"), ("caption", "caption acc"),
                  ("base_pixels", "pixels acc"), ("base_encoder", "encoder acc"), ("d_base_pixels", "Δ vs pixels"),
                  ("d_base_encoder", "Δ vs encoder"), ("both", "beats both")]),
           "", f"![clustering accuracy]({fig.name})", "", "### Does the paper's effect show?", "",
           "Claim: text-criterion clustering beats criterion-blind clustering on the criterion (CI of Δ above 0 "
           f"against both baselines at the largest {x}); onset = the smallest {x} from which it shows at every "
           "larger one.", "",
           table([{**r, "on": canon(r["onset"]) if r["onset"] is not None else "—", "xm": canon(r["x_max"])}
                  for r in summary],
                 [("panel", "panel"), ("criterion", "criterion"), ("k", "K"), ("xm", f"largest {x}"),
                  ("ours", "ours"), ("base_pixels", "pixels"), ("base_encoder", "encoder"),
                  ("d_base_pixels", "Δ vs pixels"), ("d_base_encoder", "Δ vs encoder"), ("verdict", "verdict"),
                  ("on", "shows from")]), ""]
    shows = [f"{r['criterion']} ({r['panel']})" for r in summary if r["verdict"] == SHOWS]
    md += [f"The effect shows for {len(shows)} of {len(summary)} criterion cells: {', '.join(shows) or 'none'}.", "",
           f"What the criterion-blind baselines cluster by (largest {x}; NMI of each criterion's own K-means run "
           "against that criterion's truth):", "", *most_agreed(ok, panels, x, crit), ""]
    return Section("\n".join(md) + "\n", [], [fig], records)
