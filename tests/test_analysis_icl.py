"""analysis.icl_report on a synthetic in-context sweep read back from Parquet: per-model error-vs-k curves
(mean over seeds with a bootstrap band), baselines pooled, the table at k ∈ {0, d/2, d−1, d, 2d, K−1}, the PNG."""
import re

import numpy as np
import pandas as pd
from matplotlib.image import imread

from analysis import write_report
from analysis.icl_report import comparison, curves, nse_columns, shape
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


def test_comparison_ratios_at_k():
    runs = icl_runs()
    rows, sentence = comparison(runs, curves(runs, ["model.name"], n_boot=50), ["model.name"], D // 2)
    by = {r["curve"]: r for r in rows}
    assert by["model.name=good"]["err_ratio"] == "1" and by["model.name=bad"]["param_ratio"] == "0.25"
    assert abs(float(by["model.name=bad"]["err_ratio"]) - 2) < 0.05         # 1 vs 1 − 2/4
    assert sentence.startswith("At k = 2, model.name=good has the lowest error; model.name=bad's is 2")
    assert sentence.endswith("with 0.25× the parameters.")


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
    assert re.search(r"At k = 8, model.name=\w+ has the lowest error", md)
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
    by = {c: sub for c, sub in tab.groupby("curve")}
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
