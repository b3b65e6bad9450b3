"""analysis.clustering_report on synthetic criterion-clustering sweeps (DESIGN.md §8): the verdict reaches both
answers — the effect present (ours above both baselines from some width on), absent (ours = a baseline + noise),
present against one baseline only, one seed (no CI) — the onset width, and the section read back from Parquet
through `write_report` (report.kind = criterion_clustering)."""
import re

import numpy as np
import pandas as pd
import pytest

from analysis import write_report
from analysis.clustering_report import clustering_section, criteria, onset
from analysis.meta import SweepMeta
from analysis.report_kinds import REPORTS
from analysis.synthetic import write_parts

META = {"sweep": "syn_ictc", "status": "ok", "report.kind": "criterion_clustering", "search.kind": "grid",
        "report.x": "model.width", "report.panel_by": "task.n_clusters"}
WIDTHS = (2, 8, 32)
CRIT = ("shape", "colour")


def runs(gain=(0.0, 0.3, 0.4), encoder_gain=None, seeds=4, ks=(3, 5), noise=0.02, rng=0) -> pd.DataFrame:
    """Rows: per width w_i, ours = 0.4 + gain[i] on every criterion, pixels = 0.4, encoder = 0.4 + encoder_gain[i]
    (default 0), each ± noise per seed; NMI = accuracy − 0.2."""
    g, out = np.random.default_rng(rng), []
    enc = encoder_gain or (0.0,) * len(WIDTHS)
    for k in ks:
        for i, w in enumerate(WIDTHS):
            for s in range(seeds):
                row = {**META, "run_id": f"{k}-{w}-{s}", "seed": s, "model.width": w, "task.n_clusters": k}
                for c in CRIT:
                    vals = {"acc": 0.4 + gain[i], "base_pixels/acc": 0.4, "base_encoder/acc": 0.4 + enc[i]}
                    for name, v in vals.items():
                        row[f"{name}/{c}"] = float(np.clip(v + g.normal(0, noise), 0, 1))
                        row[f"{name.replace('acc', 'nmi')}/{c}"] = row[f"{name}/{c}"] - 0.2
                    row[f"k/{c}"] = k
                    row[f"caption_acc/{c}"] = row[f"acc/{c}"]
                row["acc/mean"] = np.mean([row[f"acc/{c}"] for c in CRIT])
                out.append(row)
    return pd.DataFrame(out)


def section(df, tmp_path):
    return clustering_section(df, SweepMeta.from_runs(df), tmp_path, n_boot=100)


def summary_lines(md):
    """The verdict table's rows: they end with the verdict and the onset width (the per-width table's with the
    verdict)."""
    return [line for line in md.splitlines()
            if line.startswith("| task.n_clusters=") and re.search(r"\| (shows|does not show) \| [^|]+ \|$", line)]


def test_criteria_and_onset():
    assert criteria(runs()) == list(CRIT)
    assert onset([(2, False), (8, True), (32, True)]) == 8
    assert onset([(2, True), (8, False), (32, True)]) == 32         # must hold at every larger width
    assert onset([(2, True), (8, True), (32, False)]) is None
    assert onset([]) is None


def test_effect_present_shows_with_onset(tmp_path):
    sec = section(runs(), tmp_path)
    lines = summary_lines(sec.markdown)
    assert len(lines) == 4 and all("| shows | 8 |" in line for line in lines), lines     # 2 K × 2 criteria
    assert "The effect shows for 4 of 4 criterion cells" in sec.markdown
    at_2 = [c for c in sec.claims if c["x"] == "2"]
    assert at_2 and all(c["verdict"] == "does not show" for c in at_2)               # no gain at width 2
    assert all(c["verdict"] == "shows" for c in sec.claims if c["x"] != "2")
    assert len(sec.claims) == 2 * 3 * 2 * 2                                           # K × widths × criteria × baselines
    assert all(c["method"].startswith("Student-t") for c in sec.claims)


def test_effect_absent_does_not_show(tmp_path):
    md = section(runs(gain=(0.0, 0.0, 0.0)), tmp_path).markdown
    lines = summary_lines(md)
    assert len(lines) == 4 and all("| does not show | — |" in line for line in lines), lines
    assert "The effect shows for 0 of 4 criterion cells: none" in md


def test_beating_one_baseline_is_not_enough(tmp_path):
    sec = section(runs(encoder_gain=(0.0, 0.3, 0.45)), tmp_path)     # the encoder baseline is as good or better
    assert all("| does not show |" in line for line in summary_lines(sec.markdown))
    pix = [c for c in sec.claims if c["baseline"] == "base_pixels" and c["x"] == "32"]
    enc = [c for c in sec.claims if c["baseline"] == "base_encoder" and c["x"] == "32"]
    assert all(c["verdict"] == "shows" for c in pix) and all(c["verdict"] == "does not show" for c in enc)
    assert all(c["estimate"] == pytest.approx(-0.05, abs=0.03) for c in enc)


def test_one_seed_never_shows(tmp_path):
    sec = section(runs(seeds=1), tmp_path)
    assert all(c["verdict"] == "does not show" for c in sec.claims)


def test_missing_columns_are_flagged(tmp_path):
    df = runs().drop(columns=[f"base_encoder/acc/{c}" for c in CRIT])
    assert "skipped" in section(df, tmp_path).markdown


def test_report_config_checks():
    cfg = REPORTS["criterion_clustering"].Config
    cfg().check("grid", {"model.width", "task.n_clusters"})
    with pytest.raises(ValueError, match="report.x"):
        cfg().check("grid", {"task.n_clusters"})
    with pytest.raises(ValueError, match="report.theory"):
        cfg(theory={"a": 1.0}).check("grid", {"model.width"})


def test_write_report_dispatches_criterion_clustering(tmp_path):
    write_parts(runs(), tmp_path, "runs", n_parts=2)
    md = write_report(tmp_path, n_boot=100).read_text()
    assert "## Sweep `syn_ictc` (criterion_clustering)" in md and "### Does the paper's effect show?" in md
    assert "ANALOGUE" in md
    assert (tmp_path / "report" / "syn_ictc_criterion_clustering.png").exists()


def test_section_describes_the_model_of_its_rows(tmp_path):
    df = runs()
    assert "trained from scratch" in section(df, tmp_path).markdown
    df["model.name"] = "hf_vlm"
    md = section(df, tmp_path).markdown
    assert "vision-language model" in md and "trained from scratch" not in md and "pooled image tokens" in md
