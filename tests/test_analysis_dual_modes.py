"""analysis.dual_modes_report on synthetic dual-modes sweeps (rows built here, read back from Parquet): roles
from the closed-form curve, the on-prior gap check, the rise comparison against the control, and the
headline claim reaching both verdicts (papers.md §7; issue 14 item 3)."""
import json

import numpy as np
import pandas as pd
import pytest

from analysis import write_report
from analysis.dual_modes_report import (
    ASCENT,
    CONTROL,
    NEITHER,
    bayes_role,
    compare,
    gap_effects,
    gap_passes,
    k_ranges,
    rise,
    settings,
)
from analysis.synthetic import write_parts
from analysis.verdict import NOT, SHOWS

K, SEEDS = 12, 4
ASC = [1.0 + 0.8 * np.sin(np.pi * k / 8) if k < 8 else 1.0 - 0.08 * (k - 8) for k in range(K)]   # peak 1.8 at k=4
FALL = [1.0 / (1 + k) for k in range(K)]
FLAT = [1.0] * K
PRIOR_BAYES = [0.5 / (1 + 0.2 * k) for k in range(K)]


def dual_runs(models=None, bayes=None, gap_ratio=0.02, gap_noise=0.003, model_noise=0.03, seeds=SEEDS,
              rng=0, bayes_noise=0.01, ref=False) -> pd.DataFrame:
    """δ = 0.02: Bayes rises then falls (ASC); δ = 0.5: Bayes falls from k = 0 (FALL). `models` maps δ to the
    model's mean off-prior curve (default: the Bayes curve). On the prior the model's gap is `gap_ratio` × the
    Bayes risk, with per-seed noise `gap_noise` (relative). `ref`: also the precise nse_ref/bayes columns."""
    g, rows = np.random.default_rng(rng), []
    bayes = bayes or {0.02: ASC, 0.5: FALL}
    models = models or bayes
    for delta, curve in bayes.items():
        for s in range(seeds):
            row = {"run_id": f"d{delta}s{s}", "sweep": "syn_dual_modes", "status": "ok", "seed": s,
                   "task.name": "dual_modes", "task.delta": delta, "report.kind": "dual_modes",
                   "report.curve_by": "task.delta", "search.kind": "grid"}
            ratio = gap_ratio + gap_noise * g.standard_normal()
            for k in range(K):
                row[f"nse/model/k{k:02d}"] = models[delta][k] + g.normal(0, model_noise)
                row[f"nse/bayes/k{k:02d}"] = curve[k] + g.normal(0, bayes_noise)
                if ref:
                    row[f"nse_ref/bayes/k{k:02d}"] = curve[k] + g.normal(0, 0.002)
                row[f"nse_prior/bayes/k{k:02d}"] = PRIOR_BAYES[k] * (1 + g.normal(0, 0.01))
                row[f"gap_prior/bayes/k{k:02d}"] = max(ratio, 0.0) * PRIOR_BAYES[k]
                row[f"nse_prior/model/k{k:02d}"] = row[f"nse_prior/bayes/k{k:02d}"] + row[f"gap_prior/bayes/k{k:02d}"]
            for k in (0, 4, 64):
                row[f"nse_long/bayes/k{k:02d}"] = curve[k] if k < K else 0.05
            rows.append(row)
    return pd.DataFrame(rows)


def by_name(runs):
    return {s.name: s for s in settings(runs, ["task.delta"])}


def test_roles_come_from_the_bayes_curve():
    sets = by_name(dual_runs(models={0.02: FLAT, 0.5: ASC}))     # the model's shape does not matter
    assert bayes_role(sets["task.delta=0.02"])[0] == ASCENT
    assert bayes_role(sets["task.delta=0.5"])[0] == CONTROL
    flat = by_name(dual_runs(bayes={0.02: FLAT, 0.5: FALL}))
    assert bayes_role(flat["task.delta=0.02"])[0] == NEITHER
    rises_only = by_name(dual_runs(bayes={0.02: [0.1 * k for k in range(K)], 0.5: FALL}))
    assert bayes_role(rises_only["task.delta=0.02"])[0] == NEITHER      # rises, never falls: not early ascent


def test_roles_read_the_reference_curve_when_present():
    """Eval-prompt Bayes values with MC noise 0.3 per seed hide the control's fall; nse_ref decides."""
    noisy = by_name(dual_runs(bayes_noise=0.3, rng=2))
    assert bayes_role(noisy["task.delta=0.5"])[0] == NEITHER
    both = by_name(dual_runs(bayes_noise=0.3, rng=2, ref=True))
    assert [bayes_role(both[n])[0] for n in ("task.delta=0.02", "task.delta=0.5")] == [ASCENT, CONTROL]


def test_prior_line_names_a_scaled_prior():
    from analysis.dual_modes_report import prior_line
    base = {"task.prior": "early_ascent", "task.dim": 1, "task.tau": 2.0, "task.sigma_mu": 0.05}
    scaled = prior_line(pd.DataFrame([{**base, "task.mu_scale": 0.75, "task.wrong_weight": 0.05}]))
    assert "SCALED" in scaled and "mu_scale = 0.75 (paper 1)" in scaled and "wrong_weight = 0.05 (paper 0.5)" in scaled
    paper = prior_line(pd.DataFrame([{**base, "task.mu_scale": 1.0, "task.wrong_weight": 0.5}]))
    assert "SCALED" not in paper and "paper's Fig.-6" in paper
    assert "Regular4" in prior_line(pd.DataFrame([{"task.prior": "regular4"}]))


def test_rise_and_k_ranges():
    v = np.array([[1.0, 2.0, 3.0, 0.5], [1.0, 0.5, 0.2, 9.0]])
    ks = np.arange(4)
    np.testing.assert_allclose(rise(v, ks, 2), [2.0, 0.0])           # max over k ≤ 2 includes k = 0
    assert k_ranges(ks, np.array([True, True, False, True])) == "0–1, 3"
    assert k_ranges(ks, np.zeros(4, bool)) == "none"


def test_gap_check_uses_the_interval_not_the_mean():
    tight = by_name(dual_runs(gap_ratio=0.05, gap_noise=0.005))["task.delta=0.02"]
    assert gap_passes(gap_effects(tight)).all()
    runs = dual_runs()
    for s, r in enumerate([0.0, 0.02, 0.08, 0.1]):                  # mean 0.05, upper CI end ≈ 0.12
        for k in range(K):
            runs.loc[runs.seed == s, f"gap_prior/bayes/k{k:02d}"] = r * runs.loc[runs.seed == s, f"nse_prior/bayes/k{k:02d}"]
    eff = gap_effects(by_name(runs)["task.delta=0.02"])
    assert eff[0].estimate < 0.1 < eff[0].hi and not gap_passes(eff).any()   # mean under 10%, CI not
    assert not gap_passes(gap_effects(by_name(dual_runs(gap_ratio=0.3))["task.delta=0.02"])).any()


@pytest.mark.parametrize("case,want", [
    ("model follows Bayes, on-prior gap 2%", SHOWS),
    ("model rises in the control too", NOT),
    ("model follows Bayes, on-prior gap 30%", NOT),
    ("model flat everywhere", NOT),
])
def test_headline_reaches_both_verdicts(case, want):
    runs = {"model follows Bayes, on-prior gap 2%": dual_runs(),
            "model rises in the control too": dual_runs(models={0.02: ASC, 0.5: ASC}),
            "model follows Bayes, on-prior gap 30%": dual_runs(gap_ratio=0.3),
            "model flat everywhere": dual_runs(models={0.02: FLAT, 0.5: FLAT})}[case]
    sets = by_name(runs)
    cp = compare(sets["task.delta=0.02"], sets["task.delta=0.5"])
    assert cp.k_peak == 4
    assert cp.headline.verdict == want, (case, cp.model, cp.worst_gap)
    assert cp.bayes.above(0)                                             # the construction always shows
    parts = {p.statement.split(" (")[0]: p.verdict for p in cp.parts}
    if case == "model rises in the control too":
        assert cp.gap_ok and not cp.model.above(0)                       # the issue-14 situation
    if case == "model follows Bayes, on-prior gap 30%":
        assert cp.model.above(0) and not cp.gap_ok                       # the rise alone would have passed
        assert SHOWS in parts.values() and NOT in parts.values()


def test_report_through_parquet(tmp_path):
    write_parts(dual_runs(ref=True), tmp_path, "runs", n_parts=2)
    md = write_report(tmp_path, n_boot=50).read_text()
    assert "## Sweep `syn_dual_modes` (dual_modes)" in md and "⚠" not in md
    assert "| task.delta=0.02 | 4 | ascent | 4 |" in md and "| task.delta=0.5 | 4 | control | 4 |" in md
    assert "**shows** — the model shows early ascent where Bayes does (task.delta=0.02" in md
    assert "- `task.delta=0.02` model: early ascent: rises from k=0" in md and "(read at k = 0–11)" in md
    claims = json.loads((tmp_path / "report" / "claims.json").read_text())
    head = [c for c in claims if c["panel"] == "headline"]
    assert len(head) == 1 and head[0]["verdict"] == SHOWS and head[0]["sweep"] == "syn_dual_modes"
    assert {c["panel"] for c in claims} == {"headline", "part", "on_prior"}
    assert (tmp_path / "report" / "syn_dual_modes_dual_modes.png").stat().st_size > 1000


def test_report_with_large_gap_reads_nothing(tmp_path):
    write_parts(dual_runs(gap_ratio=0.3), tmp_path, "runs", n_parts=1)
    md = write_report(tmp_path, n_boot=50).read_text()
    assert "**does not show** — the model shows early ascent" in md
    assert "gap (not read)" in md and "| none |" in md and "model: not read" in md


def test_no_control_and_no_ascent(tmp_path):
    only = dual_runs(bayes={0.02: ASC})
    write_parts(only, tmp_path / "a", "runs", n_parts=1)
    md = write_report(tmp_path / "a", n_boot=50).read_text()
    assert "⚠ No control" in md and "early ascent where Bayes does" not in md
    write_parts(dual_runs(bayes={0.2: FALL, 0.5: FALL}), tmp_path / "b", "runs", n_parts=1)
    md = write_report(tmp_path / "b", n_boot=50).read_text()
    assert "rise comparison does not apply" in md
    claims = json.loads((tmp_path / "b" / "report" / "claims.json").read_text())
    assert [c["panel"] for c in claims] == ["on_prior", "on_prior"] and all(c["verdict"] == SHOWS for c in claims)


def test_missing_columns_is_a_one_line_error(tmp_path):
    runs = dual_runs().drop(columns=[c for c in dual_runs().columns if c.startswith("gap_prior/")])
    write_parts(runs, tmp_path, "runs", n_parts=1)
    md = write_report(tmp_path, n_boot=50).read_text()
    assert "⚠ report failed for this sweep: dual_modes report needs `gap_prior/bayes/kNN` columns" in md
