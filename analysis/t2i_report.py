"""The report section of the text-to-image in-context-learning ANALOGUE (`report.kind: t2i_icl`; CoBSAT, Zeng et
al. 2024, papers.md §8; task `ftcore.tasks.t2i_icl`): accuracy vs the number k of demonstrations per arm, and
computed statements (DESIGN.md §8) on the paper's effects — does accuracy rise with k, does chain-of-thought help,
does fine-tuning on T2I-ICL data help — and, on a Hugging Face backbone, does its pretraining help.

Rows carry `t2i/acc/kNN` (the fixed classifier reads both the query's named attribute and the latent θ in the
generated image), `t2i/named/kNN`, `t2i/latent/kNN`, with cot `cot/acc/kNN`, and `before/t2i/acc/kNN` (step 0).
Curves: the values of `report.curve_by` (varying config columns it omits are added and flagged). Per curve and k
the mean over seeds with its Student-t 95% interval (`analysis.verdict.mean_effect`). With a_s(k) the accuracy of
seed s, K the largest k, k_lo = report.theory.k_low (default 2: CoBSAT's N ∈ {2, 4, 6, 8}; clipped to 1 … K−1)
and ā_s = mean_{k_lo ≤ k ≤ K} a_s(k) (CoBSAT's average over N):

    infers θ in context   Δ = mean_s (latent_s(K) − latent_s(0)), paired    shows iff CI above 0
                          (control: the same model at k = 0, where θ cannot be known: chance 1/n_latent)
    rises with k          Δ = mean_s (a_s(K) − a_s(k_lo)), paired          shows iff CI above 0
    CoT helps             Δ = mean(ā | task.cot = true) − mean(ā | task.cot = false) for curves agreeing on the
                          other curve columns; paired by seed when both arms ran the same seeds, else Welch;
                          shows iff CI above 0
    pretraining helps     likewise model.weights = pretrained vs random (`hf_backbone`: the same architecture
                          with freshly initialised weights)
    fine-tuning helps     rows with `model.from.run_id` (a fine-tuned base): Δ = mean_s (ā_s − ā_s^before),
                          paired (control: the same base before fine-tuning, step 0); shows iff CI above 0

Fewer than 2 seeds: no interval, "does not show". A curve whose accuracy at k_lo is already >= CEILING (0.99) is
flagged: "rises with k" cannot show there, and the report says why.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.atomic import save_figure
from analysis.markdown import FLAG, Section, interval, num, table
from analysis.meta import SweepMeta, canon, hidden_axes, label, value_key
from analysis.verdict import SHOWS, Claim, claim, claims_markdown, difference, mean_effect

ACC = re.compile(r"^t2i/acc/k(?P<k>\d+)$")
K_LOW = 2
FROM = "model.from.run_id"
COT = "task.cot"


def k_columns(runs: pd.DataFrame, prefix: str = "t2i/acc") -> dict[int, str]:
    """{k: '<prefix>/kNN'} for the k present on the rows."""
    pat = re.compile(rf"^{re.escape(prefix)}/k(?P<k>\d+)$")
    return dict(sorted((int(m["k"]), c) for c in runs.columns if (m := pat.match(str(c)))))


def matrix(sub: pd.DataFrame, cols: dict[int, str]) -> np.ndarray:
    """(S, K+1) values of the k columns, one row per run (NaN where missing)."""
    return np.stack([pd.to_numeric(sub[c], errors="coerce").to_numpy(float) for c in cols.values()], 1)


def k_low(theory: dict, K: int) -> int:
    return int(min(max(int(theory.get("k_low", K_LOW)), 1), max(K - 1, 1)))


def window_mean(m: np.ndarray, ks: list[int], lo: int) -> np.ndarray:
    """Per run the mean over k_lo ≤ k ≤ K (CoBSAT's average over N)."""
    sel = [i for i, k in enumerate(ks) if k >= lo]
    return m[:, sel].mean(1)


def curve_claims(acc: np.ndarray, latent: np.ndarray, ks: list[int], lo: int, curve: str = "") -> dict[str, Claim]:
    """The per-curve statements: acc, latent (S, K+1) over `ks` (ascending, starting at 0)."""
    i_lo, K = ks.index(lo), len(ks) - 1
    same, tag = "the same model and seeds at", f"`{curve}`: " if curve else ""
    return {"in_context": claim(f"{tag}the latent attribute is inferred from the demonstrations (latent accuracy "
                                f"at k = {ks[K]} above k = 0)", mean_effect(latent[:, K] - latent[:, 0]),
                                f"{same} k = 0 (θ unknowable: chance)", above=0),
            "rises_with_k": claim(f"{tag}accuracy rises with k (k = {ks[K]} vs k = {lo})",
                                  mean_effect(acc[:, K] - acc[:, i_lo]), f"{same} k = {lo}", above=0)}


CEILING = 0.99       # a curve at or above this accuracy at k_lo has no room to rise: the report says so


def seeds_of(sub: pd.DataFrame) -> list:
    return sub["seed"].tolist() if "seed" in sub.columns else list(range(len(sub)))


ARMS = {   # claim -> (column, treated value, control value, statement, the control's name)
    "cot": (COT, "true", "false", "chain-of-thought helps", "the same arm without CoT"),
    "pretrained": ("model.weights", "pretrained", "random", "the pretrained backbone helps",
                   "the same architecture with random weights"),
}


def arm_claims(groups: list[dict], cols: list[str], name: str) -> list[dict]:
    """Treated vs control arm (ARMS[name]) for every pair of curves agreeing on the other curve columns: the
    difference of the per-seed window means, paired by seed when both ran the same seeds, else Welch."""
    column, treated, control, text, control_text = ARMS[name]
    if column not in cols:
        return []
    rest = [c for c in cols if c != column]
    out = []
    for g in groups:
        if canon(g["values"][column]) != treated:
            continue
        for h in groups:
            if canon(h["values"][column]) != control or any(canon(h["values"][c]) != canon(g["values"][c])
                                                            for c in rest):
                continue
            a, b = g["window"], h["window"]
            sa, sb = g["seeds"], h["seeds"]
            paired = sorted(sa) == sorted(sb) and len(set(sa)) == len(sa)
            if paired:
                b = np.array([b[sb.index(s)] for s in sa])
            eff = difference(a, b, paired=paired)
            c = claim(f"{text} ({label(rest, [g['values'][c] for c in rest]) or 'all'})", eff,
                      f"{control_text} ({'paired' if paired else 'Welch'} over seeds)", above=0)
            out.append({"curve": g["label"], "control": h["label"], "claim": c, "name": name})
    return out


def plot(curves: list[dict], chance: float, path: Path) -> Path:
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for i, c in enumerate(curves):
        color = f"C{i % 10}"
        ks = np.array(c["ks"])
        ax.plot(ks, c["mean"], "-o", ms=3, color=color, label=c["label"])
        ax.fill_between(ks, c["lo"], c["hi"], color=color, alpha=0.15)
        if c.get("before") is not None:
            ax.plot(ks, c["before"], "--", color=color, alpha=0.7, label=f"{c['label']} (before)")
    if np.isfinite(chance):
        ax.axhline(chance, color="grey", ls=":", lw=1, label="θ chance (1/n_latent)")
    ax.set_xlabel("demonstrations k")
    ax.set_ylabel("accuracy (named and latent attribute)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=6)
    ax.set_title("T2I-ICL analogue: accuracy vs k (95% t-interval over seeds)", fontsize=9)
    return save_figure(fig, path)


def t2i_section(runs: pd.DataFrame, meta: SweepMeta, outdir: Path, *, n_boot: int = 1000, seed: int = 0,
                figure_name: str = "t2i_icl.png") -> Section:
    """Markdown, claims and the figure for one t2i_icl sweep (n_boot, seed: the shared signature; the intervals
    here are t-intervals)."""
    ok = runs[runs["status"].astype(str) == "ok"] if "status" in runs.columns else runs
    acc_cols = k_columns(ok)
    lat_cols, named_cols = k_columns(ok, "t2i/latent"), k_columns(ok, "t2i/named")
    if ok.empty or not acc_cols or 0 not in acc_cols or len(acc_cols) < 2 or set(lat_cols) != set(acc_cols):
        return Section(f"{FLAG} t2i_icl report skipped: no finished run with `t2i/acc/kNN` and `t2i/latent/kNN` "
                       "columns from k = 0 on.\n")
    ks = list(acc_cols)
    lo = k_low(meta.theory, ks[-1])
    cols = list(meta.curve_by)
    hidden = hidden_axes(ok, cols, set())
    cols += hidden
    keys = ok[cols].apply(lambda r: tuple(canon(v) for v in r), axis=1) if cols else pd.Series([()] * len(ok),
                                                                                               index=ok.index)
    groups, claim_recs, rows, plotted = [], [], [], []
    for key in sorted(keys.unique(), key=lambda t: tuple(value_key(v) for v in t)):
        sub = ok[keys == key]
        acc, lat = matrix(sub, acc_cols), matrix(sub, lat_cols)
        keep = np.isfinite(acc).all(1) & np.isfinite(lat).all(1)
        sub, acc, lat = sub[keep], acc[keep], lat[keep]
        if not len(sub):
            continue
        values = {c: sub.iloc[0][c] for c in cols}
        lab = ",".join(f"{c}={canon(v)}" for c, v in values.items() if canon(v) != "na") or "all"   # full: no rank
        effects = [mean_effect(acc[:, i]) for i in range(len(ks))]
        g = {"label": lab, "values": values, "seeds": seeds_of(sub), "window": window_mean(acc, ks, lo),
             "ks": ks, "mean": [e.estimate for e in effects], "lo": [e.lo for e in effects],
             "hi": [e.hi for e in effects], "before": None}
        cl = curve_claims(acc, lat, ks, lo, lab)
        tuned = FROM in sub.columns and sub[FROM].map(lambda v: canon(v) not in ("na", "")).all()
        bcols = k_columns(sub, "before/t2i/acc")
        if tuned and list(bcols) == ks:
            before = matrix(sub, bcols)
            g["before"] = before.mean(0)
            cl["finetune"] = claim(f"`{lab}`: fine-tuning on T2I-ICL data helps (mean accuracy over k ≥ "
                                   f"{lo}, after vs before)", mean_effect(g["window"] - window_mean(before, ks, lo)),
                                   "the same base before fine-tuning (step 0, paired seeds)", above=0)
        groups.append(g)
        plotted.append(g)
        claim_recs += [c.record(curve=lab, claim=name) for name, c in cl.items()]
        named = matrix(sub, named_cols)[:, -1] if named_cols else np.full(len(sub), np.nan)
        cot_col = f"cot/acc/k{ks[-1]:02d}"
        cot_acc = pd.to_numeric(sub[cot_col], errors="coerce").mean() if cot_col in sub.columns else np.nan
        rows.append({"curve": lab, "n": len(sub), **{f"k{k}": f"{num(e.estimate)} {interval(e.lo, e.hi)}"
                                                        for k, e in zip(ks, effects)},
                     "named": float(np.nanmean(named)), "latent": float(lat[:, -1].mean()), "cot": cot_acc,
                     "window": num(g["window"].mean()),
                     "before": num(window_mean(before, ks, lo).mean()) if g["before"] is not None else "—",
                     "ceiling": bool(acc[:, ks.index(lo)].mean() >= CEILING), "claims": cl})
    if not rows:
        return Section(f"{FLAG} t2i_icl report skipped: no run has every k of accuracy and latent accuracy.\n")
    arms = {name: arm_claims(groups, cols, name) for name in ARMS}
    claim_recs += [c["claim"].record(curve=c["curve"], claim=c["name"], control_curve=c["control"])
                   for pairs in arms.values() for c in pairs]
    chance = float(pd.to_numeric(ok.get("t2i/chance", pd.Series([np.nan])), errors="coerce").mean())
    fig = plot(plotted, chance, outdir / figure_name)
    md = ["ANALOGUE of CoBSAT (Zeng et al. 2024): procedural images, a sequence model (trained here, or a Hugging "
          "Face transformer stack between trained read-in/read-out) emits the query's image, a fixed checked linear "
          "classifier scores it. Accuracy = both the named attribute and "
          f"the latent θ read correctly; k = 0 is the chance control for θ (1/n_latent = {num(chance)}). "
          "Mean over seeds [95% Student-t interval], status ok.", ""]
    if hidden:
        md += [f"{FLAG} columns not in report.curve_by vary: {', '.join(hidden)}; added to the curve labels.", ""]
    md += [table(rows, [("curve", "curve"), ("n", "seeds")] + [(f"k{k}", f"k={k}") for k in ks]
                 + [("named", f"named @k={ks[-1]}"), ("latent", f"θ @k={ks[-1]}"), ("cot", f"CoT word @k={ks[-1]}"),
                    ("window", f"mean k≥{lo}"), ("before", f"before: mean k≥{lo}")]),
           "", f"![accuracy vs k]({fig.name})", "", "### Claims (DESIGN.md §8)", ""]
    all_claims = [c for r in rows for c in r["claims"].values()] + [c["claim"] for p in arms.values() for c in p]
    md.append(claims_markdown(all_claims))
    at_ceiling = [r["curve"] for r in rows if r["ceiling"]]
    if at_ceiling:
        md += [f"{FLAG} at ceiling (accuracy ≥ {CEILING} at k = {lo}: no room to rise with k): "
               + ", ".join(f"`{c}`" for c in at_ceiling) + ".", ""]
    for name, text in (("rises_with_k", "Accuracy rises with k"), ("finetune", "Fine-tuning helps")):
        hits = [r["curve"] for r in rows if name in r["claims"] and r["claims"][name].verdict == SHOWS]
        if any(name in r["claims"] for r in rows):
            md.append(f"* {text}: **{'shows' if hits else 'does not show'}**"
                      + (f" for {', '.join(f'`{h}`' for h in hits)}." if hits else " for any curve."))
    for name, pairs in arms.items():
        hits = [c["curve"] for c in pairs if c["claim"].shows]
        if pairs:
            md.append(f"* {ARMS[name][3].capitalize()}: **{'shows' if hits else 'does not show'}**"
                      + (f" for {', '.join(f'`{h}`' for h in hits)}." if hits else " for any arm."))
    return Section("\n".join(md) + "\n", [], [fig], claim_recs)
