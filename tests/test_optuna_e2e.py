"""A multi-objective Optuna sweep end to end on a real local Ray, through the real CLI: LoRA rank (an int, per-member:
the ranks of a batch share packs through the padding masks) and lr searched against (val/mse, n_trainable), both
min; the Parquet rows read back, the journal's study reopened, and the report's Pareto section and figure checked
against Optuna's own `best_trials`. One Ray start and two rounds of one pack each: kept small."""
import math
from pathlib import Path

import optuna
import pytest
from e2e import ftsweep, read_dataset

from analysis.pareto_report import fronts, objectives, proposals

pytestmark = pytest.mark.slow

TINY_PARETO = """
name: tiny_pareto
model:   {name: mlp, width: 4, depth: 2, last_activation: false}
task:    {name: lora_teacher, target_depth: 1, n_val: 100, n_test: 100, batch_size: 64}
adapter: {name: lora, rank: 1, tune_bias: true}
train:   {steps: 200, eval_every: 50, early_stop: false, schedule: constant}
seeds: 1
search:
  kind: optuna
  params:
    adapter.rank: {type: int, low: 1, high: 4}
    train.lr: {low: 1.0e-3, high: 1.0e-1, log: true}
  metrics: [val/mse, n_trainable]
  directions: [min, min]
  n_trials: 6
  batch: 3
"""


def test_two_objective_rank_search_end_to_end(tmp_path: Path):
    spec = tmp_path / "tiny_pareto.yaml"
    spec.write_text(TINY_PARETO)
    out = tmp_path / "out"
    ftsweep("run", str(spec), "--out", str(out), cwd=tmp_path)

    runs = read_dataset(out / "runs").to_pandas()
    assert len(runs) == 6 and set(runs["status"]) == {"ok"} and runs["optuna.trial"].notna().all()
    assert set(runs["search.directions"]) == {"min,min"} and set(runs["search.metrics"]) == {"val/mse,n_trainable"}
    assert runs["adapter.rank"].between(1, 4).all() and runs["adapter.rank"].nunique() > 1
    # a round's proposals of different ranks trained in one pack (ranks are per-member)
    packed = runs.groupby("trial_id")["adapter.rank"].nunique()
    assert (packed > 1).any(), runs[["trial_id", "adapter.rank", "pack_size"]]

    backend = optuna.storages.journal.JournalFileBackend(str(out / "optuna" / "journal.log"))
    storage = optuna.storages.JournalStorage(backend)
    study = optuna.load_study(study_name="tiny_pareto:", storage=storage)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"] and len(study.trials) == 6
    by_trial = runs.set_index("optuna.trial")
    for t in study.trials:
        row = by_trial.loc[t.number]
        assert t.params["adapter.rank"] == row["adapter.rank"] and math.isclose(t.params["train.lr"], row["train.lr"])
        assert t.values == pytest.approx([row["val/mse"], row["n_trainable"]])

    objs = objectives(runs)
    done = fronts(proposals(runs, objs), objs)
    best = {t.number for t in study.best_trials}
    assert set(done.loc[done["front"], "trial"]) == best and len(best) >= 2     # 200 steps: more rank, less loss

    report = (out / "report" / "report.md").read_text()
    assert "### Pareto front over val/mse (min), n_trainable (min)" in report
    assert "![Pareto front](tiny_pareto_pareto.png)" in report
    figure = out / "report" / "tiny_pareto_pareto.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 5000
    section = report.split("### Pareto front", 1)[1]
    table = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| trial")]
    assert sorted(int(line.split("|")[1]) for line in table) == sorted(best)
