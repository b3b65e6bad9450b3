"""sweeps/ftc_k.yaml end to end, shrunk (N = 4, K/N 1..16, few steps): the planner, packs, capacity search over
both methods, then the capacity report: K-slopes over both ranges in fits.json, verdicts per curve, and the
construction's width exactly flat in K (|r| = 1: every relabelled point needs its 3 units)."""
from pathlib import Path

import pandas as pd

from analysis.capacity_report import capacity_section
from analysis.meta import SweepMeta
from sweeps.spec import load_spec
from tests.test_packed_vs_unpacked import run_sweep_in_process

SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "ftc_k.yaml"
SMALL = ["task.n=4", "task.k=[4,8,16,32,64]", "task.labels=rademacher", "train.steps=150", "seeds=2",
         "search.range=[2,64]"]


def test_ftc_k_shrunk_end_to_end(tmp_path):
    spec = load_spec(SWEEP, SMALL)
    rows, _ = run_sweep_in_process(spec, tmp_path / "run")
    runs = pd.DataFrame(list(rows.values()))
    assert set(runs["train.method"]) == {"adam", "construction"} and sorted(set(runs["task.k"])) == [4, 8, 16, 32, 64]
    sec = capacity_section(runs, SweepMeta.from_runs(runs), tmp_path, n_boot=50)
    fits = {(f["panel"], f["group"], f["range"]): f for f in sec.fits}
    assert len(fits) == 8 and all(f["x"] == "task.k" and f["theory"] == 0.0 for f in sec.fits)
    con2 = fits[("adapter.depth=2", "train.method=construction", "upper")]
    assert con2["exponent"] == 0.0 and con2["x_min"] == 16 and con2["x_max"] == 64   # 12 units at every K
    assert (con2["ci_low"], con2["ci_high"]) == (0.0, 0.0)
    claims = {(c["panel"], c["curve"]): c for c in sec.claims}
    assert len(claims) == 4 and claims[("adapter.depth=2", "train.method=construction")]["verdict"] == "shows"
    assert "m* does not grow with task.k" in sec.markdown and "### Verdicts" in sec.markdown
    assert sec.figures[0].exists()
