"""A capacity search over `adapter.rank` on a Hugging Face base through the real CLI and a real local Ray: the
practitioner's question ("the smallest rank at which fine-tuning *this* model reaches a target") on a tiny random
GPT-2 saved with save_pretrained (tests/conftest.py `tiny_hf`). Rows, packing and the model identity are checked;
the 2-step budget reaches no target, so every group climbs the whole ladder and the report says so."""
import pytest
from e2e import ftsweep, read_dataset

pytestmark = pytest.mark.slow

SPEC = """
name: hf_rank
model:   {{name: hf_causal_lm, path: {path}}}
task:    {{name: needles_finetune, n_dicts: 2, fmt: compact, batch_size: 2, n_eval_kv: 4, mdqa_docs: 2, n_eval: 4,
          docs_max: 2, facts_max: 1, n_retain: 2, target_acc: 0.9}}
adapter: {{name: lora, targets: [c_attn, c_fc], alpha: null, init: kaiming}}
train:   {{steps: 2, lr: 1.0e-3, eval_every: 2}}
axes:
  task.n_dicts: [2, 3]
seeds: 2
search:  {{kind: capacity, param: adapter.rank, ladder: [1, 4], success: fit/success, quorum: 0.5}}
report:  {{kind: capacity, x: task.n_dicts}}
"""


def test_capacity_search_over_lora_rank_on_an_hf_model(tmp_path, tiny_hf):
    path = tiny_hf("gpt2")
    spec = tmp_path / "hf.yaml"
    spec.write_text(SPEC.format(path=path))
    out = tmp_path / "out"
    ftsweep("run", str(spec), "--out", str(out))
    runs = read_dataset(out / "runs").to_pandas()
    assert set(runs.status) == {"ok"} and runs.run_id.is_unique
    assert set(runs["model.name"]) == {"hf_causal_lm"} and set(runs["model.path"]) == {path}
    # no probe succeeds in 2 steps: both groups climb the ladder, every probe with both seeds
    assert runs.groupby(["group", "adapter.rank"]).size().to_dict() == {
        (g, rank): 2 for g in ("task.n_dicts=2", "task.n_dicts=3") for rank in (1, 4)}
    assert set(runs["fit/success"]) == {0.0}
    by_rank = runs.groupby("adapter.rank")["n_trainable"].unique()
    assert len(by_rank[1]) == 1 and by_rank[4][0] == 4 * by_rank[1][0]       # r · Σ (fan_in + fan_out)
    assert (runs["pack_size"] == 2).all()                                     # the seeds of a probe share one base
    assert (out / "report" / "report.md").is_file()
