"""`feature_retrieval` with a Hugging Face causal LM as the encoder (`model.output: hidden`, `task.dim: 0`; issue 18
item 3's `variant=hf` / `gpu_hf` of sweeps/feature_retrieval.yaml) on a tiny random GPT-2 saved with save_pretrained
(tests/conftest.py `tiny_hf`; nothing downloaded): the embedding is the last hidden state at each text's appended EOS
(oracle: a separate plain forward of the same model on the unpadded text), the loss pools like evaluation, LoRA
trains while the base stays frozen, the config mistakes are one line, and one tiny `ftsweep run` of the variant
whose output a student sweep then refuses as a teacher (exit 2, one line)."""
from pathlib import Path

import pytest
import torch

from ftcore.batching import symmetric_infonce
from ftcore.config import member_from_dict
from ftcore.fit import build_pack
from ftcore.tokenizers import tokenizer_for
from sweeps.cli import main

REPO = Path(__file__).resolve().parents[1]
LORA = {"name": "lora", "targets": ["c_attn", "c_proj", "c_fc"], "rank": 4, "alpha": 8}
TARGETS = {"gpt2": LORA["targets"], "llama": ["q_proj", "v_proj", "down_proj"]}


def member(path, seed=0, task=None, model=None, adapter=LORA):
    return member_from_dict({
        "model": {"name": "hf_causal_lm", "path": path, "output": "hidden", **(model or {})}, "adapter": dict(adapter),
        "task": {"name": "feature_retrieval", "n": 16, "dim": 0, "batch_size": 8, **(task or {})},
        "train": {"steps": 4, "eval_every": 2, "lr": 3e-3, "early_stop": False}, "seed": seed})


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pack(request, tiny_hf):
    path, adapter = tiny_hf(request.param), {**LORA, "targets": TARGETS[request.param]}
    return path, *build_pack([member(path, s, adapter=adapter) for s in (0, 1)], torch.float32)


def test_embedding_is_the_hidden_state_at_the_appended_eos(pack):
    from transformers import AutoModelForCausalLM
    path, task, model = pack
    lm = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = tokenizer_for(task.model_cfg)
    H = lm.get_input_embeddings().weight.shape[1]
    assert task.d == H and task.catalogue.shape[0] == 16
    assert (task.catalogue_end < task.catalogue.shape[1] - 1).any()          # some texts are padded on the right
    rows = torch.arange(5)
    with torch.no_grad():
        got = task._embed(model, task.catalogue[rows], task.catalogue_end[rows])            # (E, 5, H)
        for r in rows.tolist():
            ids = torch.tensor([tok.encode(task_text(task, r)) + [tok.eos_id]])
            assert int(task.catalogue_end[r]) == ids.shape[1] - 1
            want = lm(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]  # after the final norm
            want = torch.nn.functional.normalize(want, dim=-1)
            for e in range(2):                    # LoRA's up starts at zero: each member is the base at step 0
                torch.testing.assert_close(got[e, r], want, atol=1e-5, rtol=1e-5)
            wrong = lm(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -2]
            assert float(torch.nn.functional.cosine_similarity(wrong, want, dim=0)) < 0.999


def task_text(task, r: int) -> str:
    from ftcore.tasks import feature_catalogue as fc
    return fc.build_catalogue(task.n, task.cfgs[0].catalogue_seed).texts[r]


def test_loss_pools_each_row_at_its_eos_like_evaluation(pack):
    _, task, model = pack
    idx = torch.randperm(16, generator=torch.Generator().manual_seed(0))[:16].reshape(1, 2, 8).expand(2, 2, 8)
    pos = task._draw(idx, [torch.Generator().manual_seed(s) for s in (0, 1)])
    x, y, w = task.batch_of(idx, pos)
    assert x.shape[:2] == (2, 32) and x.shape[2] == int(y[..., 3].max()) + 1      # trimmed to the batch's longest
    with torch.no_grad():
        loss = task.loss(model(x), y, w)
        p = task._embed(model, x, y[..., 3]).reshape(2, 2, 2, 8, -1)               # (E, M, side, B, H)
        want = symmetric_infonce(p[:, :, 0] @ p[:, :, 1].transpose(-1, -2) / task.tau).mean(-1)
    torch.testing.assert_close(loss, want)


def test_lora_trains_the_frozen_base_does_not(tiny_hf):
    path = tiny_hf("gpt2")
    task, model = build_pack([member(path, s) for s in (0, 1)], torch.float32)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    # per member a (down, up) pair at each of the 2 layers' c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj; the rest frozen
    assert {n.split(".")[0] for n in trainable} == {"down", "up"} and len(trainable) == 2 * 2 * 4
    assert frozen and all(n.startswith("base.lm.") for n in frozen)
    opt = torch.optim.Adam(trainable.values(), lr=3e-3)
    idx = torch.arange(16).reshape(1, 2, 8).expand(2, 2, 8)
    x, y, w = task.batch_of(idx, task._draw(idx, [torch.Generator().manual_seed(s) for s in (0, 1)]))
    losses = []
    for _ in range(15):
        loss = task.loss(model(x), y, w)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        losses.append(loss.detach())
    assert (losses[-1] < 0.8 * losses[0]).all(), (losses[0], losses[-1])
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert all(p.abs().max() > 0 for n, p in trainable.items() if n.startswith("up."))     # up started at zero


@pytest.mark.parametrize("field,model,task", [
    ("model.output", {"output": "logits"}, {}),
    ("task.dim", {}, {"dim": 8}),
])
def test_hf_config_mistakes_name_the_field(field, model, task, tiny_hf):
    with pytest.raises(ValueError, match=field):
        member(tiny_hf("gpt2"), model=model, task=task)


def test_mlp_needs_a_positive_dim():
    with pytest.raises(ValueError, match="task.dim"):
        member_from_dict({"model": {"name": "mlp"}, "adapter": {"name": "full"},
                          "task": {"name": "feature_retrieval", "n": 16, "dim": 0, "batch_size": 8}})


@pytest.mark.slow
def test_hf_variant_runs_and_cannot_teach(tiny_hf, tmp_path, capsys):
    """sweeps/feature_retrieval.yaml variant=hf on the tiny GPT-2 through the CLI and a real local Ray: rows name
    the model, the embedding size is H, every run is ok; its output as stage 3's teacher is a one-line exit 2."""
    from e2e import ftsweep, read_dataset
    path, out = tiny_hf("gpt2"), tmp_path / "hf"
    ftsweep("run", str(REPO / "sweeps" / "feature_retrieval.yaml"), "variant=hf", f"model.path={path}", "task.n=16",
            "task.batch_size=8", "train.steps=4", "train.eval_every=2", "seeds=2", "train.batch_selection=[shuffle]",
            "--out", str(out), cwd=tmp_path)
    rows = read_dataset(out / "runs").to_pylist()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    assert {(r["model.name"], r["model.path"], r["model.output"], r["task.dim"]) for r in rows} == {
        ("hf_causal_lm", path, "hidden", 0)}
    assert all(0 < r["test/mrr"] <= 1 and r["tfidf/mrr"] == rows[0]["tfidf/mrr"] for r in rows)
    assert (out / "report" / "report.md").is_file()
    code = main(["validate", str(REPO / "sweeps" / "feature_distill.yaml"), f"task.teacher.dir={out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Hugging Face" in err[0], err
