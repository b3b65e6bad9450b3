"""The artificial-needles study's text generators and tasks (papers.md §6(b)–(d)): `needles_text` (stage-1 corpus,
MDQA stand-in), `lm_text` (stage 1) and `needles_finetune` (stage 2): formats parsed back, determinism under a
generator, stratified gold positions, only kv-vocabulary characters, answer uniqueness, length bounds, teacher
forcing by construction, the metric contract on ftcore's transformer and the before/after bookkeeping.
The shape/determinism contract over every task is in test_ftcore_tasks.py (TASK_CASES)."""
from __future__ import annotations

import re
from collections import Counter

import pytest
import torch

import ftcore
from ftcore.fit import build_pack
from ftcore.tasks.needles_finetune import lengths
from ftcore.tasks.needles_text import (
    corpus_max_chars,
    mdqa_max_chars,
    sample_corpus,
    sample_mdqa,
)
from ftcore.tasks.seq_generators import EOS, VOCAB, decode
from ftcore.tasks.text_batches import encode_pairs
from ftcore.tokenizers import tokenizer_for

TF = {"name": "transformer", "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 200, "init": "pytorch"}
FACT = re.compile(r"(\w+)'s code is (\d+)\.|(\w+) lives in (\w+)\.")
DOC = re.compile(r"^doc (\d+): (.*)$")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def parse(prompt: str):
    """-> documents as lists of (entity, value), the question's entity and kind."""
    lines = prompt.split("\n")
    assert lines[-1] == "a: " and lines[-2].startswith("q: ")
    docs = []
    for i, line in enumerate(lines[:-2]):
        m = DOC.match(line)
        assert m and int(m[1]) == i + 1, line
        facts = [(f[0] or f[2], f[1] or f[3]) for f in FACT.findall(m[2])]
        assert " ".join(f"{e}'s code is {v}." if v.isdigit() else f"{e} lives in {v}." for e, v in facts) == m[2]
        docs.append(facts)
    q = re.fullmatch(r"q: (?:what is (\w+)'s code\?|where does (\w+) live\?)", lines[-2])
    assert q, lines[-2]
    return docs, q[1] or q[2], "code" if q[1] else "home"


def test_corpus_format_answer_and_uniqueness():
    b = sample_corpus(_gen(0), 300, docs_max=3, facts_max=2, digits=(2, 3))
    kinds = Counter()
    for p, a, gold, n in zip(b.prompts, b.answers, b.gold_position, b.n_docs):
        docs, who, kind = parse(p)
        kinds[kind] += 1
        assert len(docs) == n and 1 <= n <= 3 and all(1 <= len(d) <= 2 for d in docs)
        facts = [f for d in docs for f in d]
        names = [e for e, _ in facts]
        codes = [v for _, v in facts if v.isdigit()]
        assert len(set(names)) == len(names) and len(set(codes)) == len(codes)        # unique entities and codes
        (value,) = [v for e, v in facts if e == who]
        assert a == f"{value}." and who in dict(docs[gold])
        assert all(2 <= len(c) <= 3 and c[0] != "0" for c in codes)
        assert set(p + a) <= set(VOCAB)
    assert kinds["code"] > 100 and kinds["home"] > 100
    assert Counter(b.n_docs).keys() == {1, 2, 3}


def test_mdqa_format_gold_positions_and_uniqueness():
    slots = [j % 7 for j in range(70)]
    b = sample_mdqa(_gen(1), 7, slots, digits=(2, 2))
    assert b.gold_position == slots and Counter(b.gold_position) == dict.fromkeys(range(7), 10)     # stratified
    for p, a, gold in zip(b.prompts, b.answers, b.gold_position):
        docs, who, kind = parse(p)
        assert kind == "code" and len(docs) == 7 and all(len(d) == 1 for d in docs)
        assert docs[gold][0][0] == who and a == f"{docs[gold][0][1]}."
        assert sum(who in line for line in p.split("\n")[:-2]) == 1                   # the entity occurs once
        assert p.count(a[:-1]) == 1                                                   # so does the answer code
        assert set(p + a) <= set(VOCAB)
    with pytest.raises(ValueError, match="gold_position"):
        sample_mdqa(_gen(0), 3, [3])
    with pytest.raises(ValueError, match="distinct codes"):
        sample_mdqa(_gen(0), 11, [0], digits=(1, 1))                                  # 9 one-digit codes


def test_generators_are_determined_by_the_generator():
    assert sample_corpus(_gen(3), 20) == sample_corpus(_gen(3), 20)
    assert sample_corpus(_gen(3), 20) != sample_corpus(_gen(4), 20)
    assert sample_mdqa(_gen(3), 5, [0, 4]) == sample_mdqa(_gen(3), 5, [0, 4])
    assert sample_mdqa(_gen(3), 5, [0, 4]).prompts != sample_mdqa(_gen(4), 5, [0, 4]).prompts


@pytest.mark.parametrize("docs_max, facts_max, digits", [(1, 1, (1, 1)), (3, 2, (2, 3)), (4, 3, (3, 4))])
def test_length_bounds_hold_and_are_reached(docs_max, facts_max, digits):
    b = sample_corpus(_gen(5), 400, docs_max, facts_max, digits)
    lens = [len(p + a) for p, a in zip(b.prompts, b.answers)]
    assert max(lens) <= corpus_max_chars(docs_max, facts_max, digits)
    m = sample_mdqa(_gen(5), 5, [j % 5 for j in range(100)], digits)
    bound_p, bound_a = mdqa_max_chars(5, digits)
    assert max(len(p) for p in m.prompts) <= bound_p and max(len(a) for a in m.answers) <= bound_a
    one = sample_mdqa(_gen(6), 5, [0] * 50, (digits[1], digits[1]))                    # widest codes: reached
    assert max(len(p) for p in one.prompts) == bound_p


def test_teacher_forcing_answer_only_and_lm():
    tok = tokenizer_for(ftcore.member_from_dict({"model": TF, "adapter": {"name": "full"},
                                                 "task": {"name": "lm_text"}}).model)
    inp, tgt, ans = encode_pairs(tok, ["ab:", "q"], [" 12.", " 3."], T=10)
    assert inp.shape == tgt.shape == ans.shape == (2, 10)
    assert decode(inp[0]) == "ab: 12." and inp[0, 0] == tok.bos_id and inp[0, 8] == tok.pad_id
    s0 = [tok.bos_id] + tok.encode("ab: 12.") + [EOS]
    assert tgt[0, :8].tolist() == [-1, -1, -1] + s0[4:] and (tgt[0, 8:] == -1).all()     # answer + EOS only
    lm_inp, lm_tgt, lm_ans = encode_pairs(tok, ["ab:"], [" 12."], T=10, lm=True)
    assert lm_tgt[0, :8].tolist() == s0[1:] and lm_ans[0].tolist() == tgt[0].tolist()
    with pytest.raises(ValueError, match="exceeds"):
        encode_pairs(tok, ["abcdef"], [" 1."], T=8)
    v_inp, v_tgt, v_ans = encode_pairs(tok, ["ab:"], [" 12."], T=10, suffix=".")     # the value alone is scored
    assert torch.equal(v_inp[0], inp[0]) and torch.equal(v_tgt[0], tgt[0])
    assert v_ans[0].tolist() == [-1, -1, -1] + s0[4:7] + [-1] * 4                     # " 12", not "." nor EOS


def member(task, model=TF, adapter=None, seed=0, **train):
    return ftcore.member_from_dict({"model": model, "adapter": adapter or {"name": "full"}, "task": task,
                                    "train": train or {}, "seed": seed})


FT = {"name": "needles_finetune", "n_dicts": 4, "mdqa_docs": 4, "n_eval": 8, "n_eval_kv": 8, "n_retain": 6,
      "batch_size": 4}


def test_lm_text_metrics_contract():
    task, model = build_pack([member({"name": "lm_text", "batch_size": 4, "n_eval": 6}, seed=s) for s in (0, 1)],
                             torch.float32)
    x, y, w = task.batch(0)
    assert x.shape == (2, 4, task.T, len(VOCAB)) and y.shape == (2, 4, task.T)
    assert ((y >= 0).sum(-1) > 10).all()                                        # LM: every token is scored
    ev = task.evaluate(model)
    assert set(ev) == {"lm/ce", "lm/answer_acc", "lm/answer_ce"} and all(v.shape == (2,) for v in ev.values())
    assert float(ev["lm/ce"].min()) > 1.0                                       # untrained: ≈ log V
    with pytest.raises(ValueError, match="model.n_positions"):
        member({"name": "lm_text"}, model={**TF, "n_positions": 64})


def oracle(task):
    """A 'model' whose logits put the next token of the stored evaluation sequences first (reads ahead)."""
    table = {}
    for inp, tgt in ((task.md_inp, task.md_tgt), (task.kv_inp, task.kv_tgt), (task.rt_inp, task.rt_tgt)):
        for e in range(inp.shape[0]):
            for p in range(inp.shape[1]):
                table[(e, tuple(inp[e, p].tolist()))] = tgt[e, p]

    def model(x):                                                                # (E, c, T, V) one-hot
        ids = x.argmax(-1)
        out = torch.zeros_like(x)
        for e in range(ids.shape[0]):
            for p in range(ids.shape[1]):
                t = table[(e, tuple(ids[e, p].tolist()))]
                out[e, p, torch.arange(len(t))[t >= 0], t[t >= 0]] = 50.0
        return out
    return model


def test_needles_finetune_metrics_before_and_after():
    task, model = build_pack([member(FT, seed=s) for s in (0, 1)], torch.float32)
    assert torch.equal(task.md_pos, torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
    x, y, w = task.batch(0)
    assert x.shape == (2, 4, task.T["kv"], len(VOCAB)) and ((y >= 0).sum(-1) == 3).all()   # 2 digits + EOS
    first = task.evaluate(model)
    keys = {f"mdqa/pos{i:02d}" for i in range(4)} | {"mdqa/mean", "mdqa/ce", "kv/acc", "kv/ce", "val/ce",
                                                       "retain/lm_ce"}
    assert keys <= set(first) and all(v.shape == (2,) for v in first.values())
    assert {k for k in first if k.startswith("before/")} == {f"before/{k}" for k in keys
                                                            if k.startswith(("mdqa/", "kv/acc", "retain/"))}
    for k in ("mdqa/mean", "kv/acc", "retain/lm_ce"):
        assert torch.equal(first[f"before/{k}"], first[k])
    perfect = task.evaluate(oracle(task))                                        # after: an oracle
    assert torch.equal(perfect["mdqa/mean"], torch.ones(2)) and torch.equal(perfect["kv/acc"], torch.ones(2))
    assert float(perfect["retain/lm_ce"].max()) < 1e-6
    for k in ("mdqa/mean", "kv/acc", "retain/lm_ce", "mdqa/pos02"):              # before stays the base's
        assert torch.equal(perfect[f"before/{k}"], first[k])


def test_needles_finetune_fixed_training_set_epochs():
    task, _ = build_pack([member({**FT, "n_train": 6}, seed=s) for s in (0, 1)], torch.float32)
    rows = torch.cat([task.epoch_rows(0, s) for s in range(3)])                  # 12 samples = 2 epochs of 6
    assert sorted(rows[:6].tolist()) == list(range(6)) and sorted(rows[6:].tolist()) == list(range(6))
    again, _ = build_pack([member({**FT, "n_train": 6}, seed=0)], torch.float32)
    x, y, _ = task.batch(1)
    x1, y1, _ = again.batch(1)
    assert torch.equal(x[0], x1[0]) and torch.equal(y[0], y1[0])
    assert torch.equal(task.batch(4)[0], task.batch(4)[0])                       # a function of the step


def test_needles_finetune_config_mistakes():
    with pytest.raises(ValueError, match="task.mdqa_docs"):
        member({**FT, "mdqa_docs": 1})
    with pytest.raises(ValueError, match="task.n_eval"):
        member({**FT, "n_eval": 3})
    with pytest.raises(ValueError, match="task.facts_max"):
        member({**FT, "digits_min": 1, "digits_max": 1, "docs_max": 3, "facts_max": 4})
    with pytest.raises(ValueError, match="model.n_positions"):
        member({**FT, "mdqa_docs": 12, "n_eval": 12})
    assert max(lengths(member(FT).task).values()) <= 200


def test_tiny_finetune_moves_the_kv_loss_and_keeps_before():
    (res,) = ftcore.fit([member(FT, steps=30, lr=3e-3, eval_every=30, early_stop=False)])
    first, last = res.curve[0], res.curve[-1]
    assert res.status == "ok" and last["kv/ce"] < first["kv/ce"]
    assert last["before/retain/lm_ce"] == first["retain/lm_ce"] and last["before/mdqa/mean"] == first["mdqa/mean"]


def test_corpus_edges_asks_about_the_first_or_last_document_only():
    b = sample_corpus(_gen(7), 400, docs_max=5, facts_max=2, ask="edges")
    where = Counter()
    for p, gold, n in zip(b.prompts, b.gold_position, b.n_docs):
        docs, who, _ = parse(p)
        assert who in dict(docs[gold]) and gold in (0, n - 1)
        where[gold == 0] += 1
    assert where[True] > 120 and where[False] > 120
    anywhere = sample_corpus(_gen(7), 400, docs_max=5, facts_max=2, ask="any")
    assert any(0 < g < n - 1 for g, n in zip(anywhere.gold_position, anywhere.n_docs))
    with pytest.raises(ValueError, match="ask"):
        sample_corpus(_gen(0), 1, ask="middle")


def test_needles_tasks_run_on_an_hf_causal_lm(tmp_path):
    """Same tasks through an HF model's own tokenizer (a tiny random GPT-2, ftcore.models.hf_tiny): ids in, io_dims
    from its vocabulary, LoRA on GPT-2's module names; before = after at step 0."""
    pytest.importorskip("transformers")
    from ftcore.models.hf_tiny import save_tiny
    save_tiny(tmp_path / "gpt2")
    hf = {"name": "hf_causal_lm", "path": str(tmp_path / "gpt2")}
    m = member({**FT, "fmt": "compact"}, model=hf, adapter={"name": "lora", "rank": 2, "targets": ["c_attn", "c_fc"]},
               steps=2, eval_every=2)
    task, _ = build_pack([m], torch.float32)
    x, y, _ = task.batch(0)
    assert x.dtype == torch.int64 and x.shape == y.shape and task.io_dims(m.task, m.model) == (task.V, task.V)
    (res,) = ftcore.fit([m])
    assert res.status == "ok" and res.curve[0]["before/mdqa/mean"] == res.curve[0]["mdqa/mean"]
    (lm,) = ftcore.fit([member({"name": "lm_text", "batch_size": 2, "n_eval": 2}, model=hf, steps=1, eval_every=1)])
    assert lm.status == "ok" and lm.metrics["lm/ce"] > 0


@pytest.mark.parametrize("target", [0.0, 1e-9, 1.0])
def test_target_acc_is_the_success_metric(target):
    """task.target_acc > 0: fit/success = kv/acc >= target, the metric a capacity search over adapter.rank and
    early stopping read; 0: no success metric at all (nothing would ever stop a member, nothing is claimed)."""
    task, model = build_pack([member({**FT, "target_acc": target}, seed=s) for s in (0, 1)], torch.float32)
    ev = task.evaluate(model)
    if target == 0:
        assert task.success_metric is None and "fit/success" not in ev
        return
    assert task.success_metric == "fit/success"
    assert ev["fit/success"].tolist() == (ev["kv/acc"] >= target).float().tolist()
