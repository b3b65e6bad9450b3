"""analysis.accuracy_report on synthetic rows with known values: the per-panel table (mean over seeds, bootstrap CI,
chance), the best-vs-worst sentence, the published-ordering check, and the report written from Parquet."""
import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from analysis import write_report
from analysis.accuracy_report import (
    accuracy_table,
    lower_is_better,
    published_check,
    verdict,
)
from analysis.synthetic import write_parts

SEEDS, K = 4, 8
# task -> model -> (final val/acc, acc per position k); parity chance 1/2, mqar chance 1/8
TRUTH = {"sparse_parity": {"mamba": 0.95, "transformer": 0.52},
         "mqar": {"mamba": 0.40, "transformer": 0.99}}
CHANCE = {"sparse_parity": 0.5, "mqar": 0.125}


def rows(noise=0.005, rng=0, truth=TRUTH, theory=None) -> pd.DataFrame:
    g, out = np.random.default_rng(rng), []
    for task, models in truth.items():
        for model, acc in models.items():
            for s in range(SEEDS):
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


def test_table_recovers_means_cis_and_chance():
    tab = accuracy_table(rows(), ["task.name"], ["model.name"], "val/acc", n_boot=300).set_index(["panel", "curve"])
    for task, models in TRUTH.items():
        for model, acc in models.items():
            r = tab.loc[(f"task.name={task}", f"model.name={model}")]
            assert r["n"] == SEEDS and abs(r["mean"] - acc) < 0.01
            assert r["lo"] <= r["mean"] <= r["hi"] and r["hi"] - r["lo"] < 0.02
            assert r["chance"] == CHANCE[task] and np.isnan(r["paper"])


def test_verdict_names_best_and_worst_and_separation():
    tab = accuracy_table(rows(), ["task.name"], ["model.name"], "val/acc", n_boot=300)
    parity = tab[tab.panel == "task.name=sparse_parity"]
    mqar = tab[tab.panel == "task.name=mqar"]
    assert verdict(parity) == "model.name=mamba beats model.name=transformer: CIs do not overlap."
    assert verdict(mqar) == "model.name=transformer beats model.name=mamba: CIs do not overlap."
    # same truth for both models, large noise: no separation
    same = rows(noise=0.05, truth={"mqar": {"mamba": 0.5, "transformer": 0.5}})
    tab = accuracy_table(same, ["task.name"], ["model.name"], "val/acc", n_boot=300)
    assert "no separation at this scale" in verdict(tab)
    # an error metric is minimised: the smaller mean wins
    err = pd.DataFrame({"curve": ["a", "b"], "mean": [0.1, 0.9], "lo": [0.05, 0.85], "hi": [0.15, 0.95]})
    assert lower_is_better("mqar/error") and not lower_is_better("val/acc")
    assert verdict(err, lower=True) == "a beats b: CIs do not overlap."
    assert verdict(err.iloc[:1]).startswith("fewer than two curves")


@pytest.mark.parametrize("mamba_parity, expect", [(0.95, "shows here"), (0.52, "does not show"), (0.2, "REVERSED")])
def test_published_ordering(mamba_parity, expect):
    theory = {"task.name=sparse_parity,model.name=mamba": 1.0, "task.name=sparse_parity,model.name=transformer": 0.5}
    truth = {"sparse_parity": {"mamba": mamba_parity, "transformer": 0.52}}
    tab = accuracy_table(rows(truth=truth), ["task.name"], ["model.name"], "val/acc", theory=theory, n_boot=300)
    assert list(tab["paper"]) == [1.0, 0.5]
    assert expect in published_check(tab)
    assert published_check(tab.assign(paper=np.nan)) is None


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
    assert "model.name=transformer beats model.name=mamba: CIs do not overlap." in md
    assert "Published ordering (model.name=transformer over model.name=mamba) shows here" in md
    assert imread(tmp_path / "report" / "syn_acc_accuracy.png").shape[0] > 100


def test_report_flags_a_missing_metric(tmp_path):
    write_parts(rows().drop(columns=["val/acc"]), tmp_path, "runs", n_parts=1)
    md = write_report(tmp_path, n_boot=50).read_text()
    assert "⚠ accuracy_table report skipped: no `val/acc` column" in md
