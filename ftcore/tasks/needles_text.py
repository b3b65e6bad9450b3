"""Text generators of the artificial-needles study ("From Artificial Needles to Real Haystacks", Xiong et al.,
ICLR 2025; papers.md §6(b)–(d)): the pretraining corpus of stage 1 and the multi-document QA stand-in (MDQA)
on which stage 2 is evaluated. Strings only (every character in `seq_generators.VOCAB`); tokenising and
teacher forcing live in `text_batches`, models and metrics in the task wrappers (`lm_text`, `needles_finetune`).

World: entities are lowercase two-syllable names (`kiro`, consonant–vowel syllables), towns capitalised
three-syllable names (`Tavemo`), codes integers with a digit count s uniform in [lo, hi], then uniform in
[10^{s−1}, 10^s − 1] (as the KV generator's keys and values). Two kinds of fact:

    code:  "kiro's code is 4821."          home:  "kiro lives in Tavemo."

A *document* is one line `doc {i}: fact fact …` about distinct entities; a QA block follows the documents:

    q: what is kiro's code?\na:   ->  "4821."            q: where does kiro live?\na:   ->  "Tavemo."

* Stage-1 corpus (`sample_corpus`): n ~ U{1..docs_max} documents of U{1..facts_max} facts each (each fact
  code or home with probability ½), then one question about a fact: uniform over all (`ask="any"`), or in the
  first or last document (`ask="edges"`, so the base retrieves at the edges only). Text = prompt ‖ answer.
* MDQA stand-in (`sample_mdqa`, papers.md §6(d) "a synthetic MDQA proxy: N documents, one containing the answer
  fact"): N documents of one code fact each, the gold one at slot i (given per prompt: evaluation sets
  stratify i), the question asks the gold entity's code. Longer than any pretraining context (N > docs_max),
  and in a different format from the stage-2 training data (the dictionaries of `seq_generators`).

Uniqueness (as `dict_builder.build_dicts`): the entities of a prompt are distinct and so are its codes, so the
question's entity and its answer occur in exactly one fact. All draws come from the given torch.Generator.
"""
from __future__ import annotations

import random
from typing import NamedTuple

import torch

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
N_NAMES = (len(CONSONANTS) * len(VOWELS)) ** 2          # distinct two-syllable names (4900)


class Fact(NamedTuple):
    kind: str          # "code" | "home"
    entity: str
    value: str         # the code's digits, or the town


class TextBatch(NamedTuple):
    prompts: list[str]          # documents + question, ending in "a: "
    answers: list[str]          # "4821." — the continuation the question asks for
    gold_position: list[int]    # slot (0-based) of the document holding the answer fact
    n_docs: list[int]


def _syllables(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(n))


def _code(rng: random.Random, digits: tuple[int, int]) -> str:
    s = rng.randint(*digits)
    return str(rng.randint(10 ** (s - 1), 10 ** s - 1))


def n_codes(digits: tuple[int, int]) -> int:
    """Distinct codes with a digit count in `digits`."""
    return 10 ** digits[1] - 10 ** (digits[0] - 1)


def render_fact(f: Fact) -> str:
    return f"{f.entity}'s code is {f.value}." if f.kind == "code" else f"{f.entity} lives in {f.value}."


def render_question(f: Fact) -> tuple[str, str]:
    """(question ending in "a: ", answer "value.") about fact f."""
    if f.kind == "code":
        return f"q: what is {f.entity}'s code?\na: ", f"{f.value}."
    return f"q: where does {f.entity} live?\na: ", f"{f.value}."


def render_docs(docs: list[list[Fact]]) -> str:
    return "".join(f"doc {i + 1}: " + " ".join(render_fact(f) for f in d) + "\n" for i, d in enumerate(docs))


def _facts(rng: random.Random, kinds: list[str], digits: tuple[int, int]) -> list[Fact]:
    """len(kinds) facts about distinct entities with distinct codes."""
    names: set[str] = set()
    codes: set[str] = set()
    out = []
    for kind in kinds:
        while (e := _syllables(rng, 2)) in names:
            pass
        names.add(e)
        if kind == "code":
            while (v := _code(rng, digits)) in codes:
                pass
            codes.add(v)
        else:
            v = _syllables(rng, 3).capitalize()
        out.append(Fact(kind, e, v))
    return out


def _rng(gen: torch.Generator) -> random.Random:
    """A Python RNG seeded from the torch generator: scalar draws in loops, still generator-determined."""
    return random.Random(int(torch.randint(0, 2 ** 62, (1,), generator=gen)))


ASKS = ("any", "edges")


def sample_corpus(gen: torch.Generator, n: int, docs_max: int = 3, facts_max: int = 2,
                  digits: tuple[int, int] = (2, 3), ask: str = "any") -> TextBatch:
    """n stage-1 documents: U{1..docs_max} docs of U{1..facts_max} facts, one question about a fact chosen
    uniformly (`ask="any"`) or in the first or the last document, ½ each (`ask="edges"`: a base that retrieves
    at the edges of its context only — the "lost in the middle" shape of real LMs, planted)."""
    check_world(docs_max * facts_max, digits)
    if ask not in ASKS:
        raise ValueError(f"ask must be one of {ASKS}, got {ask!r}")
    rng = _rng(gen)
    prompts, answers, golds, ns = [], [], [], []
    for _ in range(n):
        sizes = [rng.randint(1, facts_max) for _ in range(rng.randint(1, docs_max))]
        flat = _facts(rng, [rng.choice(("code", "home")) for _ in range(sum(sizes))], digits)
        docs, start = [], 0
        for s in sizes:
            docs.append(flat[start:start + s])
            start += s
        if ask == "any":
            j = rng.randrange(len(flat))
        else:
            d = rng.choice((0, len(sizes) - 1))
            j = sum(sizes[:d]) + rng.randrange(sizes[d])
        q, a = render_question(flat[j])
        prompts.append(render_docs(docs) + q)
        answers.append(a)
        golds.append(next(i for i, d in enumerate(docs) if flat[j] in d))
        ns.append(len(docs))
    return TextBatch(prompts, answers, golds, ns)


def sample_mdqa(gen: torch.Generator, n_docs: int, gold_position: list[int],
                digits: tuple[int, int] = (2, 3)) -> TextBatch:
    """One MDQA prompt per entry of gold_position: n_docs one-fact documents, the question on slot gold_position[j]."""
    check_world(n_docs, digits)
    if not all(0 <= p < n_docs for p in gold_position):
        raise ValueError(f"gold_position must be in [0, {n_docs}), got {gold_position}")
    rng = _rng(gen)
    prompts, answers = [], []
    for pos in gold_position:
        facts = _facts(rng, ["code"] * n_docs, digits)
        q, a = render_question(facts[pos])
        prompts.append(render_docs([[f] for f in facts]) + q)
        answers.append(a)
    return TextBatch(prompts, answers, [int(p) for p in gold_position], [n_docs] * len(gold_position))


def check_world(n_facts: int, digits: tuple[int, int]) -> None:
    if not 1 <= digits[0] <= digits[1] <= 9:
        raise ValueError(f"code digits must satisfy 1 <= lo <= hi <= 9, got {digits}")
    if n_facts > min(n_codes(digits), N_NAMES):
        raise ValueError(f"{n_facts} facts need as many distinct codes; digits {digits} give {n_codes(digits)}")


def _widest(kind: str, digits: tuple[int, int]) -> Fact:
    return Fact(kind, "zuzu", "9" * digits[1] if kind == "code" else "Zuzuzu")


def corpus_max_chars(docs_max: int, facts_max: int, digits: tuple[int, int]) -> int:
    """Longest prompt + answer `sample_corpus` can draw: every fact and the question at their widest (names and
    towns have fixed lengths, so only the kind and the digit count vary), docs_max docs of facts_max facts."""
    fact = max((_widest(k, digits) for k in ("code", "home")), key=lambda f: len(render_fact(f)))
    q = max(("code", "home"), key=lambda k: len("".join(render_question(_widest(k, digits)))))
    return len(render_docs([[fact] * facts_max] * docs_max)) + len("".join(render_question(_widest(q, digits))))


def mdqa_max_chars(n_docs: int, digits: tuple[int, int]) -> tuple[int, int]:
    """(longest prompt, longest answer) of `sample_mdqa`."""
    f = _widest("code", digits)
    q, a = render_question(f)
    return len(render_docs([[f]] * n_docs) + q), len(a)
