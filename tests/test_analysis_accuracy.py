"""analysis.accuracy_report on synthetic rows with known values: the per-panel table (mean over seeds, band,
chance), the best-vs-worst and published-ordering claims (both verdicts), the x axis (MQAR accuracy against
the number of pairs), and the report written from Parquet with its claims.json."""
import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from analysis import write_report
from analysis.accuracy_report import (
    accuracy_table,
    best_vs_worst,
    lower_is_better,
    published_claims,
)
from analysis.synthetic import write_parts

SEEDS, K = 4, 8
# task -> model -> (final val/acc, acc per position k); parity chance 1/2, mqar chance 1/8
TRUTH = {"sparse_parity": {"mamba": 0.95, "transformer": 0.52},
         "mqar": {"mamba": 0.40, "transformer": 0.99}}
CHANCE = {"sparse_parity": 0.5, "mqar": 0.125}


def rows(noise=0.005, rng=0, truth=TRUTH, theory=None, seeds=SEEDS) -> pd.DataFrame:
    g, out = np.random.default_rng(rng), []
    for task, models in truth.items():
        for model, acc in models.items():
            for s in range(seeds):
                r = {"run_id": f"{task}{model}{s}", "sweep": "syn_acc", "status": "ok", "seed": s,
                     "task.name": task, "model.name": model, "report.kind": "accuracy_table",
                     "report.panel_by": "task.name", "report.curve_by": "model.name", "search.kind": "grid",
                     "report.theory": json.dumps(theory or {}),
                     "val/acc": acc + g.normal(0, noise), "val/acc/chance": CHANCE[task]}
                if task == "sparse_parity":     # accuracy rising from chance to acc over the positions
                    for k in range(K):
                        r[f"acc/k{k:02d}"] = 0.5 + (acc - 0.5) * k / (K - 1)
                out.append(r)
    return pd.DataFrame(out)


def mqar_rows(acc_of, pairs=(4, 8, 16, 32), seeds=3, noise=0.02, rng=0, theory=None) -> pd.DataFrame:
    """MQAR rows over task.n_pairs; acc_of(model, n_pairs) is the true accuracy."""
    g, out = np.random.default_rng(rng), []
    for n in pairs:
        for model in ("transformer", "mamba"):
            for s in range(seeds):
                out.append({"run_id": f"{model}{n}_{s}", "sweep": "syn_mqar", "status": "ok", "seed": s,
                            "task.name": "mqar", "task.n_pairs": n, "model.name": model,
                            "report.kind": "accuracy_table", "report.x": "task.n_pairs",
                            "report.panel_by": "task.name", "report.curve_by": "model.name",
                            "search.kind": "grid", "report.theory": json.dumps(theory or {}),
                            "val/acc": float(np.clip(acc_of(model, n) + g.normal(0, noise), 0, 1)),
                            "val/acc/chance": 1 / n})
    return pd.DataFrame(out)


def test_table_recovers_means_bands_and_chance():
    tab = accuracy_table(rows(), ["task.name"], ["model.name"], "val/acc", n_boot=300).set_index(["panel", "curve"])
    for task, models in TRUTH.items():
        for model, acc in models.items():
            r = tab.loc[(f"task.name={task}", f"model.name={model}")]
            assert r["n"] == SEEDS and abs(r["mean"] - acc) < 0.01 and len(r["runs"]) == SEEDS
            assert r["lo"] <= r["mean"] <= r["hi"] and r["hi"] - r["lo"] < 0.02
            assert r["chance"] == CHANCE[task] and np.isnan(r["paper"]) and np.isnan(r["x"])


def test_best_vs_worst_both_ways():
    tab = accuracy_table(rows(), ["task.name"], ["model.name"], "val/acc", n_boot=100)
    c = best_vs_worst(tab[tab.panel == "task.name=sparse_parity"])
    assert c.shows and c.statement == "model.name=mamba is more accurate than model.name=transformer"
    assert c.control == "model.name=transformer" and abs(c.effect.estimate - 0.43) < 0.02
    same = rows(noise=0.05, truth={"mqar": {"mamba": 0.5, "transformer": 0.5}})
    assert not best_vs_worst(accuracy_table(same, ["task.name"], ["model.name"], "val/acc", n_boot=100)).shows
    # an error metric is minimised: the smaller mean wins, its CI must lie below 0
    err = pd.DataFrame({"curve": ["a", "b"], "x": [np.nan] * 2, "mean": [0.1, 0.9],
                        "runs": [(0.09, 0.1, 0.11), (0.88, 0.9, 0.92)]})
    assert lower_is_better("mqar/error") and not lower_is_better("val/acc")
    c = best_vs_worst(err, lower=True)
    assert c.shows and c.statement.startswith("a has lower error than b")
    assert best_vs_worst(err.iloc[:1]) is None


@pytest.mark.parametrize("mamba_parity, shows", [(0.95, True), (0.52, False), (0.2, False)])
def test_published_ordering_claims(mamba_parity, shows):
    theory = {"task.name=sparse_parity,model.name=mamba": 1.0, "task.name=sparse_parity,model.name=transformer": 0.5}
    truth = {"sparse_parity": {"mamba": mamba_parity, "transformer": 0.52}}
    tab = accuracy_table(rows(truth=truth), ["task.name"], ["model.name"], "val/acc", theory=theory, n_boot=100)
    assert list(tab["paper"]) == [1.0, 0.5]
    (c,) = published_claims(tab)
    assert c.shows is shows and c.control == "model.name=transformer"
    assert published_claims(tab.assign(paper=np.nan)) == []


def test_two_noisy_seeds_do_not_show_a_small_gap():
    # a 2-seed difference with spread has a wide t-interval (ν small): a 0.1 gap with 0.1 noise does not show
    truth = {"mqar": {"mamba": 0.40, "transformer": 0.5}}
    tab = accuracy_table(rows(truth=truth, noise=0.1, seeds=2), ["task.name"], ["model.name"], "val/acc", n_boot=50)
    assert not best_vs_worst(tab).shows


def test_mqar_pairs_axis_claims_per_size_both_ways():
    """Attention at 1.0 everywhere; Mamba retrieves at 4 pairs and falls to chance-ish beyond: the published
    claim shows at 16 and 32 pairs and does not at 4."""
    theory = {"task.name=mqar,model.name=transformer": 1.0, "task.name=mqar,model.name=mamba": 0.8}
    runs = mqar_rows(lambda m, n: 1.0 if m == "transformer" or n == 4 else 0.3)
    tab = accuracy_table(runs, ["task.name"], ["model.name"], "val/acc", x="task.n_pairs", theory=theory, n_boot=50)
    assert list(tab["x"].unique()) == [4, 8, 16, 32]
    verdicts = {int(cell["x"].iloc[0]): published_claims(cell, x="task.n_pairs")[0] for _, cell in tab.groupby("x")}
    assert not verdicts[4].shows and verdicts[16].shows and verdicts[32].shows
    assert verdicts[32].statement.endswith("at task.n_pairs=32")


def test_report_from_parquet(tmp_path):
    theory = {"task.name=mqar,model.name=transformer": 1.0, "task.name=mqar,model.name=mamba": 0.8}
    write_parts(rows(theory=theory), tmp_path, "runs", n_parts=2)
    md = write_report(tmp_path, n_boot=200).read_text()
    assert "## Sweep `syn_acc` (accuracy_table)" in md and "⚠" not in md
    assert "**task.name=mqar**" in md and "**task.name=sparse_parity**" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| model.name=transformer") and "0.125" in ln)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "4" and abs(float(cells[2]) - 0.99) < 0.01 and cells[3].startswith("[")
    assert cells[4] == "0.125" and cells[5] == "above" and cells[6] == "1"
    assert "**shows** — model.name=transformer is more accurate than model.name=mamba" in md
    claims = json.loads((tmp_path / "report" / "claims.json").read_text())
    pub = [c for c in claims if c["sweep"] == "syn_acc" and c["check"] == "published"]
    assert len(pub) == 1 and pub[0]["verdict"] == "shows" and pub[0]["control"] == "model.name=mamba"
    assert imread(tmp_path / "report" / "syn_acc_accuracy.png").shape[0] > 100


def test_report_with_pairs_axis(tmp_path):
    theory = {"task.name=mqar,model.name=transformer": 1.0, "task.name=mqar,model.name=mamba": 0.8}
    write_parts(mqar_rows(lambda m, n: 1.0 if m == "transformer" else 0.25, theory=theory), tmp_path, "runs")
    md = write_report(tmp_path, n_boot=100).read_text()
    assert "| task.n_pairs |" in md and "at task.n_pairs=32" in md and "⚠" not in md
    claims = json.loads((tmp_path / "report" / "claims.json").read_text())
    assert sum(c["check"] == "published" and c["verdict"] == "shows" for c in claims) == 4


def test_report_flags_a_missing_metric(tmp_path):
    write_parts(rows().drop(columns=["val/acc"]), tmp_path, "runs", n_parts=1)
    md = write_report(tmp_path, n_boot=50).read_text()
    assert "⚠ accuracy_table report skipped: no `val/acc` column" in md
