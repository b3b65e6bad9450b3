"""Sequence generators (papers.md §5 sparse parity / vector MQAR, §6 kv retrieval): shapes, determinism,
labels by construction, gold-position distribution, tokenisation round-trip."""
from __future__ import annotations

import re

import pytest
import torch

from ftcore.tasks.seq_generators import (
    EOS,
    PAD,
    decode,
    encode,
    sample_kv_retrieval,
    sample_mqar,
    sample_sparse_parity,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------- sparse parity

def test_parity_shapes_labels_determinism():
    b = sample_sparse_parity(_gen(0), 64, n_points=140, n=10, k=2)
    assert b.xs.shape == (64, 140, 10) and b.ys.shape == (64, 140) and b.support.shape == (64, 2)
    assert set(b.xs.unique().tolist()) == {-1.0, 1.0}
    for p in range(64):
        s = b.support[p].tolist()
        assert len(set(s)) == 2 and s == sorted(s)
        torch.testing.assert_close(b.ys[p], b.xs[p][:, s[0]] * b.xs[p][:, s[1]])
    b2 = sample_sparse_parity(_gen(0), 64, n_points=140, n=10, k=2)
    assert all(torch.equal(u, v) for u, v in zip(b, b2))
    assert not torch.equal(b.xs, sample_sparse_parity(_gen(1), 64).xs)
    # per-prompt supports vary; uniform over the 45 pairs roughly
    assert len({tuple(r) for r in b.support.tolist()}) > 20
    assert abs(b.ys.mean().item()) < 0.05                              # balanced labels


def test_parity_shared_support_and_k3():
    b = sample_sparse_parity(_gen(2), 16, n_points=9, n=7, k=3, shared_support=True)
    assert (b.support == b.support[0]).all()
    s = b.support[0].tolist()
    torch.testing.assert_close(b.ys, b.xs[..., s].prod(-1))
    with pytest.raises(ValueError):
        sample_sparse_parity(_gen(0), 2, n=3, k=4)


# ------------------------------------------------------------------------------------------------- MQAR

def test_mqar_shapes_and_answer():
    n, d = 16, 8
    b = sample_mqar(_gen(0), 200, n_pairs=n, d=d)
    assert b.seq.shape == (200, 2 * n + 1, d) and b.target.shape == (200, d)
    torch.testing.assert_close(b.seq.norm(dim=-1), torch.full((200, 2 * n + 1), d ** 0.5))
    q = b.seq[:, -1]
    for p in range(200):
        # the query repeats an earlier key (by value, at an even slot) and the target is the next token
        hits = [i for i in range(n) if torch.equal(b.seq[p, 2 * i], q[p])]
        assert hits == [b.query_index[p].item()]
        assert torch.equal(b.target[p], b.seq[p, 2 * hits[0] + 1])
    assert 0 <= b.query_index.min() and b.query_index.max() < n       # never the query slot (App. B)
    assert len(b.query_index.unique()) > n // 2
    b2 = sample_mqar(_gen(0), 200, n_pairs=n, d=d)
    assert all(torch.equal(u, v) for u, v in zip(b, b2))


# ----------------------------------------------------------------------------------------- kv retrieval

_LINE = re.compile(r"^Dictionary \[(\d+)\] \{(.*)\}$")


def _parse(prompt: str) -> tuple[list[dict[int, int]], int]:
    dicts = []
    for line in prompt.split("\n"):
        m = _LINE.match(line)
        if m:
            assert int(m.group(1)) == len(dicts) + 1
            dicts.append({int(k): int(v) for k, v in (kv.split(": ") for kv in m.group(2).split(", "))})
    key = re.search(r"(?:key |\? )(\d+)", prompt.split("\n\nAbove")[-1] if "Above" in prompt
                    else prompt.split("\n")[-2]).group(1)
    return dicts, int(key)


@pytest.mark.parametrize("fmt", ["template", "no_template", "compact"])
def test_kv_answer_by_parsing(fmt):
    b = sample_kv_retrieval(_gen(0), 30, n_dicts=85, fmt=fmt)
    for p in range(30):
        dicts, key = _parse(b.prompts[p])
        assert len(dicts) == 85 and key == b.gold_key[p].item()
        holders = [i for i, d in enumerate(dicts) if key in d]
        assert holders == [b.gold_position[p].item()]                 # gold key occurs only in the gold dict
        gold = dicts[holders[0]]
        assert len(gold) == 3 and all(len(d) in (3, 4) for d in dicts)
        val = gold[key]
        assert val == b.gold_value[p].item()
        assert sum(v == val for d in dicts for v in d.values()) == 1   # gold value unique
        assert all(100 <= x <= 9999 for d in dicts for kv in d.items() for x in kv)
        if fmt == "compact":
            assert b.answers[p] == str(val)
        else:
            assert b.answers[p] == f"The value of key {key} is {val} and it is in Dictionary [{holders[0] + 1}]."
        assert ("Answer in the following template" in b.prompts[p]) == (fmt == "template")


def test_kv_tokens_round_trip_and_shapes():
    b = sample_kv_retrieval(_gen(1), 12, n_dicts=8, fmt="compact")
    assert b.tokens.shape[0] == 12 and b.tokens.shape[1] == b.lengths.max()
    assert b.answer_tokens.shape[0] == 12 and b.gold_position.shape == (12,)
    for p in range(12):
        assert decode(encode(b.prompts[p])) == b.prompts[p]
        assert decode(b.tokens[p]) == b.prompts[p]
        assert (b.tokens[p, b.lengths[p]:] == PAD).all()
        assert decode(b.answer_tokens[p]) == b.answers[p]
        assert EOS in b.answer_tokens[p].tolist()
    t = sample_kv_retrieval(_gen(1), 2, n_dicts=5, fmt="template")
    assert decode(encode(t.prompts[0])) == t.prompts[0]
    with pytest.raises(ValueError, match="vocabulary"):
        encode("é")


def test_kv_determinism():
    a = sample_kv_retrieval(_gen(5), 6, n_dicts=10)
    b = sample_kv_retrieval(_gen(5), 6, n_dicts=10)
    c = sample_kv_retrieval(_gen(6), 6, n_dicts=10)
    assert a.prompts == b.prompts and torch.equal(a.tokens, b.tokens)
    assert a.prompts != c.prompts


def test_kv_gold_position_fixed_and_uniform():
    for pos in (0, 3, 9):
        b = sample_kv_retrieval(_gen(pos), 20, n_dicts=10, gold_position=pos, fmt="compact")
        assert (b.gold_position == pos).all()
        for p in range(20):
            dicts, key = _parse(b.prompts[p])
            assert [i for i, d in enumerate(dicts) if key in d] == [pos]
    n, n_dicts = 4000, 10
    b = sample_kv_retrieval(_gen(3), n, n_dicts=n_dicts, gold_dict_size=1, dict_size_range=(1, 1), fmt="compact")
    counts = torch.bincount(b.gold_position, minlength=n_dicts).double()
    chi2 = ((counts - n / n_dicts) ** 2 / (n / n_dicts)).sum().item()
    assert chi2 < 27.9                                                  # χ²_9 at p = 0.001
    # head mass (reference frac_0 / frac_top): slot 0 gets frac_0 + frac_top/top + rest/n
    h = sample_kv_retrieval(_gen(4), n, n_dicts=n_dicts, gold_dict_size=1, dict_size_range=(1, 1),
                            fmt="compact", frac_0=0.3, frac_top=0.2, top_slots=2)
    expect0 = 0.3 + 0.2 / 2 + 0.5 / n_dicts
    assert (h.gold_position == 0).double().mean().item() == pytest.approx(expect0, abs=0.03)
    with pytest.raises(ValueError):
        sample_kv_retrieval(_gen(0), 1, n_dicts=5, gold_position=5)
