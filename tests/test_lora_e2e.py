"""End to end, shrunken: `sweeps/lora_linear.yaml` (same report kind as lora_threshold.yaml) on local Ray, then
`analysis.lora_merge` writes the one-table report with the threshold and Eckart–Young claims."""
import json
from pathlib import Path

import numpy as np
from e2e import ftsweep, read_dataset

from analysis.lora_merge import main as merge_main

ROOT = Path(__file__).parent.parent
TINY = ["model.width=4", "seeds=2", "train.steps=150", "train.eval_every=150", "task.n_test=1000", "task.n_val=200",
        "task.batch_size=64"]


def test_lora_linear_sweep_threshold_and_bound(tmp_path):
    out = tmp_path / "lin"
    ftsweep("run", str(ROOT / "sweeps" / "lora_linear.yaml"), *TINY, "--out", str(out), cwd=tmp_path)
    runs = read_dataset(out / "runs").to_pandas()
    assert len(runs) == 2 * 2 * 4 * 2                              # L × method × rank × seed
    c = runs[runs["train.method"] == "construction"]
    np.testing.assert_allclose(c["test/mse_rel"], c["test/mse"] / c["test/target_var"], rtol=1e-6)
    below = c[c["model.depth"] * c["adapter.rank"] < 4]             # L·R < D: the construction attains the tail
    np.testing.assert_allclose(below["test/mse"], below["test/ey_tail"], rtol=0.15)
    assert (c[c["model.depth"] * c["adapter.rank"] >= 4]["test/mse_rel"] < 1e-10).all()
    assert merge_main([str(out), "--out", str(tmp_path / "merged")]) == 0
    claims = json.loads((tmp_path / "merged" / "report" / "claims.json").read_text())
    assert {c["verdict"] for c in claims} <= {"shows", "does not show"}
    assert sum("Eckart" in c["statement"] for c in claims) == 1      # L = 2 only: at L = 4, R* = 1 has no rank below
    assert sum("from R* on" in c["statement"] for c in claims) == 3   # two settings + overall
    md = (tmp_path / "merged" / "report" / "report.md").read_text()
    assert "Linear case: Eckart–Young bound" in md and "test/target_var" in md
    assert merge_main([str(out), "--out", str(tmp_path / "merged")]) == 2    # OUT exists: one-line error


def test_threshold_grid_covers_the_issue_settings():
    """The default and `variant=wide` of lora_threshold.yaml together hold D ∈ {8, 16} × L ∈ {2, 4} × L̄ ∈ {1, 2}
    with ranks 1..D (every variant's validity: tests/test_sweeps_spec.py)."""
    from sweeps.spec import load_checked
    cells = set()
    for over in ([], ["variant=wide"]):
        _, members = load_checked(ROOT / "sweeps" / "lora_threshold.yaml", over)
        cells |= {(m.model.width, m.model.depth, m.task.target_depth, m.adapter.rank) for m in members}
    want = {(D, L, Lb, r) for D in (8, 16) for L in (2, 4) for Lb in (1, 2) for r in range(1, D + 1)}
    assert cells == want
