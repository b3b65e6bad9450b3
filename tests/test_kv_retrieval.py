"""`kv_retrieval` (papers.md §6): the tiny rendering and gold-position control of the generator, teacher-forcing
layout (labels by construction), stratified/uniform gold positions (χ²), determinism, metrics against oracle
and wrong "models", config checks, and a tiny fit that lowers the loss."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import ftcore
from ftcore.fit import build_pack
from ftcore.tasks.kv_retrieval import (
    KvRetrievalConfig,
    V,
    answer_scores,
    n_dicts_at,
    pos_keys,
    seq_len,
    teacher_forcing,
)
from ftcore.tasks.seq_generators import (
    EOS,
    PAD,
    decode,
    encode,
    kv_max_lengths,
    sample_kv_retrieval,
)

TASK = {"name": "kv_retrieval", "n_dicts": 4, "gold_dict_size": 2, "dict_size_min": 1, "dict_size_max": 3,
        "key_digits_min": 1, "key_digits_max": 2, "batch_size": 16, "n_eval": 22}
MODEL = {"name": "transformer", "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 96}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _members(seeds=(0, 1), train=None, **task):
    return [ftcore.member_from_dict({"model": MODEL, "adapter": {"name": "full"}, "task": {**TASK, **task},
                                     "train": train or {}, "seed": s}) for s in seeds]


_DICT = re.compile(r"\{([^{}]*)\}")


def _parse_tiny(prompt: str) -> tuple[list[dict[int, int]], int]:
    body, _, query = prompt.rpartition("?")
    dicts = [dict(tuple(int(t) for t in kv.split(":")) for kv in m.split(",")) for m in _DICT.findall(body)]
    assert "".join("{" + ",".join(f"{k}:{v}" for k, v in d.items()) + "}" for d in dicts) == body
    assert query.endswith(":")
    return dicts, int(query[:-1])


# ------------------------------------------------------------------------------------------- generator

def test_tiny_format_labels_by_parsing():
    b = sample_kv_retrieval(_gen(0), 200, n_dicts=6, fmt="tiny", gold_dict_size=2, dict_size_range=(1, 3),
                            key_digits=(1, 2), val_digits=(2, 2))
    for p in range(200):
        dicts, key = _parse_tiny(b.prompts[p])
        assert len(dicts) == 6 and key == b.gold_key[p].item()
        holders = [i for i, d in enumerate(dicts) if key in d]
        assert holders == [b.gold_position[p].item()]
        assert b.answers[p] == str(dicts[holders[0]][key]) == str(b.gold_value[p].item())
        assert sum(v == b.gold_value[p].item() for d in dicts for v in d.values()) == 1
        assert len(dicts[holders[0]]) == 2 and all(1 <= len(d) <= 3 for d in dicts)
    assert {len(str(k)) for k in b.gold_key.tolist()} == {1, 2}


@pytest.mark.parametrize("fmt", ["tiny", "compact", "no_template", "template"])
def test_max_lengths_bound_every_draw(fmt):
    args = {"n_dicts": 12, "gold_dict_size": 3, "dict_size_range": (2, 4), "key_digits": (1, 3), "val_digits": (2, 3)}
    L, A = kv_max_lengths(**args, fmt=fmt)
    b = sample_kv_retrieval(_gen(1), 300, fmt=fmt, **args)
    n_ans = (b.answer_tokens != PAD).sum(1)
    assert int(b.lengths.max()) <= L and int(n_ans.max()) <= A
    # with fixed sizes and digit counts the bound is attained (it is not a loose one)
    fixed = {"n_dicts": 12, "gold_dict_size": 3, "dict_size_range": (3, 3), "key_digits": (2, 2), "val_digits": (3, 3)}
    L, A = kv_max_lengths(**fixed, fmt=fmt)
    b = sample_kv_retrieval(_gen(1), 50, fmt=fmt, **fixed)
    assert int(b.lengths.max()) == L and int((b.answer_tokens != PAD).sum(1).max()) == A


def test_gold_position_list_and_errors():
    slots = [3, 0, 2, 2, 1]
    b = sample_kv_retrieval(_gen(2), 5, n_dicts=4, gold_position=slots, fmt="tiny")
    assert b.gold_position.tolist() == slots
    for p, s in enumerate(slots):
        dicts, key = _parse_tiny(b.prompts[p])
        assert [i for i, d in enumerate(dicts) if key in d] == [s]
    with pytest.raises(ValueError, match="gold_position"):
        sample_kv_retrieval(_gen(2), 3, n_dicts=4, gold_position=[0, 1], fmt="tiny")      # wrong length
    with pytest.raises(ValueError, match="gold_position"):
        sample_kv_retrieval(_gen(2), 2, n_dicts=4, gold_position=[0, 4], fmt="tiny")


# -------------------------------------------------------------------------------------- task: the data

def test_teacher_forcing_layout_labels_by_construction():
    cfg = KvRetrievalConfig(**{k: v for k, v in TASK.items() if k != "name"})
    b = cfg.sample(_gen(3), 40, None)
    T = seq_len(cfg)
    inp, tgt = teacher_forcing(b, T)
    assert inp.shape == tgt.shape == (40, T)
    for p in range(40):
        L = int(b.lengths[p])
        ans = encode(b.answers[p]) + [EOS]
        where = (tgt[p] >= 0).nonzero().flatten().tolist()
        assert where == list(range(L - 1, L - 1 + len(ans)))               # the answer positions only
        assert tgt[p, where].tolist() == ans
        assert decode(inp[p, :L]) == b.prompts[p]                          # the model reads the prompt ...
        assert inp[p, L:L + len(ans) - 1].tolist() == ans[:-1]             # ... then the answer, shifted by one
        assert (inp[p, L + len(ans) - 1:] == PAD).all()
        dicts, key = _parse_tiny(b.prompts[p])
        assert decode(tgt[p, where]) == str(dicts[b.gold_position[p]][key])


def test_batch_one_hot_and_determinism():
    t1, _ = build_pack(_members(), torch.float32)
    t2, _ = build_pack(_members(), torch.float32)
    x, y, w = t1.batch(0)
    assert all(torch.equal(a, b) for a, b in zip((x, y, w), t2.batch(0)))
    assert x.shape == (2, 16, seq_len(t1.cfgs[0]), V) and y.shape == x.shape[:3]
    assert torch.equal(x.sum(-1), torch.ones(x.shape[:3]))                 # one-hot (PAD is a symbol too)
    for step in (1, 2):
        for a, b in zip(t1.batch(step), t2.batch(step)):
            assert torch.equal(a, b)
    assert torch.equal(t1.eval_inp, t2.eval_inp) and torch.equal(t1.eval_tgt, t2.eval_tgt)
    assert not torch.equal(t1.eval_inp[0], t1.eval_inp[1])                 # members differ by seed


def test_curriculum_is_a_function_of_the_step():
    cfg = KvRetrievalConfig(n_dicts=5, n_dicts_start=2, n_dicts_inc=2, n_dicts_interval=10, n_eval=10)
    assert [n_dicts_at(cfg, s) for s in (0, 9, 10, 19, 20, 29, 30, 1000)] == [2, 2, 4, 4, 5, 5, 5, 5]
    assert n_dicts_at(KvRetrievalConfig(n_dicts=5, n_dicts_start=2, n_eval=10), 0) == 5     # interval 0: off
    # the training prompts really have n(s) dicts, shapes stay those of n_dicts, and a member's data does
    # not depend on its pack partner
    t1, _ = build_pack(_members(n_dicts_start=1, n_dicts_inc=1, n_dicts_interval=3), torch.float32)
    t2, _ = build_pack(_members(seeds=(1,), n_dicts_start=1, n_dicts_inc=1, n_dicts_interval=3), torch.float32)
    T = seq_len(t1.cfgs[0])
    for step in (0, 3, 6, 9, 50):
        x, y, _ = t1.batch(step)
        assert x.shape == (2, 16, T, V) and y.shape == (2, 16, T)
        inp = x.argmax(-1)                                                   # (E, B, T) ids
        for p in range(16):
            L = int((y[0, p] >= 0).nonzero()[0]) + 1                         # prompt length: first answer slot + 1
            dicts, _ = _parse_tiny(decode(inp[0, p, :L]))
            assert len(dicts) == min(1 + step // 3, 4)
        assert torch.equal(t2.batch(step)[0][0], x[1])                       # seed 1 alone == seed 1 in the pack
    with pytest.raises(ValueError, match="task.n_dicts_start"):
        KvRetrievalConfig(n_dicts=4, n_dicts_start=5, n_dicts_interval=10)
    with pytest.raises(ValueError, match="task.n_dicts_interval"):
        KvRetrievalConfig(n_dicts=4, n_dicts_interval=-1)
    with pytest.raises(ValueError, match="task.gold_pos"):
        KvRetrievalConfig(n_dicts=4, gold_pos=1, mix_n_dicts=True)


def test_mixed_context_lengths_cover_1_to_n():
    ms = _members(mix_n_dicts=True, n_dicts_start=2, n_dicts_inc=1, n_dicts_interval=5)
    t1, _ = build_pack(ms, torch.float32)
    t2, _ = build_pack(_members(seeds=(1,), mix_n_dicts=True, n_dicts_start=2, n_dicts_inc=1, n_dicts_interval=5),
                       torch.float32)
    T = seq_len(t1.cfgs[0])
    for step, top in ((0, 2), (100, 4)):
        seen = []
        for _rep in range(8):
            x, y, _ = t1.batch(step)
            assert x.shape == (2, 16, T, V)
            assert torch.equal(t2.batch(step)[0][0], x[1])                   # seed 1 alone == in the pack
            inp = x.argmax(-1)
            for p in range(16):
                L = int((y[0, p] >= 0).nonzero()[0]) + 1
                dicts, key = _parse_tiny(decode(inp[0, p, :L]))
                assert sum(key in d for d in dicts) == 1                      # the gold key is in the context
                seen.append(len(dicts))
        assert set(seen) == set(range(1, top + 1)), seen                      # every n in 1..n(s), none above


def _chi2_uniform(slots: torch.Tensor, n: int) -> float:
    counts = torch.bincount(slots, minlength=n).double()
    expect = slots.numel() / n
    return float(((counts - expect) ** 2 / expect).sum())


def test_gold_positions_stratified_eval_uniform_or_fixed_train():
    task, _ = build_pack(_members(n_eval=22), torch.float32)
    counts = torch.bincount(task.eval_pos, minlength=4).tolist()
    assert counts == [6, 6, 5, 5]                                          # every slot, evenly
    # training slots: uniform (χ²_3 at p = 0.001 is 16.3), read back from where the answer sits
    n_dicts = 5
    ms = _members(n_dicts=n_dicts, batch_size=400, gold_dict_size=1, dict_size_min=1, dict_size_max=1,
                  key_digits_min=2, key_digits_max=2, val_digits_min=2, val_digits_max=2)
    task, _ = build_pack(ms[:1], torch.float32)
    x, y, _ = task.batch(0)
    ids = x[0].argmax(-1)                                                  # (B, T)
    slots = []
    for p in range(ids.shape[0]):
        dicts, key = _parse_tiny(decode(ids[p][: int((y[0, p] >= 0).nonzero()[0]) + 1]))
        slots.append(next(i for i, d in enumerate(dicts) if key in d))
    assert _chi2_uniform(torch.tensor(slots), n_dicts) < 18.5              # χ²_4, p = 0.001
    fixed, _ = build_pack(_members(seeds=(0,), gold_pos=2), torch.float32)
    xf, yf, _ = fixed.batch(0)
    for p in range(xf.shape[1]):
        ids = xf[0, p].argmax(-1)
        dicts, key = _parse_tiny(decode(ids[: int((yf[0, p] >= 0).nonzero()[0]) + 1]))
        assert [i for i, d in enumerate(dicts) if key in d] == [2]


# ------------------------------------------------------------------------------------ task: the metrics

LOGIT = 10.0


class Oracle(torch.nn.Module):
    """Logits that put the mass on the right next token at answer positions (looked up from the task's own
    eval targets by matching the input), optionally wrong for chosen prompts."""

    def __init__(self, task, wrong=()):
        super().__init__()
        self.task, self.wrong = task, set(wrong)

    def forward(self, x):                                                  # (E, c, T, V)
        ids = x.argmax(-1)                                                 # (E, c, T)
        out = torch.zeros_like(x)
        for e in range(x.shape[0]):
            same = (ids[e][:, None] == self.task.eval_inp[e][None]).all(-1)  # (c, P)
            for c, j in enumerate(same.float().argmax(-1).tolist()):
                tgt = self.task.eval_tgt[e, j]
                right = F.one_hot(tgt.clamp(min=0), V).float() * LOGIT
                if j in self.wrong:
                    right = right.roll(1, dims=-1)                         # argmax on another symbol
                out[e, c] = torch.where((tgt >= 0)[:, None], right, out[e, c])
        return out


def test_metrics_oracle_and_wrong_models():
    task, _ = build_pack(_members(), torch.float32)
    P, n = task.eval_inp.shape[1], task.cfgs[0].n_dicts
    ev = task.evaluate(Oracle(task))
    torch.testing.assert_close(ev["acc/mean"], torch.ones(2))
    torch.testing.assert_close(ev["val/token_acc"], torch.ones(2))
    ce_right = torch.log1p(torch.tensor((V - 1) * torch.e ** -LOGIT))    # −log softmax of the right logit
    torch.testing.assert_close(ev["val/ce"], ce_right.float().expand(2))
    assert [k for k in ev if k.startswith("acc/pos")] == pos_keys(n) == ["acc/pos00", "acc/pos01", "acc/pos02",
                                                                         "acc/pos03"]
    for k in pos_keys(n):
        torch.testing.assert_close(ev[k], torch.ones(2))
    bad = task.evaluate(Oracle(task, wrong=range(P)))
    torch.testing.assert_close(bad["acc/mean"], torch.zeros(2))
    torch.testing.assert_close(bad["val/token_acc"], torch.zeros(2))
    # wrong exactly on the prompts at slot 1: only acc/pos01 drops, acc/mean by their share
    at1 = (task.eval_pos == 1).nonzero().flatten().tolist()
    mixed = task.evaluate(Oracle(task, wrong=at1))
    torch.testing.assert_close(mixed["acc/pos01"], torch.zeros(2))
    for k in ("acc/pos00", "acc/pos02", "acc/pos03"):
        torch.testing.assert_close(mixed[k], torch.ones(2))
    torch.testing.assert_close(mixed["acc/mean"], torch.full((2,), 1 - len(at1) / P))
    # context length in tokens = mean prompt length = first answer position + 1
    first = torch.stack([(t >= 0).float().argmax(-1) for t in task.eval_tgt]).double() + 1   # (E, P)
    torch.testing.assert_close(ev["task/context_tokens"], first.mean(1).float())


def _eval_as_batch(task, model):
    x = F.one_hot(task.eval_inp, V).float()
    return model(x), task.eval_tgt.float(), torch.full(task.eval_tgt.shape[:2], 1 / task.eval_tgt.shape[1])


def test_loss_is_answer_token_cross_entropy():
    task, model = build_pack(_members(), torch.float32)
    pred, y, w = _eval_as_batch(task, model)
    tgt = task.eval_tgt
    ref = torch.zeros(2)
    for e in range(2):
        for p in range(tgt.shape[1]):
            m = tgt[e, p] >= 0
            ref[e] += w[e, p] * F.cross_entropy(pred[e, p][m], tgt[e, p][m])
    torch.testing.assert_close(task.loss(pred, y, w), ref)
    with torch.no_grad():
        torch.testing.assert_close(task.evaluate(model)["val/ce"], ref, rtol=1e-5, atol=1e-5)
    # a partial answer (1 of 3 tokens right): exact 0, token share 1/3
    logits = torch.zeros(1, 5, V)
    t = torch.tensor([[-1, -1, 7, 8, EOS]])
    logits[0, 2, 7] = logits[0, 3, 9] = logits[0, 4, 3] = 5.0
    exact, _, right, n = answer_scores(logits, t)
    assert exact.tolist() == [0.0] and right.tolist() == [1.0] and n.tolist() == [3.0]


def test_config_checks():
    with pytest.raises(ValueError, match="task.n_eval"):
        KvRetrievalConfig(n_dicts=10, n_eval=5)
    with pytest.raises(ValueError, match="task.gold_pos"):
        KvRetrievalConfig(n_dicts=4, gold_pos=4)
    with pytest.raises(ValueError, match="task.dict_size_max"):
        KvRetrievalConfig(key_digits_min=1, key_digits_max=1, dict_size_max=9)      # 9 keys, one is gold
    with pytest.raises(ValueError, match="task.fmt"):
        KvRetrievalConfig(fmt="json")
    with pytest.raises(ValueError, match="task.key_digits_max"):
        KvRetrievalConfig(key_digits_min=3, key_digits_max=2)
    with pytest.raises(ValueError, match="model.n_positions"):
        ftcore.member_from_dict({"model": {**MODEL, "n_positions": 16}, "adapter": {"name": "full"},
                                 "task": TASK})


def test_tiny_fit_lowers_loss():
    ms = _members(seeds=(0, 1), train={"steps": 60, "lr": 3e-3, "schedule": "constant", "early_stop": False,
                                       "eval_every": 60})
    res = ftcore.fit(ms)
    for r in res:
        first, last = r.curve[0], r.curve[-1]
        assert r.status == "ok" and last["step"] == 60
        assert last["val/ce"] < 0.75 * first["val/ce"], (first["val/ce"], last["val/ce"])
