"""Sequence-task generators: sparse parity and vector-valued MQAR ("Can Mamba Learn How to Learn?",
Park et al., ICML 2024; papers.md §5) and numerical dictionary key-value retrieval ("From Artificial
Needles to Real Haystacks", Xiong et al., ICLR 2025; papers.md §6).

All take an explicit `torch.Generator` (no global RNG). They produce data only; models/metrics live in
the Task wrappers.

* Sparse parity [code: src/tasks.py `SparseParity`]: x ~ U{−1,+1}^n, y = Π_{i∈S} x_i, |S| = k.
  The reference shares S across a training batch; here S is drawn per prompt unless `shared_support`.
* Vector MQAR [code: `Retrieval`, `GaussianRetrievalSampler`]: sequence k_1, v_1, …, k_n, v_n, q of
  2n+1 vectors in R^d, all N(0, I) rescaled to norm √d; q = copy of k_j, j ~ U{0…n−1} (the reference's
  `2*randint(0, n)` may point at the query slot itself — Appendix B — we draw j from 0…n−1);
  target = v_{argmax_i ⟨k_i, q⟩} (= v_j a.s.).
* KV retrieval [code: dict_builder.py `build_dicts`, generate_dataset.py]: `n_dicts` lines
  `Dictionary [i] {k: v, k: v, …}` (i = 1…n_dicts); the gold dict has `gold_dict_size` entries, the others
  a size uniform in `dict_size_range`; keys/values have a digit count s uniform in the range, then are
  uniform in [10^{s−1}, 10^s − 1]; the gold key and value occur nowhere else. The question asks for the
  gold key; answer "The value of key {k} is {v} and it is in Dictionary [{i}]." Character-level
  tokenisation (`encode`/`decode`) for tiny models; `fmt="tiny"` renders the same dicts in the fewest
  characters, `{k:v,k:v}{k:v}…?k:` with answer `v`, so the query repeats the `k:` of the gold entry
  (an induction-head lookup) and a context of n dicts costs ≈ n · size · (key + value digits + 2) tokens.
"""
from __future__ import annotations

import random
import string
from typing import NamedTuple

import torch

# ----------------------------------------------------------------------------------------- sparse parity


class ParityBatch(NamedTuple):
    xs: torch.Tensor       # (P, K, n) in {−1, +1}
    ys: torch.Tensor       # (P, K)    Π_{i∈S} x_i in {−1, +1}
    support: torch.Tensor  # (P, k)    sorted int64 indices S


def sample_sparse_parity(gen: torch.Generator, n_prompts: int, n_points: int = 140, n: int = 10, k: int = 2,
                         shared_support: bool = False) -> ParityBatch:
    """Sparse parity prompts (defaults from src/conf/parity.yaml: n = 10, k = 2, 140 examples)."""
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    rows = 1 if shared_support else n_prompts
    support = torch.rand(rows, n, generator=gen).argsort(-1)[:, :k].sort(-1).values      # (rows, k)
    support = support.expand(n_prompts, k).clone()
    xs = torch.randint(0, 2, (n_prompts, n_points, n), generator=gen).float() * 2 - 1   # (P, K, n)
    picked = torch.gather(xs, 2, support[:, None, :].expand(-1, n_points, -1))         # (P, K, k)
    return ParityBatch(xs, picked.prod(-1), support)


# ------------------------------------------------------------------------------------------ vector MQAR


class MqarBatch(NamedTuple):
    seq: torch.Tensor          # (P, 2n+1, d) k_1, v_1, …, k_n, v_n, q
    target: torch.Tensor       # (P, d)       value paired with the queried key
    keys: torch.Tensor         # (P, n, d)
    values: torch.Tensor       # (P, n, d)
    query_index: torch.Tensor  # (P,) int64   j with q = k_j


def sample_mqar(gen: torch.Generator, n_prompts: int, n_pairs: int = 64, d: int = 20) -> MqarBatch:
    """Vector-valued MQAR prompts (defaults from src/conf/retrieval.yaml: 64 pairs, d = 20)."""
    raw = torch.randn(n_prompts, 2 * n_pairs, d, generator=gen)
    raw = raw / raw.norm(dim=-1, keepdim=True) * d ** 0.5                            # norm √d
    keys, values = raw[:, 0::2], raw[:, 1::2]                                         # (P, n, d)
    qi = torch.randint(0, n_pairs, (n_prompts,), generator=gen)                       # never the query slot
    q = keys[torch.arange(n_prompts), qi]                                             # (P, d)
    match = torch.einsum("pnd,pd->pn", keys, q).argmax(-1)                            # reference's target rule
    target = values[torch.arange(n_prompts), match]
    seq = torch.cat([raw, q[:, None]], dim=1)                                         # (P, 2n+1, d)
    return MqarBatch(seq, target, keys, values, qi)


# ------------------------------------------------------------------------------------ KV retrieval (§6)

PAD, BOS, EOS = 0, 1, 2
_CHARS = string.digits + string.ascii_letters + " \n[]{}:,.<>-?'"
VOCAB: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", *_CHARS)
_STOI = {c: i for i, c in enumerate(VOCAB) if i > EOS}

PROMPT_HEAD = "Do a task using the list of dictionaries below.\n\n"
PROMPT_TAIL = ("\n\nAbove is a list of dictionaries such that each key and value is an integer. "
               "Report the value of key {k} and the dictionary it is in.")
TEMPLATE = (" Answer in the following template:\nThe value of key {k} is <fill-in-value> and it is in "
            "Dictionary [<fill-in-dictionary-name>].")
ANSWER = "The value of key {k} is {v} and it is in Dictionary [{i}]."
FORMATS = ("template", "no_template", "compact", "tiny")


def encode(text: str) -> list[int]:
    """Character-level token ids (no BOS/EOS); raises on a character outside the vocabulary."""
    try:
        return [_STOI[c] for c in text]
    except KeyError as e:
        raise ValueError(f"character {e.args[0]!r} is not in the kv vocabulary") from None


def decode(ids) -> str:
    """Inverse of `encode`; PAD/BOS/EOS are dropped."""
    return "".join(VOCAB[i] for i in (int(t) for t in ids) if i > EOS)


class KvBatch(NamedTuple):
    prompts: list[str]
    answers: list[str]
    tokens: torch.Tensor         # (P, T) int64, PAD-right-padded encode(prompt)
    lengths: torch.Tensor        # (P,)
    answer_tokens: torch.Tensor  # (P, A) int64, encode(answer) + EOS, PAD-padded
    gold_position: torch.Tensor  # (P,) int64 in [0, n_dicts)
    gold_key: torch.Tensor       # (P,)
    gold_value: torch.Tensor     # (P,)
    dicts: list[list[dict[int, int]]]


def _rand_int(rng: random.Random, digits: tuple[int, int]) -> int:
    s = rng.randint(*digits)
    return rng.randint(10 ** (s - 1), 10 ** s - 1)


def _build_dicts(rng: random.Random, n_dicts: int, gold_pos: int, gold_dict_size: int,
                 dict_size_range: tuple[int, int], key_digits: tuple[int, int],
                 val_digits: tuple[int, int]) -> tuple[list[dict[int, int]], int, int]:
    gold: dict[int, int] = {}
    while len(gold) < gold_dict_size:                 # distinct keys, as a Python dict has
        gold.setdefault(_rand_int(rng, key_digits), _rand_int(rng, val_digits))
    gold_key = rng.choice(list(gold))
    gold_val = gold[gold_key]
    # gold dict's other values must not repeat the gold value
    for k in list(gold):
        while k != gold_key and gold[k] == gold_val:
            gold[k] = _rand_int(rng, val_digits)
    dicts = []
    for i in range(n_dicts):
        if i == gold_pos:
            dicts.append(gold)
            continue
        size, dct = rng.randint(*dict_size_range), {}
        while len(dct) < size:
            k, v = _rand_int(rng, key_digits), _rand_int(rng, val_digits)
            if k == gold_key or v == gold_val or k in dct:   # gold pair unique in the prompt
                continue
            dct[k] = v
        dicts.append(dct)
    return dicts, gold_key, gold_val


def render_dicts(dicts: list[dict[int, int]]) -> str:
    """One line per dict: `Dictionary [i] {k: v, k: v}` with i = 1…n (`name_random: False`)."""
    return "\n".join(f"Dictionary [{i + 1}] " + "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"
                     for i, d in enumerate(dicts))


def render_kv(dicts: list[dict[int, int]], gold_key: int, gold_value: int, gold_position: int,
              fmt: str) -> tuple[str, str]:
    """(prompt, answer) text of one sample in format `fmt` (see `sample_kv_retrieval`)."""
    if fmt == "tiny":
        body = "".join("{" + ",".join(f"{k}:{v}" for k, v in d.items()) + "}" for d in dicts)
        return f"{body}?{gold_key}:", f"{gold_value}"
    body = render_dicts(dicts)
    if fmt == "compact":
        return f"{body}\n? {gold_key}\n", f"{gold_value}"
    tail = PROMPT_TAIL + (TEMPLATE if fmt == "template" else "")
    return (PROMPT_HEAD + body + tail.format(k=gold_key),
            ANSWER.format(k=gold_key, v=gold_value, i=gold_position + 1))


def kv_max_lengths(n_dicts: int, gold_dict_size: int, dict_size_range: tuple[int, int],
                   key_digits: tuple[int, int], val_digits: tuple[int, int], fmt: str) -> tuple[int, int]:
    """Upper bounds (prompt tokens, answer tokens + EOS) over every sample the generator can draw.

    Rendered from a worst case rather than a per-format formula: every dict at the largest size
    max(gold_dict_size, dict_size_range[1]), every key and value at the largest digit count, the gold
    dict last (the template answer names the largest index). Rendered length grows with each of these.
    """
    size, kd, vd = max(gold_dict_size, dict_size_range[1]), key_digits[1], val_digits[1]
    d = {10 ** (kd - 1) + j: 10 ** vd - 1 for j in range(size)}       # distinct max-width keys
    prompt, answer = render_kv([d] * n_dicts, 10 ** kd - 1, 10 ** vd - 1, n_dicts - 1, fmt)
    return len(prompt), len(answer) + 1


def sample_kv_retrieval(gen: torch.Generator, n_prompts: int, n_dicts: int = 85,
                        gold_position: int | list[int] | None = None, fmt: str = "template", gold_dict_size: int = 3,
                        dict_size_range: tuple[int, int] = (3, 4), key_digits: tuple[int, int] = (3, 4),
                        val_digits: tuple[int, int] = (3, 4), frac_0: float = 0.0, frac_top: float = 0.0,
                        top_slots: int = 1) -> KvBatch:
    """Dictionary key-value retrieval prompts (defaults from the repo yaml, §6a).

    gold_position: fixed slot in [0, n_dicts), a list of n_prompts slots (one per prompt: stratified
    evaluation sets), or None = uniform, except that a fraction `frac_0` goes to slot 0 and `frac_top` to
    a slot uniform in [0, top_slots) (reference: frac_0 = 0.05, frac_top = 0.03,
    top_slots = int(0.05 · n_samples)). fmt: "template" / "no_template" (the paper's prompts),
    "compact" (dicts + "\\n? {k}\\n", answer "{v}") or "tiny" (`render_kv`) for tiny character-level models.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    fixed = None if gold_position is None else \
        [gold_position] * n_prompts if isinstance(gold_position, int) else [int(p) for p in gold_position]
    if fixed is not None and (len(fixed) != n_prompts or not all(0 <= p < n_dicts for p in fixed)):
        raise ValueError(f"gold_position must be in [0, {n_dicts}) (one per prompt if a list), got {gold_position}")
    if not 1 <= top_slots <= n_dicts or frac_0 < 0 or frac_top < 0 or frac_0 + frac_top > 1:
        raise ValueError("need 1 <= top_slots <= n_dicts and frac_0, frac_top >= 0 with sum <= 1")
    # a Python RNG seeded from the torch generator: scalar draws in loops, still generator-determined
    rng = random.Random(int(torch.randint(0, 2 ** 62, (1,), generator=gen)))
    prompts, answers, golds, gks, gvs, all_dicts = [], [], [], [], [], []
    for j in range(n_prompts):
        if fixed is not None:
            pos = fixed[j]
        else:
            u = rng.random()
            pos = 0 if u < frac_0 else rng.randrange(top_slots) if u < frac_0 + frac_top else rng.randrange(n_dicts)
        dicts, gk, gv = _build_dicts(rng, n_dicts, pos, gold_dict_size, dict_size_range, key_digits, val_digits)
        prompt, answer = render_kv(dicts, gk, gv, pos, fmt)
        prompts.append(prompt)
        answers.append(answer)
        golds.append(pos)
        gks.append(gk)
        gvs.append(gv)
        all_dicts.append(dicts)
    toks = [encode(p) for p in prompts]
    ans = [encode(a) + [EOS] for a in answers]
    return KvBatch(prompts, answers, _pad(toks), torch.tensor([len(t) for t in toks]), _pad(ans),
                   torch.tensor(golds), torch.tensor(gks), torch.tensor(gvs), all_dicts)


def _pad(rows: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max((len(r) for r in rows), default=0)), PAD, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.int64)
    return out
