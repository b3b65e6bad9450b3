"""The `t2i_icl` report (analysis/t2i_report.py) on synthetic rows: each verdict — θ inferred in context, accuracy
rises with k, CoT helps, fine-tuning helps, a pretrained backbone helps — reached where the effect is built in and
not where it is absent, plus the guards (missing columns, the report.theory key)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.meta import SweepMeta
from analysis.report_kinds import REPORTS
from analysis.t2i_report import t2i_section

K = 4


def rows(acc_by_k, *, seeds=(0, 1, 2), noise=0.02, rng=0, before=None, **cfg):
    """One row per seed: t2i/acc/kNN = acc_by_k[k] + noise; latent = the same; named = 1."""
    r = np.random.default_rng(rng)
    out = []
    for s in seeds:
        row = {"sweep": "t2i", "status": "ok", "seed": s, "report.kind": "t2i_icl", "t2i/chance": 0.25,
               "report.curve_by": ",".join(k for k in cfg), **cfg}
        for k, a in enumerate(acc_by_k):
            v = float(np.clip(a + noise * r.standard_normal(), 0, 1))
            row |= {f"t2i/acc/k{k:02d}": v, f"t2i/latent/k{k:02d}": v, f"t2i/named/k{k:02d}": 1.0}
            if before is not None:
                row[f"before/t2i/acc/k{k:02d}"] = float(np.clip(before[k] + noise * r.standard_normal(), 0, 1))
        out.append(row)
    return out


def section(records, tmp_path, curve_by, theory=None):
    runs = pd.DataFrame(records)
    runs["report.curve_by"] = ",".join(curve_by)
    if theory:
        runs["report.theory"] = __import__("json").dumps(theory)
    return t2i_section(runs, SweepMeta.from_runs(runs), tmp_path)


def verdicts(sec, name):
    return {c["curve"]: c["verdict"] for c in sec.claims if c["claim"] == name}


def test_rises_with_k_and_in_context_present_and_absent(tmp_path):
    rising = rows([0.25, 0.5, 0.6, 0.8, 0.9], **{"model.name": "transformer"})
    flat = rows([0.25, 0.9, 0.9, 0.9, 0.9], rng=1, **{"model.name": "mamba"})
    chance = rows([0.25] * (K + 1), rng=2, **{"model.name": "mlp"})
    sec = section(rising + flat + chance, tmp_path, ["model.name"])
    assert verdicts(sec, "rises_with_k") == {"model.name=transformer": "shows", "model.name=mamba": "does not show",
                                             "model.name=mlp": "does not show"}
    assert verdicts(sec, "in_context") == {"model.name=transformer": "shows", "model.name=mamba": "shows",
                                           "model.name=mlp": "does not show"}
    assert "Accuracy rises with k: **shows** for `model.name=transformer`" in sec.markdown
    assert sec.figures[0].exists() and "ANALOGUE" in sec.markdown


def test_k_low_from_theory_moves_the_comparison(tmp_path):
    recs = rows([0.25, 0.5, 0.9, 0.9, 0.9], **{"model.name": "transformer"})   # rises from 1 to 2, flat after
    assert verdicts(section(recs, tmp_path, ["model.name"], {"k_low": 1}), "rises_with_k") == {
        "model.name=transformer": "shows"}
    assert verdicts(section(recs, tmp_path, ["model.name"]), "rises_with_k") == {
        "model.name=transformer": "does not show"}


@pytest.mark.parametrize("gain,want", [(0.3, "shows"), (0.0, "does not show")])
def test_cot_helps_paired_by_seed(tmp_path, gain, want):
    base = [0.25, 0.5, 0.5, 0.5, 0.5]
    recs = (rows(base, **{"model.name": "transformer", "task.cot": False})
            + rows([base[0]] + [a + gain for a in base[1:]], rng=3, **{"model.name": "transformer", "task.cot": True})
            + rows(base, rng=4, **{"model.name": "mamba", "task.cot": False}))
    sec = section(recs, tmp_path, ["model.name", "task.cot"])
    cot = [c for c in sec.claims if c["claim"] == "cot"]
    assert len(cot) == 1 and cot[0]["verdict"] == want and cot[0]["control_curve"].endswith("task.cot=false")
    assert "paired" in cot[0]["control"] and ("Chain-of-thought helps: **" + want) in sec.markdown


@pytest.mark.parametrize("gain,want", [(0.3, "shows"), (0.0, "does not show")])
def test_pretrained_backbone_helps_per_rank(tmp_path, gain, want):
    """model.weights pretrained vs random, paired within each LoRA rank (the hf variant's control)."""
    base = [0.25, 0.4, 0.4, 0.4, 0.4]
    recs = []
    for i, r in enumerate((0, 4)):
        recs += rows(base, rng=10 + i, **{"model.weights": "random", "adapter.rank": r})
        recs += rows([base[0]] + [a + gain for a in base[1:]], rng=20 + i,
                     **{"model.weights": "pretrained", "adapter.rank": r})
    sec = section(recs, tmp_path, ["model.weights", "adapter.rank"])
    pre = [c for c in sec.claims if c["claim"] == "pretrained"]
    assert [(c["curve"], c["control_curve"]) for c in pre] == [
        (f"model.weights=pretrained,adapter.rank={r}", f"model.weights=random,adapter.rank={r}") for r in (0, 4)]
    assert {c["verdict"] for c in pre} == {want}
    assert f"The pretrained backbone helps: **{want}**" in sec.markdown and not verdicts(sec, "cot")


def test_cot_welch_when_seeds_differ(tmp_path):
    recs = (rows([0.25, 0.5, 0.5, 0.5, 0.5], **{"model.name": "t", "task.cot": False})
            + rows([0.25, 0.9, 0.9, 0.9, 0.9], seeds=(5, 6, 7), **{"model.name": "t", "task.cot": True}))
    (c,) = [c for c in section(recs, tmp_path, ["model.name", "task.cot"]).claims if c["claim"] == "cot"]
    assert "Welch" in c["control"] and c["verdict"] == "shows"


@pytest.mark.parametrize("after,want", [([0.25, 0.8, 0.8, 0.9, 0.9], "shows"), ([0.25, 0.3, 0.3, 0.3, 0.3],
                                                                                 "does not show")])
def test_finetune_helps_against_the_base_before(tmp_path, after, want):
    before = [0.25, 0.3, 0.3, 0.3, 0.3]
    recs = rows(after, before=before, **{"adapter.name": "lora", "adapter.rank": 4, "model.from.run_id": "abc"})
    sec = section(recs, tmp_path, ["adapter.name", "adapter.rank"])
    assert verdicts(sec, "finetune") == {"adapter.name=lora,adapter.rank=4": want}
    assert f"Fine-tuning helps: **{want}**" in sec.markdown


def test_no_finetune_claim_without_a_base_and_one_seed_never_shows(tmp_path):
    recs = rows([0.25, 0.5, 0.6, 0.8, 0.9], before=[0.2] * 5, **{"model.name": "transformer"})
    assert verdicts(section(recs, tmp_path, ["model.name"]), "finetune") == {}
    one = rows([0.25, 0.5, 0.6, 0.8, 0.9], seeds=(0,), **{"model.name": "transformer"})
    assert set(verdicts(section(one, tmp_path, ["model.name"]), "rises_with_k").values()) == {"does not show"}


def test_missing_columns_skip_with_a_flag(tmp_path):
    recs = pd.DataFrame(rows([0.25, 0.5], **{"model.name": "t"})).drop(columns=["t2i/latent/k00", "t2i/latent/k01"])
    sec = t2i_section(recs, SweepMeta.from_runs(recs), tmp_path)
    assert "skipped" in sec.markdown and not sec.claims


def test_report_config_checks_theory_keys():
    cfg = REPORTS["t2i_icl"].Config(curve_by=["model.name"], theory={"k_low": 2})
    cfg.check("grid", {"model.name"})
    with pytest.raises(ValueError, match="report.theory"):
        REPORTS["t2i_icl"].Config(theory={"k_hi": 2}).check("grid", set())
    with pytest.raises(ValueError, match="report.theory"):
        REPORTS["t2i_icl"].Config(theory={"k_low": 0}).check("grid", set())
