"""analysis.needles_report on synthetic needles fine-tuning sweeps (DESIGN.md §8): every verdict reaches both
answers — the published effect present (middle dip filled, curve flatter, retention cost under the tolerance) and
absent (after = before + noise; heavy forgetting; one seed) — and the section read back from Parquet through
`write_report` (report.kind = needles)."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from analysis import write_report
from analysis.meta import SweepMeta
from analysis.needles_report import SHOWS, effect_stats, middle, needles_section, verdicts
from analysis.synthetic import write_parts

META = {"sweep": "syn_needles", "status": "ok", "report.kind": "needles", "search.kind": "grid",
        "report.curve_by": "adapter.name,adapter.rank"}
N = 6
U_CURVE = np.array([0.9, 0.6, 0.3, 0.3, 0.6, 0.9])           # lost in the middle (before)


def needles_runs(gain=0.4, cost=0.005, seeds=4, noise=0.03, ranks=(None, 2, 8), rng=0) -> pd.DataFrame:
    """Rows of a needles sweep: before = U_CURVE, after = before + gain · (1 − before)/0.7 on every position (the
    middle rises most; gain < 0: after = (1 + gain/0.5) · before, all 0 at −0.5), each ± noise per seed; retention
    LM CE 1.5 before, 1.5 · (1 + cost) after, ± 0.002."""
    g, rows = np.random.default_rng(rng), []
    for r in ranks:
        for s in range(seeds):
            b = np.clip(U_CURVE + g.normal(0, noise, N), 0, 1)
            lift = gain * (1 - U_CURVE) / 0.7 if gain >= 0 else (gain / 0.5) * U_CURVE
            a = np.clip(U_CURVE + lift + g.normal(0, noise, N), 0, 1)
            rb = 1.5 + g.normal(0, 0.002)
            row = {**META, "run_id": f"{r}-{s}", "seed": s, "adapter.name": "full" if r is None else "lora",
                   "retain/lm_ce": rb * (1 + cost) + g.normal(0, 0.002), "before/retain/lm_ce": rb,
                   "mdqa/mean": a.mean(), "before/mdqa/mean": b.mean(), "kv/acc": 0.9, "before/kv/acc": 0.1}
            if r is not None:
                row["adapter.rank"] = r
            row |= {f"mdqa/pos{i:02d}": a[i] for i in range(N)} | {f"before/mdqa/pos{i:02d}": b[i] for i in range(N)}
            rows.append(row)
    return pd.DataFrame(rows)


def section(runs, tmp_path, **kw):
    return needles_section(runs, SweepMeta.from_runs(runs), tmp_path, n_boot=300, **kw)


def test_middle_positions():
    assert middle(6) == [2, 3] and middle(20) == list(range(6, 14)) and middle(4) == [1, 2] and middle(2) == [0, 1]


def test_effect_stats_recover_known_values():
    S = 5
    before = np.tile(U_CURVE, (S, 1))
    after = before + np.array([0.0, 0.1, 0.3, 0.3, 0.1, 0.0])
    st = effect_stats(after, before, np.full(S, 1.53), np.full(S, 1.5))
    assert st["mid_gain"] == pytest.approx(0.3) and st["d_range"] == pytest.approx(-0.3)
    assert st["cost"] == pytest.approx(0.03) and st["rel_cost"] == pytest.approx(0.02)
    assert st["mid_gain_lo"] == pytest.approx(0.3) and st["mid_gain_hi"] == pytest.approx(0.3)   # no spread
    v = verdicts(st, tol=0.025)
    assert v["middle_up"] == v["flatter"] == v["little_forgetting"] == v["published_effect"] == SHOWS
    assert verdicts(st, tol=0.01)["little_forgetting"] == "does not show"


def test_effect_present_shows(tmp_path):
    sec = section(needles_runs(), tmp_path)
    md = sec.markdown
    for curve in ("adapter.name=full", "adapter.name=lora,adapter.rank=2", "adapter.name=lora,adapter.rank=8"):
        line = next(l for l in md.splitlines() if l.startswith(f"* `{curve}`"))
        assert line.count("**shows**") == 4 and "Published effect: **shows**" in line, line
    assert "The published effect shows for `adapter.name=full`, `adapter.name=lora,adapter.rank=2`" in md
    assert md.index("rank=2`") < md.index("rank=8`")                          # numeric order of ranks
    assert imread(sec.figures[0]).shape[0] > 100


def test_effect_absent_does_not_show(tmp_path):
    md = section(needles_runs(gain=0.0), tmp_path).markdown
    lines = [l for l in md.splitlines() if l.startswith("* `")]
    assert len(lines) == 3
    for line in lines:
        assert "middle positions up — **does not show**" in line and "flatter — **does not show**" in line
        assert "little forgetting — **shows**" in line and "Published effect: **does not show**" in line
    assert "does not show for any curve" in md


def test_forgetting_and_single_seed_do_not_show(tmp_path):
    md = section(needles_runs(cost=0.10), tmp_path).markdown                 # 10% worse LM loss: forgetting
    assert md.count("little forgetting — **does not show**") == 3 and "does not show for any curve" in md
    md = section(needles_runs(seeds=1, ranks=(4,)), tmp_path).markdown       # one seed: no CI, no claim
    assert "Published effect: **does not show**" in md and "fewer than 2 seeds" in md
    collapse = needles_runs(gain=-0.5)           # after ≈ 0 everywhere: flat, but by falling
    assert "flatter — **does not show**" in section(collapse, tmp_path).markdown
    tight = needles_runs(cost=0.01).assign(**{"report.theory": '{"retain_tol": 0.005}'})   # stated tolerance
    assert "little forgetting — **does not show**" in section(tight, tmp_path).markdown


def test_missing_columns_are_flagged(tmp_path):
    runs = needles_runs().drop(columns=["before/retain/lm_ce"])
    assert "no `before/retain/lm_ce` column" in section(runs, tmp_path).markdown
    runs = needles_runs().drop(columns=[f"before/mdqa/pos{i:02d}" for i in range(N)])
    assert "skipped" in section(runs, tmp_path).markdown


def test_write_report_dispatches_needles(tmp_path):
    write_parts(needles_runs(), tmp_path, "runs", n_parts=2)
    md = write_report(tmp_path, n_boot=100).read_text()
    assert "## Sweep `syn_needles` (needles)" in md and "### Does the published effect show?" in md
    assert "| curve |  | seeds | mean | pos 0 |" in md
    assert (tmp_path / "report" / "syn_needles_needles.png").exists()


def test_claims_records_both_verdicts(tmp_path):
    present = section(needles_runs(), tmp_path).claims
    absent = section(needles_runs(gain=0.0), tmp_path).claims
    assert {c["verdict"] for c in present} == {"shows"} and len(present) == 9            # 3 curves × 3 claims
    mid = [c for c in absent if c["statement"] == "middle positions go up"]
    assert len(mid) == 3 and all(c["verdict"] == "does not show" for c in mid)
    assert all(c["method"].startswith("Student-t") for c in present + absent)
