"""`hf_backbone` (ftcore/models/hf_backbone.py): a Hugging Face transformer stack, frozen and shared by a pack,
between members' trained read-in/read-out — the model of sweeps/t2i_icl.yaml's `hf` variant (issue 18).

Tiny random GPT-2 and Llama models written with save_pretrained (ftcore.models.hf_tiny; nothing downloaded).
Oracles: the forward equals read-in -> an independently loaded `AutoModel` fed `inputs_embeds` -> read-out; a
mixed-rank pack equals one-member packs (outputs and gradients); training moves the read-in/read-out and LoRA
factors only (the stack bit-identical); `n_trainable` counts them; `weights: random` is one fixed draw, not the
saved weights; a task's words start the read-in at the model's token embeddings; config mistakes are one-line
errors; a recorded run as a `model.from` base; the shipped variants run end to end through their report.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import ftcore
from analysis.meta import SweepMeta
from analysis.t2i_report import t2i_section
from ftcore.fit import build_pack, fit
from ftcore.models.hf_backbone import HFBackbone, HFBackboneConfig
from ftcore.models.hf_tiny import save_tiny
from ftcore.seeding import generators

TARGETS = {"gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"]}
TASK = {"name": "t2i_icl", "k_max": 2, "batch_size": 3, "n_eval": 4}
SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "t2i_icl.yaml"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """saved(arch) -> a tiny model saved with seed 1 (seed 0 is also `weights: random`'s draw: a model saved with
    it would equal its own control)."""
    built = {}

    def make(arch: str = "gpt2"):
        if arch not in built:
            built[arch] = str(save_tiny(tmp_path_factory.mktemp(f"bb_{arch}"), arch, n_embd=32, n_layer=2,
                                        n_head=4, vocab_size=300, seed=1))
        return built[arch]
    return make


def members(path, arch, ranks, seeds=None, weights="pretrained", steps=3):
    seeds = seeds or list(range(1, len(ranks) + 1))
    return [ftcore.member_from_dict({
        "model": {"name": "hf_backbone", "path": path, "weights": weights},
        "adapter": {"name": "lora", "rank": r, "alpha": 4.0, "targets": TARGETS[arch]},
        "task": TASK, "train": {"steps": steps, "lr": 1e-2, "eval_every": steps, "early_stop": False},
        "seed": s}) for r, s in zip(ranks, seeds)]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_forward_is_read_in_stack_read_out(saved, arch):
    from transformers import AutoModel
    path = saved(arch)
    model = HFBackbone(HFBackboneConfig(path=path), 7, 5, generators([3, 4], "base")).freeze()
    stack = AutoModel.from_pretrained(path).eval()
    x = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(0))               # (E, B, T, F)
    with torch.no_grad():
        got = model(x)
        for e in range(2):
            h = x[e] @ model.read_in.weight[e] + model.read_in.bias[e]                       # (B, T, H)
            h = stack(inputs_embeds=h).last_hidden_state
            torch.testing.assert_close(got[e], h @ model.read_out.weight[e] + model.read_out.bias[e],
                                       rtol=1e-4, atol=1e-5)
    assert not any(p.requires_grad for p in model.lm.parameters())
    assert all(p.requires_grad for m in (model.read_in, model.read_out) for p in m.parameters())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_mixed_rank_pack_equals_one_member_packs(saved, arch):
    """Outputs and every gradient of member e in a pack of ranks (0, 2, 4) == its own one-member pack: the read-in
    and read-out are the member's own (its seed's draw), the stack is shared."""
    ms = members(saved(arch), arch, [0, 2, 4])
    task, model = build_pack(ms, torch.float32)
    with torch.no_grad():                 # non-zero up factors: LoRA paths active
        for n, p in model.named_parameters():
            if n.startswith("up."):
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(p.numel()))
    x, y, w = task.batch(0)
    loss = task.loss(model(x), y, w)
    loss.sum().backward()
    for e, m in enumerate(ms):
        t1, one = build_pack([m], torch.float32)
        with torch.no_grad():
            for (n, p), (_, q) in zip(model.named_parameters(), one.named_parameters()):
                if n.startswith("up."):
                    q.copy_(p[e:e + 1][(slice(None),) + tuple(slice(0, n) for n in q.shape[1:])])
        x1, y1, w1 = t1.batch(0)
        torch.testing.assert_close(x1, x[e:e + 1])
        l1 = t1.loss(one(x1), y1, w1)
        torch.testing.assert_close(l1, loss[e:e + 1].detach(), rtol=1e-5, atol=1e-6)
        l1.sum().backward()
        for (n, p), (_, q) in zip(model.named_parameters(), one.named_parameters()):
            if q.requires_grad and q.grad is not None:
                want = p.grad[e:e + 1][tuple(slice(0, s) for s in q.shape)]
                torch.testing.assert_close(q.grad, want, rtol=1e-3, atol=1e-5, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_training_moves_the_projection_and_factors_only(saved, arch):
    """fit's own step (ftcore.fit.train_step with its optimizer) on a pack of ranks (2, 0): the read-in/read-out and
    the up factors move, the shared stack stays bit-identical; `n_trainable` = the projection + r · Σ(in + out)."""
    from ftcore.fit import make_optimizer, train_step
    ms = members(saved(arch), arch, [2, 0])
    task, model = build_pack(ms, torch.float32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, ms)
    active, diverged = torch.ones(2, dtype=torch.bool), torch.full((2,), -1)
    for step in range(3):
        train_step(task, model, opt, task.batch(step), active, diverged, step, 1.0)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {"base.read_in.weight", "base.read_out.weight"} <= moved and any(n.startswith("up.") for n in moved)
    assert not any(n.startswith("base.lm.") for n in moved) and active.all()
    H = model.base.lm.get_input_embeddings().weight.shape[1]
    own = (model.base.read_in.fan_in + 1) * H + (H + 1) * model.base.read_out.fan_out
    per_rank = sum(w.fan_in + w.fan_out for _, w in model.wrapped)
    assert model.n_trainable() == [own + 2 * per_rank, own]
    res = fit(ms)
    assert [r.status for r in res] == ["ok", "ok"] and [r.n_trainable for r in res] == [own + 2 * per_rank, own]


def test_random_weights_are_one_fixed_draw(saved):
    path = saved("gpt2")
    rng = torch.get_rng_state()
    a, b = (HFBackbone(HFBackboneConfig(path=path, weights="random"), 4, 3, generators([1], "base")) for _ in "ab")
    assert torch.equal(torch.get_rng_state(), rng)                                    # the caller's RNG untouched
    p = HFBackbone(HFBackboneConfig(path=path), 4, 3, generators([1], "base"))
    sa, sp = a.lm.state_dict(), p.lm.state_dict()
    assert all(torch.equal(v, b.lm.state_dict()[k]) for k, v in sa.items())
    assert any(not torch.equal(v, sp[k]) for k, v in sa.items() if v.dtype.is_floating_point)
    assert torch.equal(a.read_in.weight, p.read_in.weight)                            # the member's draw either way


def test_config_mistakes_are_one_line(saved, tmp_path):
    path = saved("gpt2")
    cases = [({"weights": "zeros"}, TASK, "model.weights"),
             ({}, {**TASK, "k_max": 600}, "model.path"),      # 2·600 + 1 tokens > its 1024 positions
             ]
    for model, task, field in cases:
        with pytest.raises(ValueError) as e:
            ftcore.member_from_dict({"model": {"name": "hf_backbone", "path": path, **model}, "task": task,
                                     "adapter": {"name": "lora", "rank": 2, "targets": ["c_attn"]}})
        assert str(e.value).startswith(field) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="^adapter.targets"):
        ftcore.member_from_dict({"model": {"name": "hf_backbone", "path": path}, "task": TASK,
                                 "adapter": {"name": "lora", "rank": 2}})
    # a directory whose weights lack a layer of the stack its config describes
    broken = Path(save_tiny(tmp_path / "one", "gpt2", n_embd=32, n_layer=1, n_head=4, vocab_size=300))
    cfg = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**cfg, "n_layer": 2}))
    with pytest.raises(ValueError, match=r"^model.path: .* lacks weights of the model's transformer stack \(h\.1\."):
        HFBackbone(HFBackboneConfig(path=str(broken)), 4, 3, generators([1], "base"))


def test_shipped_hf_variant_end_to_end(saved, tmp_path):
    """sweeps/t2i_icl.yaml variant=hf on a saved GPT-2, shrunk: both weight arms x ranks 0/4/16, the report's
    pretrained-vs-random claim per rank."""
    from sweeps.spec import load_spec
    from tests.test_packed_vs_unpacked import run_sweep_in_process
    spec = load_spec(str(SWEEP), ["variant=hf", f"model.path={saved('gpt2')}", "train.steps=2", "train.eval_every=2",
                                  "task.k_max=2", "task.n_eval=4", "task.batch_size=2", "seeds=2"])
    rows, _ = run_sweep_in_process(spec, tmp_path / "run")
    runs = pd.DataFrame(list(rows.values()))
    assert len(runs) == 12 and set(runs["status"]) == {"ok"}
    assert set(runs["model.weights"]) == {"pretrained", "random"} and set(runs["adapter.rank"]) == {0, 4, 16}
    sec = t2i_section(runs, SweepMeta.from_runs(runs), tmp_path)
    pre = [c for c in sec.claims if c["claim"] == "pretrained"]
    assert len(pre) == 3 and all(c["control_curve"].startswith("model.weights=random") for c in pre)


def test_shipped_hf_finetune_remedy_end_to_end(saved, tmp_path):
    """The fine-tuning remedy on a saved GPT-2: `t2i_pretrain.yaml variant=hf` recorded (2 steps), then
    `t2i_icl.yaml variant=hf_finetune` over it: ranks 0/4/16, each with the report's before-vs-after claim."""
    from sweeps.spec import load_spec
    from tests.test_packed_vs_unpacked import run_sweep_in_process
    from tests.trained_sources import T2I_TINY, record
    pre = record("t2i_pretrain.yaml", tmp_path / "pre", ["variant=hf", f"model.path={saved('gpt2')}", *T2I_TINY])
    spec = load_spec(str(SWEEP), ["variant=hf_finetune", f"model.from.dir={pre}", *T2I_TINY, "seeds=2"])
    rows, _ = run_sweep_in_process(spec, tmp_path / "ft")
    runs = pd.DataFrame(list(rows.values()))
    assert len(runs) == 6 and set(runs["status"]) == {"ok"} and runs["model.from.run_id"].nunique() == 1
    assert set(runs["model.path"]) == {saved("gpt2")}
    sec = t2i_section(runs, SweepMeta.from_runs(runs), tmp_path)
    assert sorted(c["curve"] for c in sec.claims if c["claim"] == "finetune") == [
        f"adapter.rank={r}" for r in (0, 16, 4)]


def test_a_recorded_run_as_the_base_of_a_pack(saved, tmp_path):
    """`model.from` an hf_backbone run (LoRA rank 2, train.save: final): a pack of two members over it starts as the
    source's adapted model (its LoRA merged into the stack, its read-in/read-out copied to each member) and trains."""
    from ftcore.checkpoint import from_bytes, load_state
    from tests.trained_sources import record_pack
    src = {"model": {"name": "hf_backbone", "path": saved("gpt2")},
           "adapter": {"name": "lora", "rank": 2, "alpha": 4.0, "targets": ["c_attn"]}, "task": TASK,
           "train": {"steps": 3, "lr": 1e-2, "eval_every": 3, "early_stop": False, "save": "final"}, "seed": 1}
    (row,) = record_pack(tmp_path / "src", [src])
    meta, state = from_bytes((tmp_path / "src" / row["checkpoint"]).read_bytes())
    _, source = build_pack([ftcore.member_from_dict(json.loads(meta["config"]))], torch.float32)
    load_state(source, state)
    ms = [ftcore.member_from_dict({**src, "model": {**src["model"], "from": {"dir": str(tmp_path / "src"),
                                                                              "run_id": row["run_id"]}},
                                   "adapter": {**src["adapter"], "rank": r}, "train": {**src["train"], "save": "none"},
                                   "seed": s}) for r, s in ((0, 1), (4, 2))]
    task, model = build_pack(ms, torch.float32)
    x = task.batch(0)[0]
    with torch.no_grad():
        want = torch.cat([source(x[e:e + 1]) for e in range(2)])
        torch.testing.assert_close(model(x), want, rtol=1e-4, atol=1e-5)
    assert model.base.read_in.weight.shape[0] == 2 and model.base.read_in.weight.requires_grad
    assert [r.status for r in fit(ms)] == ["ok", "ok"]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_task_words_enter_as_the_models_own_tokens(saved, arch):
    """t2i_icl's text features (images.vocabulary()) start the read-in at the model's token embeddings of each word
    (the mean over its tokens, every member alike); the pixel and flag rows keep the member's own draw; a task
    without words (icl_regression) leaves the read-in as drawn."""
    from ftcore.models.hf_causal_lm import load_tokenizer
    from ftcore.tasks.images import vocabulary
    path = saved(arch)
    _, model = build_pack(members(path, arch, [0, 2]), torch.float32)
    w = model.base.read_in.weight                                                    # (E, F, H)
    emb, tok = model.base.lm.get_input_embeddings().weight, load_tokenizer(path)
    for i, word in enumerate(vocabulary()):
        want = emb[tok(" " + word, add_special_tokens=False)["input_ids"]].mean(0)
        torch.testing.assert_close(w[:, i], want.expand(2, -1))
    drawn = HFBackbone(HFBackboneConfig(path=path), w.shape[1], 3, generators([1, 2], "base")).read_in.weight
    V = len(vocabulary())
    assert torch.equal(w[:, V:], drawn[:, V:]) and not torch.equal(w[:, :V], drawn[:, :V])
    icl = {"name": "icl_regression", "dim": 3, "n_points": 5, "batch_size": 4, "n_eval": 4}
    ms = [ftcore.member_from_dict({**m.nested(), "task": icl}) for m in members(path, arch, [0])]
    task, plain = build_pack(ms, torch.float32)
    F, O = task.io_dims(ms[0].task, ms[0].model)
    assert torch.equal(plain.base.read_in.weight, HFBackbone(HFBackboneConfig(path=path), F, O,
                                                             generators([1], "base")).read_in.weight)


def test_words_need_the_models_tokenizer(saved, tmp_path):
    """A directory without tokenizer files cannot embed the task's words: a one-line error naming model.path, at
    config time."""
    import shutil
    bare = tmp_path / "bare"
    shutil.copytree(saved("gpt2"), bare)
    for f in bare.iterdir():
        if "token" in f.name or f.name in ("vocab.json", "merges.txt"):
            f.unlink()
    with pytest.raises(ValueError) as e:
        ftcore.member_from_dict({"model": {"name": "hf_backbone", "path": str(bare)}, "task": TASK,
                                 "adapter": {"name": "lora", "rank": 2, "targets": ["c_attn"]}})
    assert str(e.value).startswith("model.path") and "tokenizer" in str(e.value) and "\n" not in str(e.value)


def test_step_cost_benchmark_runs(saved, capsys):
    """benchmarks/bench_hf_backbone.py (the CPU cost quoted in sweeps/t2i_icl.yaml) on the tiny model: it runs."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_hf_backbone
    assert bench_hf_backbone.seconds_per_step(saved("gpt2"), 2, 1) > 0
