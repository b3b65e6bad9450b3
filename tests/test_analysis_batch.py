"""analysis.batch_report on synthetic batch-selection sweeps: gap curves gap_s(t) = g0·e^{−t/τ_s} + floor_s with
known τ per strategy, so the steps to ε, the speed-ups over shuffle, the censoring and the issue's checks
have exact expected values; then the section read back from Parquet through `write_report`."""
import math

import numpy as np
import pandas as pd
import pytest

from analysis import write_report
from analysis.batch_report import batch_section, hitting_steps, panel_rows
from analysis.meta import SweepMeta
from analysis.synthetic import write_parts

EPS, G0, EVERY, STEPS = 1e-3, 2.0, 10, 8000
TAU = {"shuffle": 1000.0, "osgd": 80.0, "spectral": 400.0, "full": 100.0, "all_batches": 300.0, "fixed": 50.0}
FLOOR = {"fixed": 0.1}
META = {"sweep": "syn_bs", "status": "ok", "report.kind": "batch_selection", "report.select": f"opt/gap<={EPS}",
        "search.kind": "grid"}


def hit(tau, floor=0.0):
    """First logged step with G0·e^{−t/τ} + floor ≤ ε (None if never)."""
    if floor > EPS:
        return None
    t = tau * math.log(G0 / (EPS - floor))
    return int(math.ceil(t / EVERY) * EVERY)


def sweep(taus=TAU, floors=FLOOR, dims=(16,), seeds=3, jitter=0.05, rng=0):
    g, runs, curves = np.random.default_rng(rng), [], []
    for d in dims:
        for s, tau in taus.items():
            for seed in range(seeds):
                t_s = tau * math.exp(g.normal(0, jitter))
                rid = f"{s}-{d}-{seed}"
                steps = np.arange(0, STEPS + 1, EVERY)
                gap = G0 * np.exp(-steps / t_s) + floors.get(s, 0.0)
                curves += [{"run_id": rid, "step": int(t), "opt/gap": float(v), "full/loss": 2.3464 + float(v)}
                           for t, v in zip(steps, gap)]
                runs.append({**META, "run_id": rid, "seed": seed, "train.batch_selection": s, "task.n": 8,
                             "task.batch_size": 2, "task.dim": d, "opt/gap": float(gap[-1]),
                             "full/loss": 2.3464 + float(gap[-1]), "_tau": t_s})
    return pd.DataFrame(runs), pd.DataFrame(curves)


def test_hitting_steps_are_the_first_logged_step_under_eps():
    runs, curves = sweep()
    hits = hitting_steps(runs, curves, "opt/gap", "<=", EPS).set_index("run_id")
    for _, r in runs.iterrows():
        want = hit(r["_tau"], FLOOR.get(r["train.batch_selection"], 0.0))
        if want is None or want > STEPS:
            assert hits.loc[r["run_id"], "censored"] and hits.loc[r["run_id"], "hit"] == STEPS
        else:
            assert not hits.loc[r["run_id"], "censored"] and hits.loc[r["run_id"], "hit"] == want


def test_speedups_over_shuffle_recover_the_tau_ratios():
    runs, curves = sweep(jitter=0.0)
    hits = hitting_steps(runs, curves, "opt/gap", "<=", EPS)
    rows = {r["strategy"]: r for r in panel_rows(runs, hits, "opt/gap", 200, np.random.default_rng(0))}
    for s in ("osgd", "spectral", "full", "all_batches"):
        assert rows[s]["sp"] == pytest.approx(TAU["shuffle"] / TAU[s], rel=0.02), s
    assert rows["fixed"]["censored"] == 3 and rows["fixed"]["speedup"] == "—"
    assert float(rows["osgd"]["epochs"]) == pytest.approx(hit(TAU["osgd"]) * 2 / 8, rel=0.01)   # steps·B/N
    assert float(rows["full"]["epochs"]) == pytest.approx(hit(TAU["full"]), rel=0.01)          # one step per epoch


def test_censored_shuffle_makes_speedups_lower_bounds():
    runs, curves = sweep(floors={"fixed": 0.1, "shuffle": 0.004})
    hits = hitting_steps(runs, curves, "opt/gap", "<=", EPS)
    rows = {r["strategy"]: r for r in panel_rows(runs, hits, "opt/gap", 200, np.random.default_rng(0))}
    assert rows["shuffle"]["steps"].startswith("≥ ") and rows["osgd"]["speedup"].startswith("≥ ")


def test_section_checks_and_panels(tmp_path):
    runs, curves = sweep(dims=(16, 4))
    meta = SweepMeta.from_runs(runs)
    sec = batch_section(runs, meta, tmp_path, figure_name="bs.png", n_boot=200, curves=curves)
    md = sec.markdown
    assert md.count("### task.dim=") == 2 and md.index("task.dim=4") < md.index("task.dim=16")
    assert "| fixed stalls (no run reaches opt/gap<=0.001) | 3 of 3 censored | yes |" in md
    assert "| osgd reaches ε ≥ 10× sooner than shuffle |" in md
    osgd_line = next(line for line in md.splitlines() if line.startswith("| osgd reaches"))
    spec_line = next(line for line in md.splitlines() if line.startswith("| spectral reaches"))
    assert osgd_line.endswith("| yes |") and spec_line.endswith("| no |")          # 12.5× vs 2.5×
    full_line = next(line for line in md.splitlines() if line.startswith("| full and all_batches"))
    assert full_line.endswith("| yes |")
    assert (tmp_path / "bs.png").stat().st_size > 0


def test_write_report_reads_runs_and_curves_from_parquet(tmp_path):
    runs, curves = sweep()
    write_parts(runs.drop(columns="_tau"), tmp_path, "runs", n_parts=2)
    write_parts(curves, tmp_path, "curves", n_parts=2)
    md = write_report(tmp_path, n_boot=50).read_text()
    assert "## Sweep `syn_bs` (batch_selection)" in md and "speed-up vs shuffle" in md
    assert (tmp_path / "report" / "syn_bs_batch_selection.png").exists()
