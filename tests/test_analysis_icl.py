"""analysis.icl_report on a synthetic in-context sweep read back from Parquet: per-model error-vs-k curves
(mean over seeds with a bootstrap band), baselines pooled, the table at k ∈ {0, d/2, d−1, d, 2d, K−1}, the PNG."""
import numpy as np
import pandas as pd
from matplotlib.image import imread

from analysis import write_report
from analysis.icl_report import curves, nse_columns
from analysis.synthetic import write_parts

D, K, SEEDS = 4, 10, 5


def icl_runs(rng=0) -> pd.DataFrame:
    """Two models: 'good' tracks least squares (error 1 − k/d, 0 after d), 'bad' stays at 1; noise 0.01."""
    g, rows = np.random.default_rng(rng), []
    ls = [max(0.0, 1 - k / D) for k in range(K)]
    for model, curve in (("good", ls), ("bad", [1.0] * K)):
        for s in range(SEEDS):
            row = {"run_id": f"{model}{s}", "sweep": "syn_icl", "status": "ok", "seed": s, "model.name": model,
                   "task.dim": D, "report.kind": "icl_curve", "report.curve_by": "model.name", "search.kind": "grid"}
            for k in range(K):
                row[f"nse/model/k{k:02d}"] = curve[k] + g.normal(0, 0.01)
                row[f"nse/least_squares/k{k:02d}"] = ls[k]
            rows.append(row)
    return pd.DataFrame(rows)


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
    assert imread(tmp_path / "report" / "syn_icl_icl_curve.png").shape[0] > 100
