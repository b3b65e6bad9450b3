"""analysis.write_report on synthetic sweeps: fits.json, report.md (tables, budget, flags), PNGs, atomicity."""
import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from analysis import write_report
from analysis.synthetic import capacity_runs, curves_for, rank_runs, write_parts

FIT_KEYS = {"sweep", "panel", "group", "x", "y", "exponent", "ci_low", "ci_high", "n_points", "theory",
            "consistent_with_theory", "intercept", "r2", "method", "n_censored", "reason", "range", "x_min", "x_max"}


def flags(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("⚠")]


def make_dir(path, *frames, n_parts=3):
    runs = pd.concat(frames, ignore_index=True)
    write_parts(runs, path, "runs", n_parts=n_parts)
    write_parts(curves_for(runs.iloc[:20]), path, "curves", n_parts=1)
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A capacity sweep (m* = 1.5 N and 3 sqrt(N), seed noise, one run in 40 diverges) and a rank sweep."""
    d = make_dir(tmp_path_factory.mktemp("good"),
                 capacity_runs(sigma=0.15, seeds=4, quorum=0.5, p_diverge=0.025, rng=7), rank_runs())
    return d, write_report(d)


def test_fits_json(good):
    d, md_path = good
    assert md_path == d / "report" / "report.md"
    fits = json.loads((d / "report" / "fits.json").read_text(), parse_constant=pytest.fail)  # no NaN tokens
    assert [(f["group"], f["range"]) for f in fits] == [("adapter.depth=2", "all"), ("adapter.depth=2", "upper"),
                                                        ("adapter.depth=3", "all"), ("adapter.depth=3", "upper")]
    for f, b in zip(fits, (1.0, 1.0, 0.5, 0.5)):
        assert set(f) == FIT_KEYS
        assert (f["sweep"], f["panel"], f["x"], f["y"]) == ("syn_capacity", "", "task.n", "adapter.width")
        assert f["theory"] == b and f["consistent_with_theory"] is True
        assert f["ci_low"] <= b <= f["ci_high"] and f["ci_low"] <= f["exponent"] <= f["ci_high"]
        assert f["n_censored"] == 0 and f["reason"] is None and "Tobit" in f["method"]
        assert isinstance(f["intercept"], float)
        if f["range"] == "all":
            assert abs(f["exponent"] - b) < 0.2 and f["ci_high"] - f["ci_low"] < 0.6
            assert f["n_points"] == 5 and f["r2"] > 0.9 and (f["x_min"], f["x_max"]) == (8, 128)
        else:                                  # the upper half of N = 8..128: 32, 64, 128
            assert f["n_points"] == 3 and (f["x_min"], f["x_max"]) == (32, 128)
    claims = json.loads((d / "report" / "claims.json").read_text())
    cap = [c for c in claims if c["sweep"] == "syn_capacity"]
    assert [(c["curve"], c["range"]) for c in cap] == [("adapter.depth=2", "upper"), ("adapter.depth=3", "upper")]


def test_report_markdown(good):
    d, md_path = good
    md = md_path.read_text()
    assert md.startswith("# Sweep report: syn_capacity, syn_rank")
    runs = pd.concat([pd.read_parquet(p) for p in sorted((d / "runs").glob("part-*.parquet"))])
    n_div = int((runs["status"] == "diverged").sum())
    assert n_div > 0 and f"{len(runs)} runs: ok {len(runs) - n_div}, diverged {n_div}, failed 0" in md
    assert "## Sweep `syn_capacity` (capacity)" in md and "## Sweep `syn_rank` (rank_curve)" in md
    # what is measured, with the budget quoted from the rows
    assert "### What this measures" in md and "gradient-trainable capacity" in md
    assert "not the theoretical" in md
    for part in ("`train.steps` = 3000", "`train.lr` = 0.003", "`task.tol` = 0.001", "`train.method` = adam",
                 "K = `task.k` = 2·N"):
        assert part in md, part
    n_probes = runs[runs["sweep"] == "syn_capacity"].groupby(["group", "adapter.width"]).ngroups
    assert f"10 cells (curve × task.n), {n_probes} probes" in md
    cap = runs[runs["sweep"] == "syn_capacity"]
    used, full = len(cap), 1024 * cap.groupby("group").seed.nunique().sum()
    assert f"Training runs: {used} by the capacity search vs {full} for a full grid" in md
    assert md.count("| adapter.depth=2 | ") == 5 + 2  # 5 threshold rows + 2 exponent rows (all, upper)
    assert "### Verdicts" in md and "Tobit" in md and "union" not in md  # one interval method, stated
    assert "do not overlap: the exponents differ" in md
    # rank section: theory rank and the construction's exact rank agree, no flags anywhere
    assert "| task.pretrained=false | 8 | 8 |" in md and "| task.pretrained=true | 8 | 8 |" in md
    assert "| task.pretrained=true | train.method=adam | 12 | 0.001 | 0 |" in md
    assert flags(md) == []
    assert "![syn_capacity capacity](syn_capacity_capacity.png)" in md


def test_pngs_and_atomic_outputs(good):
    d, _ = good
    out = d / "report"
    assert sorted(p.name for p in out.iterdir()) == ["claims.json", "fits.json", "report.md", "syn_capacity_capacity.png",
                                                    "syn_rank_rank_curve.png"]  # no temp files left
    for name in ("syn_capacity_capacity.png", "syn_rank_rank_curve.png"):
        img = imread(out / name)
        assert (out / name).stat().st_size > 10_000 and img.shape[0] > 300 and img.shape[1] > 400
        assert img[..., :3].std() > 0.05 and (img[..., :3] < 0.5).mean() > 0.005  # drawn on, not blank


def test_flags(tmp_path):
    cap = capacity_runs(curves={2: (1.5, 1.0), 3: (1.0, 1.0)}, hi=128,
                        theory={"adapter.depth=2": 2.0, "adapter.depth=3": 0.5})
    # depth 2, N = 8 (m* = 12, probes ... 8, 16, 12, 10, 11): make 16 fail on every seed -> non-monotone
    cell = (cap["adapter.depth"] == 2) & (cap["task.n"] == 8)
    cap.loc[cell & (cap["adapter.width"] == cap[cell]["adapter.width"].max()), "fit/success"] = False
    rank = rank_runs()
    rank.loc[(rank["train.method"] == "construction") & (rank["adapter.rank"] == 8), "test/mse_rel"] = 1e-3
    md = write_report(make_dir(tmp_path, cap, rank), n_boot=100).read_text()
    fl = "\n".join(flags(md))
    assert "`adapter.depth=2` (all range): exponent 1 [0.997, 1] excludes the theory slope 2" in fl
    assert "`adapter.depth=3` (all range): exponent 1 [1, 1] excludes the theory slope 0.5" in fl
    assert "censored: `adapter.depth=2` at task.n = 128: no probed adapter.width up to 128" in fl
    assert "kept in the fit as the bound m* > 128" in fl
    assert ("non-monotone: `adapter.depth=2` at task.n = 8: a larger value fails the quorum after a smaller one "
            "passes (1:0/3 2:0/3 4:0/3 8:0/3 10:0/3 11:0/3 12:3/3 16:0/3)") in fl
    assert "overlap although theory predicts 2 vs 0.5" in fl
    assert "the construction is exact from rank 9, theory says 8" in fl
    assert len(flags(md)) == 9  # 4 theory (2 curves × 2 ranges) + 1 censored + 1 non-monotone + 1 overlap + 2 rank panels
    fits = json.loads((tmp_path / "report" / "fits.json").read_text())
    assert [f["consistent_with_theory"] for f in fits] == [False, False, False, False]
    assert fits[0]["n_points"] == 5 and fits[0]["n_censored"] == 1    # the censored point stays, as a bound
    assert fits[0]["exponent"] == pytest.approx(1.0, abs=0.02)


def test_hidden_axis_becomes_a_curve(tmp_path):
    """Two task.dim values under one curve_by = adapter.depth: not mixed, split into curves and flagged."""
    frames = []
    for dim, c in ((8, 1.0), (16, 4.0)):
        f = capacity_runs(curves={2: (c, 1.0)})
        frames.append(f.assign(**{"task.dim": dim, "group": f["group"] + f",task.dim={dim}",
                                  "run_id": f["run_id"] + f"-{dim}"}))
    md = write_report(make_dir(tmp_path, *frames), n_boot=50).read_text()
    assert len(flags(md)) == 1 and "vary between cells: task.dim" in flags(md)[0]
    fits = json.loads((tmp_path / "report" / "fits.json").read_text())
    assert [f["group"] for f in fits if f["range"] == "all"] == ["adapter.depth=2,task.dim=8",
                                                                  "adapter.depth=2,task.dim=16"]  # numeric order
    assert all(f["theory"] == 1.0 and f["consistent_with_theory"] for f in fits)
    assert fits[2]["intercept"] == pytest.approx(np.log(4.0), abs=0.05)


def test_single_kind_and_broken_sweeps(tmp_path):
    rank_only = write_report(make_dir(tmp_path / "rank", rank_runs(ranks=range(6, 11))), n_boot=10)
    assert json.loads((tmp_path / "rank" / "report" / "fits.json").read_text()) == []
    assert "# Sweep report: syn_rank" in rank_only.read_text()
    broken = capacity_runs(sweep="broken", ns=(8, 16)).assign(**{"report.theory": "{not json"})
    plain = capacity_runs(sweep="plain", ns=(8, 16, 32)).assign(**{"report.kind": "something_else",
                                                                   "search.kind": "grid"})
    lone = capacity_runs(sweep="lone", ns=(8, 16))  # 2 points: no exponent, with the reason
    md = write_report(make_dir(tmp_path / "mixed", broken, plain, lone), n_boot=10).read_text()
    assert any("report failed for this sweep: report.theory of sweep broken is not JSON" in f for f in flags(md))
    assert "No report for report.kind = 'something_else'" in md
    assert any("no exponent (needs >= 3 finite positive points, got 2)" in f for f in flags(md))
    fits = json.loads((tmp_path / "mixed" / "report" / "fits.json").read_text())
    assert {f["sweep"] for f in fits} == {"lone"} and all(f["exponent"] is None for f in fits)


def test_capacity_panels(tmp_path):
    frames = [capacity_runs(ns=(8, 16, 32, 64, 128), curves={2: (c, 1.0), 3: (2 * c, 0.5)})
              .assign(**{"task.pretrained": pre, "report.panel_by": "task.pretrained"})
              for pre, c in ((False, 2.0), (True, 1.0))]
    for f, pre in zip(frames, (False, True)):
        f["group"] = f["group"] + f",task.pretrained={pre}"
        f["run_id"] = f["run_id"] + f"-{pre}"
    d = make_dir(tmp_path, *frames)
    md = write_report(d, n_boot=50).read_text()
    fits = json.loads((d / "report" / "fits.json").read_text())
    assert [(f["panel"], f["group"], f["theory"]) for f in fits if f["range"] == "all"] == [
        ("task.pretrained=false", "adapter.depth=2", 1.0), ("task.pretrained=false", "adapter.depth=3", 0.5),
        ("task.pretrained=true", "adapter.depth=2", 1.0), ("task.pretrained=true", "adapter.depth=3", 0.5)]
    assert all(f["consistent_with_theory"] for f in fits) and flags(md) == []
    assert "(panel task.pretrained=true)" in md
    assert imread(d / "report" / "syn_capacity_capacity.png").shape[1] > 900  # two panels side by side


def test_missing_columns_and_empty_runs(tmp_path):
    bad = capacity_runs(ns=(8, 16, 32)).assign(**{"report.curve_by": "adapter.depth,task.nope"})
    md = write_report(make_dir(tmp_path / "bad", bad, bad.iloc[:3]), n_boot=10).read_text()
    assert any("report.curve_by/panel_by names column(s) not in runs: task.nope" in f for f in flags(md))
    assert any("3 run_id(s) appear more than once within a sweep" in f for f in flags(md))
    write_parts(capacity_runs(ns=(8,)).iloc[:0], tmp_path / "empty", n_parts=1)
    with pytest.raises(ValueError, match="no runs in .*empty"):
        write_report(tmp_path / "empty")


def test_dispatch_by_registry(tmp_path):
    """A capacity search with no report.kind is a capacity report; a grid sweep with none gets counts only; every
    section is written under its kind's figure name (analysis.report_kinds)."""
    from analysis.report_kinds import REPORTS
    implicit = capacity_runs(sweep="implicit", ns=(8, 16, 32)).assign(**{"report.kind": ""})
    grid = capacity_runs(sweep="gridded", ns=(8, 16)).assign(**{"report.kind": "", "search.kind": "grid"})
    md = write_report(make_dir(tmp_path, implicit, grid), n_boot=10).read_text()
    assert "## Sweep `implicit` (capacity)" in md and "## Sweep `gridded` (no report.kind)" in md
    assert "No report for report.kind = None; counts only." in md
    assert f"implicit_{REPORTS['capacity'].FIGURE}.png" in {p.name for p in (tmp_path / "report").iterdir()}
    fits = json.loads((tmp_path / "report" / "fits.json").read_text())
    assert {f["sweep"] for f in fits} == {"implicit"} and len(fits) == 4
