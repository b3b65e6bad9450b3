"""LoRA on a shared Hugging Face base (multi-LoRA training, DESIGN.md §7) against peft, the convention's owner.

Tiny GPT-2 (Conv1D projections) and Llama (nn.Linear, grouped-query attention) models with random weights are
written with save_pretrained and loaded through `hf_causal_lm` (nothing downloaded). Oracles: peft's LoRA on the
same base, init and data gives the same loss curve; a pack of E mixed-rank members equals E one-member packs;
the shared base is bit-identical after training; `n_trainable` equals peft's count; merging reproduces the
adapted model.
"""
from pathlib import Path

import pytest
import torch

import ftcore
from ftcore.adapters.lora import LoRA, LoraConfig
from ftcore.models.hf_causal_lm import HFCausalLM, HFCausalLMConfig
from ftcore.optim import PackedAdamW
from ftcore.seeding import generators
from ftcore.tokenizers import tokenizer_for

peft = pytest.importorskip("peft")

ARCHS = {"gpt2": ["c_attn", "mlp.c_fc"], "llama": ["q_proj", "v_proj", "down_proj"]}


def adapted(path, ranks, targets, alpha=8.0, seeds=None, dropout=0.0):
    cfg = HFCausalLMConfig(path=path)
    V = tokenizer_for(cfg).vocab_size
    base = HFCausalLM(cfg, V, V, [])
    cfgs = [LoraConfig(rank=r, alpha=alpha, targets=targets, init="kaiming", dropout=dropout) for r in ranks]
    LoRA.check_compatible(cfgs[0], cfg, (V, V))
    return LoRA(cfgs, base, V, V, generators(seeds or list(range(len(ranks))), "adapter")), V


def lm_loss(logits, ids):
    """Next-token cross-entropy per member: logits (E, B, T, V), ids (E, B, T) -> (E,)."""
    E = logits.shape[0]
    return torch.nn.functional.cross_entropy(logits[:, :, :-1].reshape(-1, logits.shape[-1]),
                                             ids[:, :, 1:].reshape(-1), reduction="none").view(E, -1).mean(1)


def data(V, E, steps, B=2, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (E, B, T), generator=g) for _ in range(steps)]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_same_loss_curve_as_peft(arch, tiny_hf):
    """One member: our adapter + PackedAdamW vs peft's LoraModel + torch AdamW, same init (ours copied into peft's
    lora_A/lora_B), same batches: the same loss at every step, and the same count of trainable parameters."""
    path, targets, r, lr = tiny_hf(arch), ARCHS[arch], 4, 5e-3
    ours, V = adapted(path, [r], targets, alpha=16.0)
    lm = HFCausalLM(HFCausalLMConfig(path=path), V, V, []).lm      # a second copy of the same base for peft
    pm = peft.get_peft_model(lm, peft.LoraConfig(r=r, lora_alpha=16.0, target_modules=targets, lora_dropout=0.0))
    with torch.no_grad():
        for name, w in ours.wrapped:
            layer = pm.base_model.model.get_submodule(name[len("lm."):])
            layer.lora_A["default"].weight.copy_(ours.down[w.key][0].t())          # (r, in)
            layer.lora_B["default"].weight.copy_(ours.up[w.key][0].t())            # (out, r) zeros
    assert pm.get_nb_trainable_parameters()[0] == ours.n_trainable()[0]
    opt = PackedAdamW([p for p in ours.parameters() if p.requires_grad], lr=[lr], weight_decay=[0.01])
    popt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    ours_curve, peft_curve = [], []
    for ids in data(V, 1, 1) * 12:                              # one batch, fitted: the curve has to fall
        loss = lm_loss(ours(ids.float()), ids)
        opt.zero_grad()
        loss.sum().backward()
        opt.step(torch.ones(1, dtype=torch.bool))
        ploss = lm_loss(pm(input_ids=ids[0]).logits[None], ids)
        popt.zero_grad()
        ploss.sum().backward()
        popt.step()
        ours_curve.append(loss.item())
        peft_curve.append(ploss.item())
    torch.testing.assert_close(torch.tensor(ours_curve), torch.tensor(peft_curve), rtol=1e-4, atol=1e-5)
    assert ours_curve[-1] < ours_curve[0] - 0.05, "the curve should move"


@pytest.mark.parametrize("arch", list(ARCHS))
def test_mixed_rank_pack_equals_single_member_packs(arch, tiny_hf):
    """E = 3 members of ranks 1, 4, 2 over one base copy == each member alone (outputs, gradients), and the base is
    bit-identical after training steps."""
    path, targets, ranks, seeds = tiny_hf(arch), ARCHS[arch], [1, 4, 2], [5, 6, 7]
    pack, V = adapted(path, ranks, targets, seeds=seeds)
    before = {k: v.clone() for k, v in pack.base.lm.state_dict().items()}
    ids = data(V, 3, 1)[0]
    opt = PackedAdamW([p for p in pack.parameters() if p.requires_grad], lr=[1e-2] * 3, weight_decay=[0.0] * 3)
    for _ in range(2):                      # trained factors (up != 0), so the low-rank path matters
        opt.zero_grad()
        lm_loss(pack(ids.float()), ids).sum().backward()
        opt.step(torch.ones(3, dtype=torch.bool))
    pack.zero_grad()
    out = pack(ids.float())
    lm_loss(out, ids).sum().backward()
    for e, (r, s) in enumerate(zip(ranks, seeds)):
        alone, _ = adapted(path, [r], targets, seeds=[s])
        with torch.no_grad():
            for k in alone.down:
                alone.down[k].copy_(pack.down[k][e:e + 1, :, :r])
                alone.up[k].copy_(pack.up[k][e:e + 1, :r])
        a_out = alone(ids[e:e + 1].float())
        torch.testing.assert_close(out[e], a_out[0].detach(), rtol=1e-5, atol=1e-5)
        lm_loss(a_out, ids[e:e + 1]).sum().backward()
        for k in alone.down:
            torch.testing.assert_close(pack.down[k].grad[e, :, :r], alone.down[k].grad[0], rtol=1e-4, atol=1e-6)
            assert bool((pack.down[k].grad[e, :, r:] == 0).all()), "padded rank columns get a gradient"
    after = pack.base.lm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the shared base changed"
    assert pack.n_trainable() == [r * pack.n_trainable()[0] // ranks[0] for r in ranks]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_init_equals_base_and_merge_round_trip(arch, tiny_hf):
    path, targets = tiny_hf(arch), ARCHS[arch]
    one, V = adapted(path, [3], targets)
    ids = data(V, 1, 1)[0]
    with torch.no_grad():
        base_out = one.base.lm(input_ids=ids[0]).logits
        assert torch.equal(one(ids.float())[0], base_out)
        for k in one.up:
            one.up[k].normal_(0, 0.1)
        adapted_out = one(ids.float())[0]
        merged = one.merged_base()
        torch.testing.assert_close(merged(ids.float())[0], adapted_out, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(adapted_out, base_out)


def test_dropout_on_the_low_rank_path_only(tiny_hf):
    """peft's lora_dropout: active in train mode on the low-rank input only (the frozen base stays in eval)."""
    one, V = adapted(tiny_hf("gpt2"), [4], ARCHS["gpt2"], dropout=0.5)
    ids = data(V, 1, 1)[0]
    with torch.no_grad():
        for k in one.up:
            one.up[k].normal_(0, 0.1)
        one.train()
        assert not one.base.lm.training
        a, b = one(ids.float()), one(ids.float())
        assert not torch.equal(a, b)
        one.eval()
        assert torch.equal(one(ids.float()), one(ids.float()))


def test_config_errors_name_the_field(tiny_hf, tmp_path):
    path = tiny_hf("gpt2")
    with pytest.raises(ValueError, match=r"^model\.path: must be a local directory with config\.json"):
        HFCausalLMConfig(path=str(tmp_path / "nothing"))
    cfg = HFCausalLMConfig(path=path)
    with pytest.raises(ValueError, match=r"^adapter\.targets: must be patterns matching linear modules.*got 'q_proj'"):
        LoRA.check_compatible(LoraConfig(rank=2, targets=["q_proj"]), cfg, (300, 300))
    with pytest.raises(ValueError, match=r"^adapter\.targets: must be module-name patterns for an HF model"):
        LoRA.check_compatible(LoraConfig(rank=2), cfg, (300, 300))
    with pytest.raises(ValueError, match=r"^adapter\.dropout"):
        LoraConfig(dropout=1.0)


@pytest.mark.parametrize("aname,fields,arch", [("full", {}, "llama"), ("bias_only", {}, "gpt2"),
                                               ("last_layers", {"n_layers": 1}, "gpt2")])
def test_delta_adapters_on_an_hf_base_train_one_member_per_pack(aname, fields, arch, tiny_hf):
    """full / bias_only / last_layers tune base parameters through zero deltas; an HF base has no member axis,
    so such members never share a pack (their pack keys differ), the base stays bit-identical, and the merged
    base reproduces the tuned model."""
    path = tiny_hf(arch)
    cfg = HFCausalLMConfig(path=path)
    V = tokenizer_for(cfg).vocab_size
    acfg = ftcore.ADAPTERS[aname].Config(name=aname, **fields)
    ftcore.ADAPTERS[aname].check_compatible(acfg, cfg, (V, V))
    assert ftcore.ADAPTERS[aname].one_member_per_pack(cfg) and not LoRA.one_member_per_pack(cfg)
    model = ftcore.ADAPTERS[aname]([acfg], HFCausalLM(cfg, V, V, []), V, V, generators([0], "adapter"))
    before = {k: v.clone() for k, v in model.base.lm.state_dict().items()}
    ids = data(V, 1, 1)[0]
    with torch.no_grad():
        assert torch.equal(model(ids.float()), model.base(ids.float()))
    opt = PackedAdamW([p for p in model.parameters() if p.requires_grad], lr=[1e-2], weight_decay=[0.0])
    losses = []
    for _ in range(3):
        loss = lm_loss(model(ids.float()), ids)
        opt.zero_grad()
        loss.sum().backward()
        opt.step(torch.ones(1, dtype=torch.bool))
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(before[k], v) for k, v in model.base.lm.state_dict().items())
    tuned = dict(model.tuned(model.base))
    assert model.n_trainable() == [sum(p.numel() for p in tuned.values())]
    with torch.no_grad():
        torch.testing.assert_close(model.merged_base()(ids.float()), model(ids.float()), rtol=1e-4, atol=1e-4)


def test_bias_only_refuses_a_bias_free_hf_model(tiny_hf):
    cfg = HFCausalLMConfig(path=tiny_hf("llama"))
    with pytest.raises(ValueError, match=r"^adapter\.name: must be an adapter other than bias_only for an HF model"):
        ftcore.ADAPTERS["bias_only"].check_compatible(ftcore.ADAPTERS["bias_only"].Config(), cfg, (300, 300))


def test_an_incomplete_model_directory_is_a_config_error(tiny_hf, tmp_path):
    """What save_pretrained did not write is refused before anything runs, naming model.path: no weights, a
    broken config.json, no tokenizer (transformers alone would return an empty tokenizer: every text -> [])."""
    import shutil

    from ftcore.models.hf_causal_lm import hf_config, load_tokenizer
    src = Path(tiny_hf("gpt2"))
    bare = tmp_path / "config_only"
    bare.mkdir()
    shutil.copy(src / "config.json", bare / "config.json")
    with pytest.raises(ValueError, match=r"^model\.path: must be a directory with the model's weights"):
        HFCausalLMConfig(path=str(bare))
    no_tok = tmp_path / "no_tokenizer"
    shutil.copytree(src, no_tok)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / f).unlink()
    with pytest.raises(ValueError, match=r"^model\.path: must be a directory with a tokenizer that encodes text"):
        load_tokenizer(str(no_tok))
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    (broken / "config.json").write_text('{"broken": ')
    with pytest.raises(ValueError, match=r"^model\.path: cannot load the config of"):
        hf_config(str(broken))
