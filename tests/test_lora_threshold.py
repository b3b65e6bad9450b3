"""analysis.lora_threshold / lora_report: the gradient-LoRA rank threshold against R* and the linear case's
Eckart–Young claim, on synthetic records where the effect is present and where it is absent."""
import json
import math

import numpy as np
import pytest

from analysis.lora_report import lora_threshold_section
from analysis.lora_synthetic import lora_runs
from analysis.lora_threshold import seed_thresholds, selected_rows, threshold_from_on
from analysis.meta import SweepMeta
from analysis.verdict import NOT, SHOWS

GRID = [(8, 2, 1, 4), (8, 2, 2, 8), (8, 4, 1, 2), (8, 4, 2, 4),
        (16, 2, 1, 8), (16, 2, 2, 16), (16, 4, 1, 4), (16, 4, 2, 8)]       # (D, L, L̄, R*)


@pytest.mark.parametrize("ranks,vals,expect", [
    ([1, 2, 3, 4], [1, 1, 1e-3, 1e-3], 3),
    ([1, 2, 3, 4], [1e-3, 1, 1e-3, 1e-3], 3),          # from-on: a miss at 2 moves the threshold to 3
    ([1, 2, 3, 4], [1e-3] * 4, 1),
    ([1, 2, 3, 4], [1e-3, 1e-3, 1e-3, 1], math.nan),   # the largest rank misses: censored
    ([4, 3, 2, 1], [1e-3, 1e-3, 1, 1], 3),             # order does not matter
    ([1, 2, 3], [1e-3, float("nan"), 1e-3], 3),        # NaN (diverged) is a miss
])
def test_threshold_from_on(ranks, vals, expect):
    got = threshold_from_on(ranks, vals, 1e-2)
    assert (math.isnan(got) and math.isnan(expect)) or got == expect


def _section(runs, tmp_path):
    return lora_threshold_section(runs, SweepMeta.from_runs(runs), tmp_path)


def _verdicts(sec):
    return {(c["panel"], c["statement"].split(" (")[0]): c["verdict"] for c in sec.claims}


def test_r_star_table_over_the_grid(tmp_path):
    runs = lora_runs([(D, L, Lb, "relu", [R, R, R]) for D, L, Lb, R in GRID])
    sec = _section(runs, tmp_path)
    for D, L, Lb, R in GRID:
        assert f"| relu D={D} L={L} L̄={Lb} | train.method=adam | {R} | {R}, {R}, {R} | {R} |" in sec.markdown
    per = [c for c in sec.claims if c["panel"] != "all" and "Eckart" not in c["statement"]]
    assert len(per) == 8 and all(c["verdict"] == SHOWS for c in per)
    overall = [c for c in sec.claims if c["panel"] == "all"]
    assert overall[0]["verdict"] == SHOWS
    assert all(p.exists() for p in sec.figures)
    json.dumps(sec.claims)                                                   # records are JSON-able


PATTERNS = [  # (D, L, L̄) with R*, per-seed thresholds as offsets from R* (None: never reaches ε), verdict
    ((8, 2, 1), [0, 0, 0], SHOWS),                 # at R*
    ((8, 4, 2), [-2, -1, 0], SHOWS),               # below R*: excess 0 for every seed
    ((6, 2, 1), [1, 1, 1], NOT),                   # one rank above R*
    ((6, 3, 1), [0, 0, 2], NOT),                   # one seed needs more
    ((10, 2, 1), [None, None, None], NOT),         # never reaches ε
    ((4, 2, 1), [0, 0, None], NOT),                # one censored seed
]


def test_threshold_claim_both_verdicts(tmp_path):
    settings = []
    for (D, L, Lb), offs, _ in PATTERNS:
        r = -(-D * Lb // L)
        settings.append((D, L, Lb, "relu", [None if o is None else r + o for o in offs]))
    sec = _section(lora_runs(settings), tmp_path)
    claims = {c["panel"]: c for c in sec.claims}
    for (D, L, Lb), offs, verdict in PATTERNS:
        one = claims[f"model.activation=relu,model.width={D},model.depth={L},task.target_depth={Lb}"]
        assert one["verdict"] == verdict and one["r_star"] == -(-D * Lb // L), (D, L, Lb, one)
        if None in offs:
            assert "censored" in one["statement"] and f">{D}" in sec.markdown
    assert claims["all"]["verdict"] == NOT                                   # the conjunction fails
    only_good = lora_runs([s for s, (_, _, v) in zip(settings, PATTERNS) if v == SHOWS])
    assert [c for c in _section(only_good, tmp_path).claims if c["panel"] == "all"][0]["verdict"] == SHOWS


def test_selection_uses_the_better_lr_per_rank():
    runs = lora_runs([(8, 2, 1, "relu", [4, 4, 4])])
    sel = selected_rows(runs, x="adapter.rank", select="val/mse", cell_by=["model.width", "train.method"])
    assert set(sel[sel["train.method"] == "adam"]["train.lr"]) == {1e-2}
    th = seed_thresholds(sel, x="adapter.rank", setting_by=["model.width"], curve_by=["train.method"], eps=1e-2)
    assert list(th[th["curve"] == "train.method=adam"]["threshold"]) == [4, 4, 4]
    assert list(th[th["curve"] == "train.method=construction"]["threshold"]) == [4, 4, 4]


def test_eckart_young_claim_both_verdicts(tmp_path):
    factors = {8: (1.0, SHOWS), 12: (1.1, SHOWS), 16: (3.0, NOT)}          # D -> measured / bound, verdict
    runs = lora_runs([(D, 2, 1, "identity", [D // 2] * 3, f) for D, (f, _) in factors.items()])
    runs["test/mse"] *= np.exp(0.01 * np.sin(np.arange(len(runs))))          # seed noise: a real interval
    sec = _section(runs, tmp_path)
    ey = {c["panel"]: c for c in sec.claims if "Eckart" in c["statement"]}
    for D, (f, verdict) in factors.items():
        c = ey[f"model.activation=identity,model.width={D},model.depth=2,task.target_depth=1"]
        assert c["verdict"] == verdict and c["estimate"] == pytest.approx(f, rel=0.03)
    assert "Linear case: Eckart–Young bound" in sec.markdown
    assert "no `epsilon`" not in sec.markdown


def test_missing_epsilon_is_flagged(tmp_path):
    runs = lora_runs([(8, 2, 1, "relu", [4, 4, 4])], theory={})
    assert "no `epsilon`" in _section(runs, tmp_path).markdown
