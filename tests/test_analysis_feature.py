"""Report kind `feature_retrieval` (analysis/feature_report.py) on synthetic rows: the threshold width against a
hand-computed interpolation, its interval (censored seeds give none), and every verdict where the effect is present
and where it is absent — bi-encoder vs TF-IDF per query kind, strategies vs shuffle, the 95%-width claim; then the
section and the report kind's config checks."""
import numpy as np
import pandas as pd
import pytest

from analysis.feature_report import feature_section, kind_claims, kind_rows, threshold_widths, width_effect
from analysis.meta import SweepMeta
from analysis.report_kinds import report_config_class
from analysis.verdict import NOT, SHOWS

KINDS = ("keyword", "paraphrase", "situation", "contextual")


def test_threshold_width_interpolates_log_linearly():
    w = np.array([4, 8, 16, 32])
    r = np.array([[0.5, 0.9, 0.97, 0.99],        # crosses between 8 and 16
                  [0.96, 0.97, 0.98, 0.99],      # already at the smallest width
                  [0.5, 0.6, 0.7, 0.8],          # never: censored
                  [0.5, 0.96, 0.90, 0.99]])      # the first crossing counts
    got = threshold_widths(w, r, 0.95)
    assert got[0] == pytest.approx(2 ** (3 + (0.95 - 0.9) / 0.07))
    assert got[1] == 4 and np.isnan(got[2]) and got[3] == pytest.approx(2 ** (2 + 0.45 / 0.46))


def test_width_effect_geometric_mean_and_censoring():
    e = width_effect(np.array([8.0, 16.0, 32.0]))
    assert e.estimate == pytest.approx(16.0) and e.lo < 16 < e.hi
    assert width_effect(np.array([16.0, 16.0])).lo == 16.0
    c = width_effect(np.array([8.0, np.nan, 16.0]))
    assert np.isnan(c.lo) and np.isnan(c.hi)


def kind_frame(model: dict, tfidf: dict, seeds=5, noise=0.01, seed=0, **cols) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        r = {"seed": s, "status": "ok", **cols}
        for k in KINDS:
            r[f"test/mrr/{k}"] = model[k] + noise * rng.standard_normal()
            r[f"test/top1/{k}"] = r[f"test/mrr/{k}"] - 0.05
            r[f"tfidf/mrr/{k}"] = tfidf[k]
            r[f"tfidf/top1/{k}"] = tfidf[k] - 0.05
        r["test/mrr"] = np.mean([r[f"test/mrr/{k}"] for k in KINDS[:3]])
        rows.append(r)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("present", [True, False])
def test_kind_claims_present_and_absent(present):
    tf = {"keyword": 0.65, "paraphrase": 0.13, "situation": 0.05, "contextual": 0.09}
    model = ({"keyword": 0.99, "paraphrase": 0.8, "situation": 0.75, "contextual": 0.78} if present
             else {"keyword": 0.60, "paraphrase": 0.13, "situation": 0.05, "contextual": 0.09})
    claims = kind_claims(kind_rows(kind_frame(model, tf)), "syn")
    assert len(claims) == 2
    assert {c.verdict for c in claims} == {SHOWS if present else NOT}


def width_frame(ratios: dict[int, list[float]], teacher_width=128, alpha=0.0) -> pd.DataFrame:
    rows = []
    for w, rs in ratios.items():
        for s, r in enumerate(rs):
            rows.append({"seed": s, "status": "ok", "model.width": w, "task.distill_alpha": alpha,
                         "test/mrr": 0.8 * r, "distill/mrr_ratio": r, "teacher/mrr": 0.8,
                         "teacher/width": teacher_width, "task.teacher_run_id": "abc",
                         **{f"test/mrr/{k}": 0.8 * r for k in KINDS}, **{f"tfidf/mrr/{k}": 0.3 for k in KINDS}})
    return pd.DataFrame(rows)


def section(runs: pd.DataFrame, tmp_path, **meta):
    m = SweepMeta(sweep="syn", report_kind="feature_retrieval", **meta)
    return feature_section(runs, m, tmp_path, figure_name="f.png")


@pytest.mark.parametrize("present", [True, False])
def test_width_claim_present_and_absent(present, tmp_path):
    if present:      # students of width 16 already keep 95%: w* well below the teacher's 128
        ratios = {4: [0.4, 0.45, 0.42], 8: [0.8, 0.85, 0.83], 16: [0.96, 0.97, 0.955], 32: [0.99] * 3,
                  64: [0.99] * 3, 128: [1.0] * 3}
    else:            # one seed never gets there: censored, no interval
        ratios = {4: [0.4, 0.45, 0.42], 8: [0.8, 0.85, 0.83], 16: [0.96, 0.9, 0.955], 32: [0.99, 0.91, 0.99],
                  64: [0.99, 0.93, 0.99], 128: [1.0, 0.94, 1.0]}
    sec = section(width_frame(ratios), tmp_path, curve_by=("task.distill_alpha",))
    width = [c for c in sec.claims if "narrower than the teacher" in c["statement"]]
    assert len(width) == 1 and width[0]["verdict"] == (SHOWS if present else NOT)
    if present:
        assert 8 < width[0]["estimate"] < 16 and width[0]["ci_high"] < 128
    else:
        assert "seeds censored" in sec.markdown
    assert not any("TF-IDF" in c["control"] for c in sec.claims)        # students: no TF-IDF claims
    assert (tmp_path / "f.png").stat().st_size > 0


def test_width_at_the_teacher_width_does_not_show(tmp_path):
    ratios = {32: [0.8, 0.82, 0.81], 64: [0.9, 0.91, 0.9], 128: [0.96, 0.95, 0.97]}
    sec = section(width_frame(ratios, teacher_width=128), tmp_path)
    (c,) = [c for c in sec.claims if "narrower" in c["statement"]]
    assert c["verdict"] == NOT and c["estimate"] > 64


@pytest.mark.parametrize("present", [True, False])
def test_strategy_claims_and_section(present, tmp_path):
    tf = {"keyword": 0.65, "paraphrase": 0.13, "situation": 0.05, "contextual": 0.09}
    base = {"keyword": 0.99, "paraphrase": 0.8, "situation": 0.75, "contextual": 0.78}
    better = {k: v + (0.1 if present else 0.0) for k, v in base.items()}
    runs = pd.concat([kind_frame(base, tf, seed=1, **{"train.batch_selection": "shuffle"}),
                      kind_frame(better, tf, seed=2, **{"train.batch_selection": "spectral"})], ignore_index=True)
    runs["task.teacher_run_id"] = ""
    sec = section(runs, tmp_path)
    (c,) = [c for c in sec.claims if c["control"].startswith("shuffle")]
    assert c["verdict"] == (SHOWS if present else NOT)
    tfidf = [c for c in sec.claims if "TF-IDF" in c["control"]]
    assert len(tfidf) == 4 and all(c["verdict"] == SHOWS for c in tfidf if "contextual" in c["statement"])
    assert "### Batch selection" in sec.markdown and "ANALOGUE" in sec.markdown


def test_report_config_checks():
    cls = report_config_class("feature_retrieval")
    cols = {"task.teacher_run_id", "model.width"}
    cls(theory={"keep": 0.9}).check("grid", cols)
    for theory, msg in (({"keep": 1.5}, "keep"), ({"margin": 0.1}, "unknown key")):
        with pytest.raises(ValueError, match=msg):
            cls(theory=theory).check("grid", cols)
    with pytest.raises(ValueError, match="report.curve_by"):
        cls(curve_by=["task.nope"]).check("grid", cols)


@pytest.mark.parametrize("present", [True, False])
def test_distillation_against_the_hard_label_control(present, tmp_path):
    ratios = {8: [0.80, 0.85, 0.83], 32: [0.96, 0.97, 0.955]}
    kd = width_frame(ratios, alpha=0.0)
    hard = width_frame({w: [r - (0.05 if present else -0.02 * (i % 2)) for i, r in enumerate(rs)]
                        for w, rs in ratios.items()}, alpha=1.0)
    sec = section(pd.concat([kd, hard], ignore_index=True), tmp_path, curve_by=("task.distill_alpha",))
    cl = [c for c in sec.claims if "hard-label students" in c["statement"]]
    assert len(cl) == 2 and {c["verdict"] for c in cl} == {SHOWS if present else NOT}
    assert "### Distillation against the hard-label control" in sec.markdown


def test_section_names_the_encoder_of_its_rows(tmp_path):
    tf = {"keyword": 0.65, "paraphrase": 0.13, "situation": 0.05, "contextual": 0.09}
    base = {"keyword": 0.99, "paraphrase": 0.8, "situation": 0.75, "contextual": 0.78}
    runs = kind_frame(base, tf, **{"train.batch_selection": "shuffle"})
    assert "hashed-word `mlp` bi-encoder" in section(runs, tmp_path).markdown        # no model.name column: mlp
    runs["model.name"] = "hf_causal_lm"
    md = section(runs, tmp_path).markdown
    assert "Hugging Face causal LM" in md and "hashed-word" not in md
