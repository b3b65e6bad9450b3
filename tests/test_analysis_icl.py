"""analysis.icl_report on a synthetic in-context sweep read back from Parquet: per-model error-vs-k curves
(mean over seeds with a bootstrap band), baselines pooled, the table at k ∈ {0, d/2, d−1, d, 2d, K−1}, the PNG."""
import json
import re

import numpy as np
import pandas as pd
from matplotlib.image import imread

from analysis import write_report
from analysis.icl_report import (
    comparison,
    comparison_claims,
    control_of,
    curves,
    learn_claims,
    loop_claims,
    nse_columns,
    shape,
)
from analysis.synthetic import write_parts

D, K, SEEDS = 4, 10, 5


def icl_runs(rng=0) -> pd.DataFrame:
    """Two models: 'good' tracks least squares (error 1 − k/d, 0 after d), 'bad' stays at 1; noise 0.01."""
    g, rows = np.random.default_rng(rng), []
    ls = [max(0.0, 1 - k / D) for k in range(K)]
    for model, curve in (("good", ls), ("bad", [1.0] * K)):
        for s in range(SEEDS):
            row = {"run_id": f"{model}{s}", "sweep": "syn_icl", "status": "ok", "seed": s, "model.name": model,
                   "task.dim": D, "report.kind": "icl_curve", "report.curve_by": "model.name", "search.kind": "grid",
                   "n_trainable": 4000 if model == "good" else 1000}
            for k in range(K):
                row[f"nse/model/k{k:02d}"] = curve[k] + g.normal(0, 0.01)
                row[f"nse/least_squares/k{k:02d}"] = ls[k]
            rows.append(row)
    return pd.DataFrame(rows)


def test_comparison_ratios_at_k_descriptive():
    runs = icl_runs()
    rows, sentence = comparison(runs, curves(runs, ["model.name"], n_boot=50), ["model.name"], D // 2)
    by = {r["curve"]: r for r in rows}
    assert by["model.name=good"]["err_ratio"] == "—" and by["model.name=bad"]["param_ratio"].startswith("0.25×")
    assert abs(float(by["model.name=bad"]["err_ratio"].split("×")[0]) - 2) < 0.05         # 1 vs 1 − 2/4
    assert sentence == "At k = 2, model.name=good has the lowest error."


def looped_runs(err_ratio: float, loop_ratio: float = 1.0, params=(50_000, 600_000), seeds=SEEDS, rng=0):
    """A looped curve and a standard control: nse at k = 2d is err_ratio × the control's (5% seed noise);
    the looped model also reports model_b (its error at b loops) = its error / loop_ratio."""
    g, rows = np.random.default_rng(rng), []
    for model, p, scale in (("looped_transformer", params[0], err_ratio), ("transformer", params[1], 1.0)):
        for s in range(seeds):
            row = {"run_id": f"{model}{s}", "sweep": "syn_loop", "status": "ok", "seed": s, "model.name": model,
                   "task.dim": D, "report.kind": "icl_curve", "report.curve_by": "model.name",
                   "report.select": "model.name=transformer", "search.kind": "grid", "n_trainable": p,
                   "report.theory": json.dumps({"param_ratio_below": 0.1})}
            for k in range(2 * D + 1):
                v = (1.0 if k == 0 else 0.2 * scale) * np.exp(g.normal(0, 0.05))     # no context: error 1
                row[f"nse/model/k{k:02d}"] = v
                if model == "looped_transformer":
                    row[f"nse/model_b/k{k:02d}"] = v / loop_ratio * np.exp(g.normal(0, 0.02))
            rows.append(row)
    return pd.DataFrame(rows)


def _claims(runs):
    tab = curves(runs, ["model.name"], n_boot=20)
    _, cl = comparison_claims(runs, tab, ["model.name"], 2 * D, "model.name=transformer", {"param_ratio_below": 0.1})
    return {c.statement.split(" ")[1]: c for c in cl}, loop_claims(tab, 2 * D)


def test_looped_claims_both_ways():
    cl, loops = _claims(looped_runs(1.3))
    assert cl["has"].shows and abs(cl["has"].effect.estimate - 50 / 600) < 1e-9          # 0.083 < 0.1
    assert cl["has"].effect.lo == cl["has"].effect.hi                                       # deterministic
    assert cl["error"].shows and abs(cl["error"].effect.estimate - 1.3) < 0.1              # within [0.4, 2.5]
    assert cl["error"].control == "model.name=transformer"
    assert len(loops) == 1 and loops[0].shows                                              # b' as good as b
    cl, loops = _claims(looped_runs(4.0, loop_ratio=2.0, params=(50_000, 200_000)))
    assert not cl["has"].shows and not cl["error"].shows and not loops[0].shows
    cl, _ = _claims(looped_runs(2.4, seeds=3, rng=1))             # near the bound: the CI crosses 2.5
    assert not cl["error"].shows


def test_control_matches_other_curve_columns():
    names = ["model.name=mamba,model.n_layer=1", "model.name=mamba,model.n_layer=2",
             "model.name=transformer,model.n_layer=1", "model.name=transformer,model.n_layer=2"]
    assert control_of(names[1], names, "model.name=transformer") == names[3]
    assert control_of(names[0], names, "model.name=transformer") == names[2]
    assert control_of(names[2], names, "model.name=transformer") is None


def test_unknown_control_is_flagged(tmp_path):
    write_parts(looped_runs(1.2).assign(**{"report.select": "model.name=rnn"}), tmp_path, "runs", n_parts=1)
    md = write_report(tmp_path, n_boot=20).read_text()
    assert "report.select `model.name=rnn` matches no curve" in md


def test_report_writes_loop_and_ratio_claims(tmp_path):
    write_parts(looped_runs(1.2), tmp_path, "runs", n_parts=1)
    md = write_report(tmp_path, n_boot=50).read_text()
    assert "against the control `model.name=transformer`" in md and "(model_b)" in md
    claims = [c for c in json.loads((tmp_path / "report" / "claims.json").read_text()) if c["sweep"] == "syn_loop"]
    assert len(claims) == 5 and all(c["verdict"] == "shows" for c in claims) and claims[0]["k"] == 2 * D


def test_learn_claim_both_ways():
    tab = curves(looped_runs(1.3), ["model.name"], n_boot=20)
    assert all(c.shows for c in learn_claims(tab, 2 * D))                  # 0.26 and 0.2 of the k = 0 error
    flat = curves(looped_runs(4.5), ["model.name"], n_boot=20)             # looped: 0.9 of its k = 0 error
    got = {c.statement.split(" ")[0]: c.shows for c in learn_claims(flat, 2 * D)}
    assert got == {"model.name=looped_transformer": False, "model.name=transformer": True}


def test_curves_recover_means_and_pool_baselines():
    runs = icl_runs()
    assert set(nse_columns(runs)) == {"model", "least_squares"} and len(nse_columns(runs)["model"]) == K
    tab = curves(runs, ["model.name"], n_boot=200)
    good = tab[(tab.curve == "model.name=good")].set_index("k")
    bad = tab[(tab.curve == "model.name=bad")].set_index("k")
    ls = tab[tab.who == "least_squares"].set_index("k")
    assert len(ls) == K and (ls["n"] == 2 * SEEDS).all()                       # pooled over both models
    for k in range(K):
        assert abs(good.at[k, "mean"] - max(0, 1 - k / D)) < 0.02 and abs(bad.at[k, "mean"] - 1) < 0.02
        assert good.at[k, "lo"] <= good.at[k, "mean"] <= good.at[k, "hi"]
        assert good.at[k, "hi"] - good.at[k, "lo"] < 0.05


def test_report_section_reads_parquet(tmp_path):
    write_parts(icl_runs(), tmp_path, "runs", n_parts=2)
    md = write_report(tmp_path, n_boot=200).read_text()
    assert "## Sweep `syn_icl` (icl_curve)" in md and "⚠" not in md
    assert "| k=0 | k=2 | k=3 | k=4 | k=8 | k=9 |" in md.replace("seeds | ", "")
    line = next(ln for ln in md.splitlines() if ln.startswith("| model.name=good"))
    mean, band = line.split("|")[4].strip().split(" ", 1)                      # k = 2 = d/2: error 1 − 2/4
    assert abs(float(mean) - 0.5) < 0.02 and band.startswith("[")
    assert "Models compared at k = 8" in md
    assert "descriptive: no report.select control, no claims" in md
    assert imread(tmp_path / "report" / "syn_icl_icl_curve.png").shape[0] > 100


# -- early ascent (dual_modes, papers.md §7c) ---------------------------------------------------------------

KD = 12
ASCENT = [1.0 + 0.8 * np.sin(np.pi * k / 8) if k < 8 else 1.0 - 0.08 * (k - 8) for k in range(KD)]   # peak 1.8 at k=4
FALLING = [1.0 / (1 + k) for k in range(KD)]


def dual_runs(model_noise=0.02, seeds=SEEDS, rng=1, model_small=FALLING) -> pd.DataFrame:
    """δ axis: at δ = 0.02 the Bayes curve rises then falls and the model follows `model_small` (default:
    falling, no ascent); at δ = 0.5 both fall. Per-member Bayes values carry MC noise 0.01."""
    g, rows = np.random.default_rng(rng), []
    for delta, bayes, model in ((0.02, ASCENT, model_small), (0.5, FALLING, FALLING)):
        for s in range(seeds):
            row = {"run_id": f"d{delta}s{s}", "sweep": "syn_dual", "status": "ok", "seed": s, "model.name": "transformer",
                   "task.dim": 1, "task.delta": delta, "report.kind": "icl_curve", "report.curve_by": "task.delta",
                   "search.kind": "grid"}
            for k in range(KD):
                row[f"nse/model/k{k:02d}"] = model[k] + g.normal(0, model_noise)
                row[f"nse/bayes/k{k:02d}"] = bayes[k] + g.normal(0, 0.01)
            for k in (0, 1, 2, 4, 8, 16, 64):
                row[f"nse_long/bayes/k{k:02d}"] = (ASCENT[k] if k < KD else 0.5 / (k / 16)) + g.normal(0, 0.01)
            rows.append(row)
    return pd.DataFrame(rows)


def test_baselines_pooled_per_task_value():
    tab = curves(dual_runs(), ["task.delta"], n_boot=200)
    bayes = tab[tab.who == "bayes"]
    assert set(bayes["curve"]) == {"bayes (task.delta=0.02)", "bayes (task.delta=0.5)"}
    assert (bayes["n"] == SEEDS).all()                                          # not pooled across δ
    small = bayes[bayes.curve == "bayes (task.delta=0.02)"].set_index("k")
    assert abs(small.at[4, "mean"] - 1.8) < 0.02


def test_shape_statements():
    tab = curves(dual_runs(), ["task.delta"], n_boot=500)
    by = dict(tuple(tab.groupby("curve")))
    text, up = shape(by["bayes (task.delta=0.02)"])
    m = re.match(r"early ascent: rises from k=0 \(([\d.]+)\) to a peak at k=4 \(([\d.]+)\), then falls to k=11", text)
    assert up and m and abs(float(m[1]) - 1) < 0.02 and abs(float(m[2]) - 1.8) < 0.02, text
    text, up = shape(by["bayes (task.delta=0.5)"])
    assert not up and text.startswith("no early ascent: falls from k=0 (") and "k=11" in text, text
    # a model that has the ascent: called so with small noise, not when it is buried in noise (σ = 2 per seed)
    for noise, want in ((0.02, True), (2.0, False)):
        tab = curves(dual_runs(model_noise=noise, model_small=ASCENT), ["task.delta"], n_boot=500)
        assert shape(tab[tab.curve == "task.delta=0.02"])[1] is want, noise
    one = curves(dual_runs(seeds=1), ["task.delta"], n_boot=50)
    text, up = shape(one[one.curve == "bayes (task.delta=0.02)"])
    assert not up and "no noise estimate" in text, text


def test_shape_is_not_fooled_by_noise():
    """Selection-corrected threshold: a flat curve with noise is not called early ascent (the rule of
    non-overlapping per-k bootstrap bands called 12 of 40 such curves), a real one with the same noise is;
    a noisy curve whose largest rise is within noise says so."""
    flat = [1.0] * KD
    called = {name: sum(shape(curves(dual_runs(model_noise=0.1, model_small=curve, rng=r), ["task.delta"],
                                     n_boot=20).query("curve == 'task.delta=0.02'"))[1] for r in range(15))
              for name, curve in (("flat", flat), ("ascent", ASCENT))}
    assert called == {"flat": 0, "ascent": 15}, called
    tab = curves(dual_runs(model_noise=0.1, model_small=flat, rng=0), ["task.delta"], n_boot=20)
    text, up = shape(tab[tab.curve == "task.delta=0.02"])
    assert not up and "is within noise" in text, text


def test_report_states_ascent_and_flags_the_model(tmp_path):
    write_parts(dual_runs(), tmp_path, "runs", n_parts=2)
    md = write_report(tmp_path, n_boot=200).read_text()
    assert "- `bayes (task.delta=0.02)`: early ascent: rises from k=0" in md
    assert "- `task.delta=0.02`: no early ascent" in md
    flags = [ln for ln in md.splitlines() if ln.startswith("- ⚠")]
    assert len(flags) == 1 and "`task.delta=0.02`" in flags[0] and "does not show at this scale" in flags[0]
    assert "| k=4 |" in md                                                        # the Bayes peak is a table column
    assert "Closed-form curves past the model's context" in md and "| k=64 |" in md
