"""criterion_clustering on a Hugging Face vision-language model (`hf_vlm`, DESIGN.md §7), on a tiny random LLaVA built
from a config and written with save_pretrained (ftcore.models.hf_tiny.save_tiny_vlm: nothing downloaded). Oracles:
the scorer's word log-probabilities equal an unpadded forward of the HF model through its own processor, row by row;
LoRA starts at the base, trains only its factors, leaves the base bit-identical and lowers the loss; config mistakes
are one-line errors; the shipped sweep runs end to end on local Ray with the tiny model."""
from pathlib import Path

import pytest
import torch

import ftcore
from ftcore.adapters.lora import LoRA, LoraConfig
from ftcore.fit import fit
from ftcore.models.hf_vlm import HFVLM, HFVLMConfig, chat_text
from ftcore.optim import PackedAdamW
from ftcore.seeding import generators
from ftcore.tasks import images
from ftcore.tasks.criterion_clustering import VOCAB, CriterionClusteringConfig, prompt_inputs, questions

CRITERIA = ["shape", "colour"]
TARGETS = ["o_proj", "down_proj"]


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from trained_sources import tiny_vlm
    return str(tiny_vlm(tmp_path_factory.mktemp("vlm") / "llava"))


def scorer(path, side=16):
    cfg = CriterionClusteringConfig(criteria=CRITERIA, side=side)
    m = HFVLM(HFVLMConfig(path=path), 3 * side * side + len(CRITERIA) + 1, len(VOCAB), [])
    m.set_prompts(questions(CRITERIA), list(VOCAB), cfg.side)
    return m


def inputs(E, N, side=16, seed=0):
    """x (E, N, 3·S·S + P) of rendered scenes and mixed prompts (so rows of different lengths share a batch)."""
    g = torch.Generator().manual_seed(seed)
    scenes = images.sample_scenes(g, E * N)
    pix = images.render(scenes, g, side, 1.0, 0.02).reshape(E, N, 3, side, side)
    prompts = torch.arange(E * N).reshape(E, N) % (len(CRITERIA) + 1)
    return prompt_inputs(pix, prompts, len(CRITERIA) + 1), pix, prompts


def test_scores_equal_an_unpadded_forward_of_the_hf_model(tiny_vlm):
    """Oracle: each row alone through AutoProcessor(text, image) and the model, no padding; log softmax at the last
    position, read at each word's first token (which, with this tokenizer, is the whole word)."""
    m = scorer(tiny_vlm)
    x, pix, prompts = inputs(2, 3)
    got = m(x)                                                                              # (2, 3, V)
    assert got.shape == (2, 3, len(VOCAB))
    assert len({len(p) for p in m.prompts}) > 1, "the prompts should differ in length (left padding is exercised)"
    proc, vlm, tok = m.processor, m.vlm, m.processor.tokenizer
    word_ids = [tok(w, add_special_tokens=False)["input_ids"] for w in VOCAB]
    qs = questions(CRITERIA)
    with torch.no_grad():
        for e in range(2):
            for n in range(3):
                enc = proc(text=[chat_text(proc, qs[int(prompts[e, n])])], images=[pix[e, n]], return_tensors="pt",
                           do_rescale=False)
                logp = vlm(**enc).logits[0, -1].log_softmax(-1)
                want = torch.stack([logp[ids[0]] for ids in word_ids])
                torch.testing.assert_close(got[e, n].detach(), want, rtol=1e-4, atol=1e-4)


def test_image_features_are_the_pooled_image_tokens(tiny_vlm):
    m = scorer(tiny_vlm)
    _, pix, _ = inputs(1, 4)
    feats = m.image_features(pix[0])                                                        # (4, H)
    with torch.no_grad():
        enc = m.processor.image_processor(list(pix[0]), do_rescale=False, return_tensors="pt")
        tokens = m.vlm.model.get_image_features(pixel_values=enc["pixel_values"])
        tokens = getattr(tokens, "pooler_output", tokens)
    want = torch.stack([t.reshape(-1, t.shape[-1]).mean(0) for t in tokens])
    torch.testing.assert_close(feats.detach(), want, rtol=1e-5, atol=1e-5)
    assert feats.shape == (4, m.vlm.config.text_config.hidden_size)


def test_lora_starts_at_the_base_trains_only_its_factors_and_lowers_the_loss(tiny_vlm):
    """A pack of 2 members (ranks 2, 4) over one frozen tiny LLaVA: at step 0 the adapted scores equal the base's;
    12 steps of PackedAdamW on one batch of caption targets lower both members' loss; the base stays bit-identical;
    the trainable parameters are exactly the LoRA factors of the language model's o_proj / down_proj."""
    from ftcore.tasks.criterion_clustering import CriterionClustering
    base = scorer(tiny_vlm).freeze()
    before = [(p, p.detach().clone()) for p in base.parameters()]           # the same objects under the wrappers
    x, _, _ = inputs(2, 6)
    with torch.no_grad():
        ref = base(x)
    cfgs = [LoraConfig(rank=r, alpha=8.0, targets=TARGETS, init="kaiming") for r in (2, 4)]
    ad = LoRA(cfgs, base, x.shape[-1], len(VOCAB), generators([0, 1], "adapter"))
    names = [n for n, _ in ad.wrapped]
    assert names and all("language_model" in n and n.rsplit(".", 1)[1] in TARGETS for n in names)
    with torch.no_grad():
        torch.testing.assert_close(ad(x), ref)
    y = torch.softmax(torch.randn(2, 6, len(VOCAB), generator=torch.Generator().manual_seed(1)) * 3, -1)
    w = torch.full((2, 6), 1 / 6)
    params = [p for p in ad.parameters() if p.requires_grad]
    assert {id(p) for p in params} == {id(p) for p in [*ad.down.values(), *ad.up.values()]}
    opt = PackedAdamW(params, lr=[2e-2, 2e-2], weight_decay=[0.0, 0.0])
    losses = []
    for _ in range(12):
        loss = CriterionClustering.loss(ad(x), y, w)                                        # (E,)
        opt.zero_grad()
        loss.sum().backward()
        opt.step(torch.ones(2, dtype=torch.bool))
        losses.append(loss.detach())
    assert (losses[-1] < losses[0] - 0.05).all(), losses
    assert all(torch.equal(p, b) and not p.requires_grad for p, b in before)


def member(path, steps=0, adapter=None, **task):
    return ftcore.member_from_dict({
        "model": {"name": "hf_vlm", "path": path},
        "adapter": adapter or {"name": "lora", "rank": 4, "alpha": 8.0, "targets": TARGETS, "init": "kaiming"},
        "task": {"name": "criterion_clustering", "criteria": CRITERIA, "n_eval": 24, "batch_size": 8,
                 "kmeans_init": 1, **task},
        "train": {"method": "adam", "steps": steps, "lr": 1e-2, "eval_every": max(steps, 1)}, "seed": 0})


def test_fit_zero_shot_and_lora_report_every_metric(tiny_vlm):
    """Zero-shot (steps 0) and 4 LoRA steps through ftcore.fit: the task's metrics, in range, for both arms."""
    r0, r1 = fit([member(tiny_vlm, 0)])[0], fit([member(tiny_vlm, 4)])[0]
    for r in (r0, r1):
        assert r.status == "ok"
        for c in CRITERIA:
            for k in (f"acc/{c}", f"nmi/{c}", f"base_pixels/acc/{c}", f"base_encoder/acc/{c}", f"caption_acc/{c}"):
                assert 0 <= r.metrics[k] <= 1, k
    assert r0.metrics["base_encoder/acc/shape"] == r1.metrics["base_encoder/acc/shape"]   # the vision side is frozen
    assert r0.metrics["val/ce"] != r1.metrics["val/ce"]


@pytest.mark.parametrize("model, adapter, field", [
    ({"path": "/nonexistent/vlm"}, None, "model.path"),
    ({"path": ""}, None, "model.path"),
    ({"path": ""}, {"name": "lora", "rank": 4, "targets": TARGETS}, "model.path"),
    ({}, {"name": "full"}, "adapter.name"),
    ({}, {"name": "lora", "rank": 4}, "adapter.targets"),
    ({}, {"name": "lora", "rank": 4, "targets": ["fc9"]}, "adapter.targets"),
])
def test_config_errors_are_one_line(tiny_vlm, model, adapter, field):
    with pytest.raises(ValueError, match=field) as e:
        d = {"model": {"name": "hf_vlm", "path": tiny_vlm, **model},
             "adapter": adapter or {"name": "lora", "rank": 4, "targets": TARGETS},
             "task": {"name": "criterion_clustering"}, "train": {"method": "adam", "steps": 0}, "seed": 0}
        ftcore.member_from_dict(d)
    assert "\n" not in str(e.value)


def test_a_text_only_model_or_clashing_words_are_refused(tiny_vlm, tiny_hf):
    with pytest.raises(ValueError, match="model.path") as e:
        HFVLM(HFVLMConfig(path=tiny_hf("llama")), 3 * 8 * 8 + 1, 2, []).set_prompts(["q?"], ["a", "b"], 8)
    assert "\n" not in str(e.value)
    m = HFVLM(HFVLMConfig(path=tiny_vlm), 3 * 8 * 8 + 1, 2, [])
    with pytest.raises(ValueError, match="same token"):
        m.set_prompts(["q?"], ["right", "rightmost"], 8)


def test_shipped_variants_validate_with_the_tiny_model(tiny_vlm):
    from sweeps.spec import load_checked
    root = Path(__file__).parent.parent / "sweeps"
    for variant, n in (("hf", 4), ("gpu_hf", 6)):
        _, members = load_checked(root / "criterion_clustering_hf.yaml", [f"variant={variant}", f"model.path={tiny_vlm}"])
        assert len(members) == n and {m.nested()["model"]["name"] for m in members} == {"hf_vlm"}
        assert {m.nested()["train"]["steps"] for m in members} >= {0}


def test_sweep_end_to_end_on_the_tiny_vlm(tmp_path, tiny_vlm):
    """`ftsweep run sweeps/criterion_clustering_hf.yaml model.path=<tiny>` on local Ray, shrunk (both arms, K = 3, one
    seeds, 3 LoRA steps; one actor, so transformers is imported once), then its report."""
    from e2e import ftsweep, read_dataset

    from analysis import write_report
    root, out = Path(__file__).parent.parent, tmp_path / "ictc_hf"
    ftsweep("run", str(root / "sweeps" / "criterion_clustering_hf.yaml"), f"model.path={tiny_vlm}",
            "train.steps=[0,3]", "train.eval_every=3", "task.n_clusters=[3]", "seeds=2", "execution.cpus_per_trial=2",
            "task.n_eval=24", "task.batch_size=8", "task.kmeans_init=1", "task.criteria=[shape,colour]",
            "--out", str(out), cwd=tmp_path)
    runs = read_dataset(out / "runs").to_pandas()
    assert len(runs) == 4 and set(runs["status"]) == {"ok"} and set(runs["model.name"]) == {"hf_vlm"}
    assert runs["acc/shape"].between(0, 1).all()
    md = write_report(out, n_boot=50).read_text()
    assert "ANALOGUE" in md
