"""Task tests of `t2i_icl` (the CoBSAT analogue, issue 18 item 1) and its fixed attribute classifier: the prompt
generator's facts (shared θ, left padding, what each text names, the cot token), the classifier's check, and the
metric against oracle generators whose right answers are known (ftcore/tasks/t2i_icl.py), and the shipped
sweeps shrunk end to end through the report section (t2i_icl, then t2i_pretrain -> variant=finetune)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

import ftcore
from analysis.meta import SweepMeta
from analysis.t2i_report import t2i_section
from ftcore.fit import build_pack
from ftcore.tasks import attribute_classifier as ac
from ftcore.tasks.images import render
from ftcore.tasks.t2i_icl import (
    COT,
    IMAGE,
    N_FLAGS,
    QUERY,
    TEXT,
    T2iIcl,
    T2iIclConfig,
    sample_prompts,
    truncate,
    word_index,
)
from sweeps.spec import load_spec
from tests.test_packed_vs_unpacked import run_sweep_in_process
from tests.trained_sources import record

SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "t2i_icl.yaml"

SMALL = {"name": "t2i_icl", "k_max": 3, "batch_size": 4, "n_eval": 12}


def members(seeds=(1, 2), **task):
    return [ftcore.member_from_dict({"model": {"name": "transformer", "n_embd": 16, "n_layer": 1, "n_head": 2,
                                               "n_positions": 16},
                                     "adapter": {"name": "full"}, "task": {**SMALL, **task}, "seed": s})
            for s in seeds]


def checker(cfg):
    return ac.classifier((cfg.named, cfg.latent), cfg.n_values(), cfg.fixed(), cfg.side, cfg.jitter, cfg.noise)


def split(cfg, tok):
    V, D, _ = cfg.dims()
    return tok[..., :V], tok[..., V:V + D], tok[..., V + D:]


@pytest.mark.parametrize("named,latent", [("shape", "colour"), ("colour", "shape")])
def test_demonstrations_share_the_latent_and_texts_name_one_attribute(named, latent):
    cfg = T2iIclConfig(named=named, latent=latent, k_max=4)
    p = sample_prompts(cfg, torch.Generator().manual_seed(0), 16, 4)
    words, pix, flags = split(cfg, p.tokens)
    K, side = cfg.k_max, cfg.side
    demo_imgs = pix[:, 1:2 * K:2].reshape(16 * K, 3, side, side)
    got = checker(cfg).predict(demo_imgs)
    assert torch.equal(got[latent].view(16, K), p.latent[:, None].expand(16, K))     # every demo shows θ
    q = words[:, 2 * K]
    assert torch.equal(q.argmax(-1), word_index(named, p.named)) and torch.equal(q.sum(-1), torch.ones(16))
    assert bool((words[:, 0:2 * K:2].sum(-1) == 1).all())                            # demo texts: one word
    assert bool((flags[:, 0:2 * K + 1:2, TEXT] == 1).all()) and bool((flags[:, 1:2 * K:2, IMAGE] == 1).all())
    assert bool((flags[:, 2 * K, QUERY] == 1).all()) and flags[..., QUERY].sum() == 16
    target_class = checker(cfg).predict(p.target.view(16, 3, side, side))
    assert torch.equal(target_class[latent], p.latent) and torch.equal(target_class[named], p.named)


def test_left_padding_places_the_last_k_demonstrations_before_the_query():
    cfg = T2iIclConfig(k_max=4)
    k = torch.tensor([0, 1, 3, 4])
    p = sample_prompts(cfg, torch.Generator().manual_seed(1), 4, k)
    for i, ki in enumerate(k.tolist()):
        pad = 2 * (cfg.k_max - ki)
        assert bool((p.tokens[i, :pad] == 0).all())
        assert bool((p.tokens[i, pad:].abs().sum(-1) > 0).all())
    trunc = truncate(p.tokens, 1, cfg.k_max)
    assert bool((trunc[3, :6] == 0).all()) and torch.equal(trunc[3, 6:], p.tokens[3, 6:])
    drawn = sample_prompts(cfg, torch.Generator().manual_seed(2), 64)                # k ~ U{0..K}
    n_pad = (drawn.tokens.abs().sum(-1) == 0).sum(-1)
    assert set((n_pad // 2).tolist()) == set(range(cfg.k_max + 1))


def test_modes_caption_and_given_name_the_latent_and_cot_carries_theta():
    gen = lambda: torch.Generator().manual_seed(3)                                   # noqa: E731
    cap = T2iIclConfig(mode="caption", k_max=3, cot=True)
    p = sample_prompts(cap, gen(), 32, 3)
    words, _, flags = split(cap, p.tokens)
    assert bool((words[:, 0:7:2].sum(-1) == 2).all())                                # every text names both
    demo_latent = checker(cap).predict(p.tokens[:, 1:6:2, cap.dims()[0]:-N_FLAGS].reshape(96, 3, 16, 16))
    assert len(set(demo_latent["colour"].tolist())) > 1                             # caption: no shared θ
    assert torch.equal(words[:, -1].argmax(-1), word_index("colour", p.latent)) and bool((flags[:, -1, COT] == 1).all())
    given = sample_prompts(T2iIclConfig(mode="given", k_max=3), gen(), 32, 3)
    gw, _, _ = split(cap, given.tokens)
    assert bool((gw[:, 6].sum(-1) == 2).all()) and bool((gw[:, 0:6:2].sum(-1) == 1).all())


def test_classifier_meets_its_bar_is_cached_and_raises_below_it(monkeypatch):
    cfg = T2iIclConfig()
    c = checker(cfg)
    assert min(c.accuracy.values()) >= ac.ACC_BAR and checker(cfg) is c
    monkeypatch.setattr(ac, "ACC_BAR", 1.01)
    monkeypatch.setattr(ac, "N_TRAIN", 200)
    monkeypatch.setattr(ac, "STEPS", 5)
    with pytest.raises(RuntimeError, match="below its bar"):
        ac.classifier(("shape", "colour"), {"shape": 2, "colour": 2}, cfg.fixed(), 8, 0.0, 0.0)


def oracle(task, wrong_latent=False, own_word=False):
    """A model that draws the query's named value with θ (or θ + 1 mod n) — θ from the truth, or (own_word) from
    the word at the cot token, which it emits as (θ + 1 mod n) at the query when wrong_latent."""
    c0 = task.cfgs[0]
    V, D, T = c0.dims()

    def model(tokens):
        E, P = tokens.shape[:2]
        named = (tokens[..., -1 - int(c0.cot), :V].argmax(-1) - word_index(c0.named, torch.tensor(0)))
        theta = (task.eval_latent + int(wrong_latent)) % c0.n_latent
        if own_word:
            theta = tokens[..., -1, :V].argmax(-1) - word_index(c0.latent, torch.tensor(0))
        scenes = {a: torch.full((E * P,), v) for a, v in c0.fixed().items()}
        scenes[c0.named], scenes[c0.latent] = named.reshape(-1), theta.reshape(-1).clamp(0, c0.n_latent - 1)
        img = render(scenes, torch.Generator().manual_seed(0), c0.side, 0.0, 0.0).reshape(E, P, D)
        out = torch.zeros(E, P, T, D + V)
        out[..., -1, :D] = img
        if c0.cot:
            out[..., -2, D:] = torch.nn.functional.one_hot(word_index(c0.latent, theta_word(task, wrong_latent)), V)
        return out
    return model


def theta_word(task, wrong):
    return (task.eval_latent + int(wrong)) % task.cfgs[0].n_latent


@pytest.mark.parametrize("cot", [False, True])
def test_metric_on_oracle_generators(cot):
    task, _ = build_pack(members(cot=cot), torch.float32)
    K = task.cfgs[0].k_max
    right = task.evaluate(oracle(task))
    for k in range(K + 1):
        assert right[f"t2i/acc/k{k:02d}"].tolist() == [1.0, 1.0]
    task.before = None
    wrong = task.evaluate(oracle(task, wrong_latent=True))
    for k in range(K + 1):
        assert wrong[f"t2i/named/k{k:02d}"].tolist() == [1.0, 1.0]
        assert wrong[f"t2i/latent/k{k:02d}"].tolist() == wrong[f"t2i/acc/k{k:02d}"].tolist() == [0.0, 0.0]
    assert wrong["before/t2i/acc/mean"].tolist() == [0.0, 0.0] and wrong["t2i/chance"].tolist() == [0.25, 0.25]
    if cot:                 # the image follows the word the model emitted, fed back at the cot token
        assert right["cot/acc/k03"].tolist() == [1.0, 1.0] and wrong["cot/acc/k03"].tolist() == [0.0, 0.0]
        task.before = None
        fed = task.evaluate(oracle(task, wrong_latent=True, own_word=True))
        assert fed["t2i/latent/k02"].tolist() == [0.0, 0.0] and fed["t2i/named/k02"].tolist() == [1.0, 1.0]
        task.before = None
        fed = task.evaluate(oracle(task, own_word=True))
        assert fed["t2i/acc/k02"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("cot", [False, True])
def test_loss_is_image_mse_plus_cot_ce(cot):
    task, model = build_pack(members(cot=cot), torch.float32)
    x, y, w = task.batch(0)
    D = y.shape[-1] - 1
    pred = torch.randn(*x.shape[:3], D + task.cfgs[0].dims()[0])
    mse = (pred[..., -1, :D] - y[..., :D]).square().mean(-1)
    want = mse
    if cot:
        logp = pred[..., -2, D:].log_softmax(-1)
        want = mse - logp.gather(-1, y[..., D:].long()).squeeze(-1)
    torch.testing.assert_close(task.loss(pred, y, w), (w * want).sum(-1))
    pred[..., -1, :D] = y[..., :D]
    if not cot:
        assert task.loss(pred, y, w).abs().max() == 0


@pytest.mark.parametrize("over,field", [({"mode": "x"}, "task.mode"), ({"latent": "shape"}, "task.latent"),
                                        ({"n_latent": 9}, "task.n_latent"), ({"k_max": 0}, "task.k_max"),
                                        ({"named": "size"}, "task.named")])
def test_config_mistakes_are_one_line(over, field):
    with pytest.raises(ValueError, match=field) as e:
        T2iIclConfig(**over)
    assert "\n" not in str(e.value)


def test_check_source_requires_the_same_attributes():
    T2iIcl.check_source(T2iIclConfig(), T2iIclConfig(mode="caption"))
    with pytest.raises(ValueError, match="task.latent"):
        T2iIcl.check_source(T2iIclConfig(named="shape", latent="texture", n_latent=3), T2iIclConfig())


TINY = ["train.steps=2", "train.eval_every=2", "task.k_max=2", "task.n_eval=4", "task.batch_size=2",
        "model.n_embd=8"]


def test_shipped_sweeps_shrunk_end_to_end(tmp_path):
    """sweeps/t2i_icl.yaml through the planner and packs (2 steps, K = 2) and its report section; then the
    fine-tuning remedy: a recorded 2-step t2i_pretrain run as the `model.from` base of variant=finetune."""
    rows, _ = run_sweep_in_process(load_spec(SWEEP, [*TINY, "seeds=2"]), tmp_path / "run")
    runs = pd.DataFrame(list(rows.values()))
    assert len(runs) == 8 and set(runs["status"]) == {"ok"}
    assert {"t2i/acc/k02", "cot/acc/k02", "before/t2i/acc/k00", "classifier/acc"} <= set(runs.columns)
    sec = t2i_section(runs, SweepMeta.from_runs(runs), tmp_path)
    kinds = [c["claim"] for c in sec.claims]
    assert kinds.count("cot") == 2 and kinds.count("rises_with_k") == 4 and "finetune" not in kinds
    assert all(c["verdict"] in ("shows", "does not show") for c in sec.claims)

    pre = record("t2i_pretrain.yaml", tmp_path / "pre", TINY)
    ft = load_spec(SWEEP, ["variant=finetune", f"model.from.dir={pre}", *TINY, "seeds=2"])
    rows, _ = run_sweep_in_process(ft, tmp_path / "ft")
    runs = pd.DataFrame(list(rows.values()))
    assert len(runs) == 8 and runs["model.from.run_id"].nunique() == 1
    sec = t2i_section(runs, SweepMeta.from_runs(runs), tmp_path)
    assert [c["claim"] for c in sec.claims].count("finetune") == 4
