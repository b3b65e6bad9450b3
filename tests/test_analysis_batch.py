"""analysis.batch_report on synthetic batch-selection sweeps with known answers (issue 14 item 4): gap curves
gap_s(t) = G0·e^{−t/τ_s} + floor_s and compute c_s pair-forwards per step, per arm. Every speed-up, compute,
area, stall and equivalence claim is shown to reach both verdicts, and a control censored by its floor
decides nothing — the former "≥ 10×" at ε = 0.003 no longer passes by construction."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import write_report
from analysis.batch_measures import Rule, area, parse_rules, run_measures, tail_level
from analysis.batch_report import arm_labels, batch_section, panel_claims, speed_claims
from analysis.meta import SweepMeta
from analysis.synthetic import write_parts
from analysis.verdict import NOT, SHOWS

G0, EVERY, STEPS = 2.0, 10, 8000
RULES = "opt/gap<=0.1; opt/gap<=0.01; opt/gap<=0.003"
TAU = {"shuffle": 500.0, "osgd": 40.0, "spectral": 200.0, "full": 60.0, "all_batches": 150.0, "fixed": 30.0}
FLOOR = {"fixed": 0.1, "shuffle": 1e-4}
COST = {"shuffle": 2, "fixed": 2, "osgd": 10, "spectral": 4, "full": 8, "all_batches": 8}
META = {"sweep": "syn_bs", "status": "ok", "report.kind": "batch_selection", "report.select": RULES,
        "search.kind": "grid"}


def sweep(taus=TAU, floors=FLOOR, cost=COST, dims=(16,), seeds=3, jitter=0.05, loss_shift=None, rng=0,
          schedules=None):
    """Runs and curves of a synthetic sweep; `schedules`: {arm label: (strategy, schedule)} extra arms."""
    g, runs, curves = np.random.default_rng(rng), [], []
    arms = {s: (s, "constant") for s in taus}
    arms.update(schedules or {})
    for d in dims:
        for name, (s, sched) in arms.items():
            for seed in range(seeds):
                t_s = taus[name] * math.exp(g.normal(0, jitter))
                fl = floors.get(name, 0.0) * math.exp(g.normal(0, jitter))
                rid = f"{name}-{d}-{seed}"
                steps = np.arange(0, STEPS + 1, EVERY)
                gap = G0 * np.exp(-steps / t_s) + fl
                loss = 2.3464 + gap + (loss_shift or {}).get(name, 0.0)
                curves += [{"run_id": rid, "step": int(t), "opt/gap": float(v), "full/loss": float(lo),
                            "cost/forwards": float(cost[s] * t)} for t, v, lo in zip(steps, gap, loss)]
                runs.append({**META, "run_id": rid, "seed": seed, "train.batch_selection": s,
                             "train.schedule": sched, "task.n": 8, "task.batch_size": 2, "task.dim": d,
                             "opt/gap": float(gap[-1]), "full/loss": float(loss[-1])})
    return pd.DataFrame(runs), pd.DataFrame(curves)


def claims_of(runs, curves, rules=RULES):
    rules = parse_rules(rules)
    runs = runs.assign(_arm=arm_labels(runs))
    m = run_measures(runs, curves, rules, "cost/forwards").merge(runs[["run_id", "_arm"]], on="run_id")
    claims, _ = panel_claims(m, runs, rules, "")
    return {c.statement: c for c in claims}


def find(claims, *words):
    hits = [c for s, c in claims.items() if all(w in s for w in words)]
    assert len(hits) == 1, (words, [s for s in claims if all(w in s for w in words[:1])])
    return hits[0]


def test_rules_parse_sorted_and_refuse_mixtures():
    assert [r.eps for r in parse_rules(RULES)] == [0.1, 0.01, 0.003]                  # easiest target first
    assert [r.eps for r in parse_rules("test/retrieval>=0.6; test/retrieval>=0.4")] == [0.4, 0.6]
    with pytest.raises(ValueError, match="one metric"):
        parse_rules("opt/gap<=0.1; full/loss<=2.4")
    with pytest.raises(ValueError, match="report.select"):
        parse_rules("opt/gap=<0.1")


def test_measures_are_the_exact_hits_area_and_floor():
    runs, curves = sweep(jitter=0.0)
    rules = parse_rules(RULES)
    m = run_measures(runs, curves, rules, "cost/forwards").set_index("run_id")
    r = m.loc["osgd-16-0"]
    for i, rule in enumerate(rules):
        want = math.ceil(TAU["osgd"] * math.log(G0 / rule.eps) / EVERY) * EVERY
        assert r[f"hit_{i}"] == want and not r[f"censored_{i}"] and r[f"cost_{i}"] == COST["osgd"] * want
    assert m.loc["fixed-16-0", "censored_1"] and m.loc["fixed-16-0", "hit_1"] == STEPS
    assert m.loc["fixed-16-0", "tail"] == pytest.approx(0.1, rel=1e-6)                # the floor
    assert m.loc["shuffle-16-0", "tail"] == pytest.approx(1e-4, rel=0.05)          # + the transient
    st = np.arange(0, 101, 10.0)
    assert area(st, np.full(11, 0.01), True) == pytest.approx(-2.0)
    assert tail_level(st, np.r_[np.ones(8), np.full(3, 1e-3)], True) == pytest.approx(1e-3)


def test_fast_arms_show_and_the_order_of_magnitude_is_exact():
    """osgd 12.5× sooner (τ 500/40), 2.5× less compute (12.5 · 2/10); spectral 2.5× sooner, not 10×."""
    c = claims_of(*sweep())
    for eps in ("0.1", "0.01", "0.003"):
        s = find(c, f"osgd reaches opt/gap<={eps} sooner than shuffle (steps)")
        assert s.verdict == SHOWS and s.effect.estimate == pytest.approx(12.5, rel=0.1)
        assert find(c, f"osgd reaches opt/gap<={eps} ≥ 10× sooner").verdict == SHOWS
        assert find(c, f"spectral reaches opt/gap<={eps} ≥ 10× sooner").verdict == NOT
        assert find(c, f"spectral reaches opt/gap<={eps} sooner").verdict == SHOWS
        k = find(c, f"osgd reaches opt/gap<={eps} with less compute")
        assert k.verdict == SHOWS and k.effect.estimate == pytest.approx(2.5, rel=0.1)
    assert find(c, "osgd's area").verdict == SHOWS and find(c, "fixed stalls").verdict == SHOWS
    assert find(c, "full and all_batches").verdict == SHOWS


def test_no_speedup_and_costly_selection_do_not_show():
    """osgd as slow as shuffle (and the same floor): no speed-up, no smaller area; spectral 3× sooner but
    5× the forwards per step: not cheaper."""
    c = claims_of(*sweep(taus={**TAU, "osgd": 500.0, "spectral": 170.0}, floors={**FLOOR, "osgd": 1e-4},
                         cost={**COST, "spectral": 10}))
    for eps in ("0.1", "0.01", "0.003"):
        assert find(c, f"osgd reaches opt/gap<={eps} sooner").verdict == NOT
        assert find(c, f"spectral reaches opt/gap<={eps} sooner").verdict == SHOWS
        assert find(c, f"spectral reaches opt/gap<={eps} with less compute").verdict == NOT
    assert find(c, "osgd's area").verdict == NOT


def test_a_control_at_its_floor_decides_nothing():
    """shuffle plateaus at 0.004 (constant lr): at ε = 0.003 it is censored in every run and osgd's ratio is
    ≥ 8000/hit — far above 10 — yet undecidable; at ε = 0.01 (beyond the floor) the 12.5× is decided."""
    c = claims_of(*sweep(floors={**FLOOR, "shuffle": 0.004}))
    low = find(c, "osgd reaches opt/gap<=0.003 ≥ 10× sooner")
    assert low.effect.lo > 10 and low.verdict == NOT and "lower bound" in low.statement
    assert "3 of 3 not" in low.rule
    assert find(c, "osgd reaches opt/gap<=0.003 with less compute").verdict == NOT
    assert find(c, "osgd reaches opt/gap<=0.01 ≥ 10× sooner").verdict == SHOWS


def test_a_decaying_lr_control_is_its_own_arm():
    """shuffle+cosine reaches 0.003 (no floor): decided against it while undecidable against constant lr."""
    runs, curves = sweep(floors={**FLOOR, "shuffle": 0.004}, taus={**TAU, "shuffle+cosine": 500.0},
                         schedules={"shuffle+cosine": ("shuffle", "cosine")})
    assert set(arm_labels(runs)) == {*TAU, "shuffle+cosine"}
    c = claims_of(runs, curves)
    assert find(c, "osgd reaches opt/gap<=0.003 sooner than shuffle+cosine").verdict == SHOWS
    assert find(c, "osgd reaches opt/gap<=0.003 sooner than shuffle (steps)").verdict == NOT


def test_a_censored_control_or_arm_never_shows():
    """A censored control run (its floor not beyond ε) leaves only a lower bound — here > 10× — and no verdict;
    with every control run settled beyond ε the same arm shows; a censored arm run never shows."""
    rule = Rule("opt/gap", "<=", 0.01)
    m = pd.DataFrame({"_arm": ["shuffle"] * 3 + ["osgd"] * 3, "hit_0": [8000, 6000, 7000, 100, 110, 90],
                      "censored_0": [True, False, False, False, False, False], "cost_0": np.nan,
                      "tail": [0.02, 0.005, 0.006, 1e-5, 1e-5, 1e-5]})
    c = speed_claims(m, "osgd", "shuffle", 0, rule, "")
    assert c["10×"].effect.lo > 10 and c["10×"].verdict == NOT and c["steps"].verdict == NOT
    assert "1 of 3 shuffle runs censored" in c["steps"].statement and "1 of 3 not" in c["steps"].rule
    assert "compute" not in c                                                          # no cost column
    m.loc[0, ["hit_0", "censored_0", "tail"]] = [5000, False, 0.004]
    assert speed_claims(m, "osgd", "shuffle", 0, rule, "")["10×"].verdict == SHOWS
    m.loc[5, "censored_0"] = True
    assert speed_claims(m, "osgd", "shuffle", 0, rule, "")["steps"].verdict == NOT


def test_stall_and_equivalence_can_fail():
    c = claims_of(*sweep(floors={"shuffle": 1e-4}, loss_shift={"all_batches": 0.05}))
    assert find(c, "fixed stalls").verdict == NOT                                       # fixed converges
    assert find(c, "full and all_batches").verdict == NOT                               # 0.05 apart


def retrieval_sweep(final, sd, seeds=3, rng=0):
    """Digits-like records: retrieval r(t) = R − (R − 0.15) e^{−t/300} + seed noise, higher is better."""
    g, runs, curves = np.random.default_rng(rng), [], []
    meta = {**META, "report.select": "test/retrieval>=0.4; test/retrieval>=0.5", "report.y": "full/loss"}
    for s, r_inf in final.items():
        for seed in range(seeds):
            r = r_inf + g.normal(0, sd)
            rid = f"{s}-{seed}"
            steps = np.arange(0, 3001, 50)
            ret = r - (r - 0.15) * np.exp(-steps / 300)
            curves += [{"run_id": rid, "step": int(t), "test/retrieval": float(v), "full/loss": 5 - 2 * float(v),
                        "cost/forwards": float(32 * t)} for t, v in zip(steps, ret)]
            runs.append({**meta, "run_id": rid, "seed": seed, "train.batch_selection": s, "task.n": 512,
                         "task.batch_size": 32, "test/retrieval": float(ret[-1]), "full/loss": 5 - 2 * float(ret[-1])})
    return pd.DataFrame(runs), pd.DataFrame(curves)


def test_digits_differences_are_claims_with_both_verdicts():
    runs, curves = retrieval_sweep({"shuffle": 0.62, "spectral": 0.64, "fixed": 0.6}, sd=0.02)
    c = claims_of(runs, curves, "test/retrieval>=0.4; test/retrieval>=0.5")
    assert find(c, "spectral's final test/retrieval is higher").verdict == NOT         # 0.64 vs 0.62, 3 seeds
    assert find(c, "spectral's final full/loss is lower").verdict == NOT
    runs, curves = retrieval_sweep({"shuffle": 0.62, "spectral": 0.75}, sd=0.005)
    c = claims_of(runs, curves, "test/retrieval>=0.4; test/retrieval>=0.5")
    assert find(c, "spectral's final test/retrieval is higher").verdict == SHOWS
    assert find(c, "spectral's final full/loss is lower").verdict == SHOWS
    assert not any("10×" in s for s in c)                                               # gap rules only


def test_section_panels_and_claims_json(tmp_path):
    runs, curves = sweep(dims=(16, 4), floors={**FLOOR, "shuffle": 0.004})
    sec = batch_section(runs, SweepMeta.from_runs(runs), tmp_path, figure_name="bs.png", curves=curves)
    md = sec.markdown
    assert md.count("### task.dim=") == 2 and md.index("task.dim=4") < md.index("task.dim=16")
    assert "no: 3 of 3 (undecidable)" in md and "claims show" in md
    assert {c["panel"] for c in sec.claims} == {"task.dim=4", "task.dim=16"}
    assert all(c["verdict"] in (SHOWS, NOT) for c in sec.claims)
    assert (tmp_path / "bs.png").stat().st_size > 0 and (tmp_path / "bs_compute.png").stat().st_size > 0


def test_write_report_reads_runs_and_curves_from_parquet(tmp_path):
    runs, curves = sweep()
    write_parts(runs, tmp_path, "runs", n_parts=2)
    write_parts(curves, tmp_path, "curves", n_parts=2)
    md = write_report(tmp_path, n_boot=50).read_text()
    assert "## Sweep `syn_bs` (batch_selection)" in md and "speed-up (compute)" in md
    assert (tmp_path / "report" / "syn_bs_batch_selection.png").exists()
    claims = json.loads((tmp_path / "report" / "claims.json").read_text())
    assert any(c["verdict"] == SHOWS for c in claims) and any(c["verdict"] == NOT for c in claims)
