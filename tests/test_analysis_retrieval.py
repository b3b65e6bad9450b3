"""analysis.retrieval_report on synthetic retrieval sweeps: heat-map values by relative gold depth, the
context capacity L_max per model size with its exponent recovered from L_max = c·size^α, censoring in both
directions, and the section read back from Parquet through `write_report` (report.kind = retrieval)."""
import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from analysis import write_report
from analysis.meta import SweepMeta
from analysis.retrieval_report import (
    capacity_table,
    fit_capacity,
    heat_tables,
    longest_passing,
    longest_passing_replicates,
    parse_rule,
    position_bins,
    retrieval_section,
)
from analysis.synthetic import write_parts

META = {"sweep": "syn_kv", "status": "ok", "report.kind": "retrieval", "report.x": "task.n_dicts",
        "report.curve_by": "model.n_embd", "report.select": "acc/mean>=0.9", "search.kind": "grid"}


def _row(n_dicts, n_embd, seed, pos_acc, **extra):
    row = {**META, "run_id": f"{n_dicts}-{n_embd}-{seed}", "seed": seed, "task.n_dicts": n_dicts,
           "model.n_embd": n_embd, "acc/mean": float(np.mean(pos_acc)), "task/context_tokens": 7.0 * n_dicts + 4}
    row.update({f"acc/pos{i:02d}": a for i, a in enumerate(pos_acc)})
    row.update(extra)
    return row


def power_runs(alpha=0.5, c=2.0, sizes=(16, 64, 256, 1024), seeds=3, rng=0) -> pd.DataFrame:
    """acc = 0.97 (± 0.01) at every slot while n_dicts <= L_s, 0.2 beyond; L_s = c·size^α·exp(N(0, 0.05²))
    per seed. x grid: every n_dicts in 2..90."""
    g, rows = np.random.default_rng(rng), []
    for size in sizes:
        for s in range(seeds):
            L = c * size ** alpha * np.exp(g.normal(0, 0.05))
            for n in range(2, 91):
                a = 0.97 + g.normal(0, 0.01, n) if n <= L else np.full(n, 0.2)
                rows.append(_row(n, size, s, a))
    return pd.DataFrame(rows)


def test_parse_rule_and_longest_passing():
    assert parse_rule("acc/mean>=0.9") == ("acc/mean", ">=", 0.9)
    assert parse_rule(None) == ("acc/mean", ">=", 0.9)
    assert parse_rule(" val/ce < 0.5 ") == ("val/ce", "<", 0.5)
    with pytest.raises(ValueError, match="report.select"):
        parse_rule("acc/mean=0.9")
    xs = np.array([2.0, 4, 8, 16])
    assert longest_passing(xs, np.array([1, 0.95, 0.5, 0.1]), ">=", 0.9) == (4.0, "", True)
    L, cens, _ = longest_passing(xs, np.array([0.5, 0.4, 0.5, 0.1]), ">=", 0.9)
    assert np.isnan(L) and cens == "none passes"
    L, cens, _ = longest_passing(xs, np.array([1, 1, 0.95, 0.91]), ">=", 0.9)
    assert np.isnan(L) and cens == "all pass"
    assert longest_passing(xs, np.array([1, 0.5, 0.95, 0.1]), ">=", 0.9) == (8.0, "", False)   # non-monotone
    cols = np.array([[1, 0.95, 0.5, 0.1], [0.5, 0.4, 0.5, 0.1], [1, 1, 0.95, 0.91], [1, 0.5, 0.95, 0.1]]).T
    np.testing.assert_array_equal(longest_passing_replicates(xs, cols, ">=", 0.9), [4.0, np.nan, np.nan, 8.0])


def test_heat_map_values_by_relative_depth():
    rows = [_row(4, 32, 0, [1.0, 0.0, 0.5, 1.0]), _row(4, 32, 1, [1.0, 0.5, 0.0, 0.0]),
            _row(2, 32, 0, [0.8, 0.4]), _row(2, 32, 1, [0.6, 0.2])]
    runs = pd.DataFrame(rows)
    b = position_bins(runs, n_bins=2)                 # slots of 4 at depths 1/8, 3/8 | 5/8, 7/8; of 2 at 1/4 | 3/4
    np.testing.assert_allclose(b, [[0.5, 0.75], [0.75, 0.0], [0.8, 0.4], [0.6, 0.2]])
    b4 = position_bins(runs, n_bins=4)                # 2 slots over 4 bins: bins 1 and 3 only
    assert np.isnan(b4[2, 0]) and np.isnan(b4[2, 2]) and b4[2, 1] == 0.8 and b4[2, 3] == 0.4
    heat = heat_tables(runs, "task.n_dicts", ["model.n_embd"], n_bins=2).set_index(["x", "bin"])
    assert heat.at[(4.0, 0), "mean"] == pytest.approx(0.625) and heat.at[(4.0, 1), "mean"] == pytest.approx(0.375)
    assert heat.at[(2.0, 0), "mean"] == pytest.approx(0.7) and heat.at[(2.0, 1), "mean"] == pytest.approx(0.3)
    assert heat.at[(4.0, -1), "mean"] == pytest.approx(np.mean([0.625, 0.375]))     # acc/mean over seeds
    assert heat.at[(2.0, -2), "mean"] == 18.0                                         # context tokens
    assert set(heat["n"]) == {2}


def test_capacity_recovers_known_exponent():
    runs = power_runs(alpha=0.5, c=2.0)
    cap, reps = capacity_table(runs, "task.n_dicts", "model.n_embd", [], "acc/mean", ">=", 0.9, n_boot=200)
    assert not cap["censored"].any() and cap["monotone"].all()
    truth = 2.0 * cap["size"] ** 0.5
    assert (abs(np.log(cap["L_max"] / truth)) < 0.25).all()                          # within seed jitter + grid
    assert ((cap["ci_low"] <= cap["L_max"]) & (cap["L_max"] <= cap["ci_high"])).all()
    assert reps.shape == (4, 200)
    (fit,) = fit_capacity(cap, reps, SweepMeta.from_runs(runs), "model.n_embd", "L_max(task.n_dicts)")
    assert fit["n_points"] == 4 and fit["n_censored"] == 0 and fit["reason"] is None
    assert fit["exponent"] == pytest.approx(0.5, abs=0.05)
    assert fit["ci_low"] < 0.5 < fit["ci_high"] and fit["ci_high"] - fit["ci_low"] < 0.3
    assert fit["x"] == "model.n_embd" and fit["sweep"] == "syn_kv"
    # a different exponent is recovered too (the fit is not reading a constant)
    cap, reps = capacity_table(power_runs(alpha=0.8, c=1.0, sizes=(8, 32, 128, 256)), "task.n_dicts", "model.n_embd",
                               [], "acc/mean", ">=", 0.9, n_boot=100)
    (steep,) = fit_capacity(cap, reps, SweepMeta.from_runs(runs), "model.n_embd", "L")
    assert steep["exponent"] == pytest.approx(0.8, abs=0.08)


def test_censoring_is_reported_not_dropped(tmp_path):
    g, rows = np.random.default_rng(1), []
    for size, L in ((8, 0), (16, 4), (32, 6), (64, 9), (128, 99)):     # 8: never passes; 128: passes at every n
        for s in range(2):
            for n in (2, 3, 4, 6, 9, 12):
                rows.append(_row(n, size, s, 0.95 + g.uniform(0, 0.04, n) if n <= L else np.full(n, 0.3)))
    runs = pd.DataFrame(rows)
    heat = heat_tables(runs, "task.n_dicts", ["model.n_embd"])
    assert list(dict.fromkeys(heat["curve"])) == [f"model.n_embd={s}" for s in (8, 16, 32, 64, 128)]   # numeric order
    sec = retrieval_section(runs, SweepMeta.from_runs(runs), tmp_path, n_boot=100)
    (fit,) = sec.fits
    assert fit["n_censored"] == 2 and fit["n_points"] == 3
    md = sec.markdown
    assert "censored: `all` at model.n_embd = 8: no task.n_dicts reaches acc/mean >= 0.9 (L_max < 2)" in md
    assert "censored: `all` at model.n_embd = 128: every task.n_dicts up to 12 passes (L_max ≥ 12)" in md
    assert "| < 2 |" in md and "| ≥ 12 |" in md
    # everything censored: no exponent, and the reason is shown
    few = runs[runs["model.n_embd"].isin([8, 128])]
    sec2 = retrieval_section(few, SweepMeta.from_runs(few), tmp_path, n_boot=50)
    (f2,) = sec2.fits
    assert f2["reason"] and np.isnan(f2["exponent"]) and "no exponent" in sec2.markdown


def test_write_report_dispatches_retrieval(tmp_path):
    runs = power_runs(sizes=(16, 64, 256), seeds=2)
    runs = runs[runs["task.n_dicts"].isin([2, 4, 8, 12, 16, 24, 32, 48])]
    write_parts(runs, tmp_path, "runs", n_parts=2)
    md = write_report(tmp_path, n_boot=100).read_text()
    assert "## Sweep `syn_kv` (retrieval)" in md and "### Context capacity" in md
    assert "| task.n_dicts | tokens | seeds | acc (all) | 0–20% |" in md
    fits = json.loads((tmp_path / "report" / "fits.json").read_text())
    assert len(fits) == 1 and fits[0]["sweep"] == "syn_kv" and fits[0]["n_points"] == 3
    assert imread(tmp_path / "report" / "syn_kv_retrieval.png").shape[0] > 100
    assert (tmp_path / "report" / "syn_kv_retrieval_capacity.png").exists()
