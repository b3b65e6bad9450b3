"""Teacher forcing of (prompt, answer) text through any tokenizer (`ftcore.tokenizers.tokenizer_for`), and the
chunked scoring of a fixed evaluation set: what the text tasks of the needles study (`lm_text`,
`needles_finetune`) share, for ftcore's char-level models and HF causal LMs alike.

A sample is s = BOS ‖ encode(prompt) ‖ encode(answer) ‖ EOS (prompt and answer encoded separately, so the answer's
tokens are known for any tokenizer — the usual supervised fine-tuning layout). The input is s[:-1] right-padded
with PAD to T; the target at position t is s[t+1] where scored and −1 elsewhere:

    answer-only (fine-tuning, papers.md §6(b) "loss only on answer tokens"): t ∈ [1 + |prompt| − 1, |s| − 2]
    language modelling (pretraining): every t ∈ [0, |s| − 2]

With `suffix` the value and its suffix ("4821" and ".") are encoded separately, so the value's tokens are known
and an exact match can score the value alone (the needle), not the punctuation and EOS around it.
"""
from __future__ import annotations

import torch

from ftcore.tasks.kv_retrieval import answer_scores
from ftcore.tokenizers import model_inputs

ROUND = 16     # HF batches are padded to a multiple of this (their lengths are only known after tokenising)


def encode_pairs(tok, prompts: list[str], answers: list[str], T: int | None = None, lm: bool = False,
                 suffix: str = ""):
    """-> input ids (P, T) int64, targets (P, T) int64 (−1 = not scored), answer targets (P, T) (−1 off the answer;
    with `suffix`, e.g. ".", also off the tokens of that suffix and the EOS: the answer's value only).

    T = None pads to the longest sample rounded up to ROUND; a sample longer than a given T is an error."""
    seqs, starts, ends = [], [], []
    for p, a in zip(prompts, answers):
        head = [tok.bos_id] + tok.encode(p)
        value = a[:len(a) - len(suffix)] if suffix and a.endswith(suffix) else a
        body = tok.encode(value) + tok.encode(a[len(value):]) if suffix else tok.encode(a)
        seqs.append(head + body + [tok.eos_id])
        starts.append(len(head) - 1)                          # first input position whose target is an answer token
        ends.append(len(head) - 1 + len(tok.encode(value)) if suffix else len(seqs[-1]) - 1)
    longest = max(len(s) - 1 for s in seqs)
    if T is None:
        T = -(-longest // ROUND) * ROUND
    if longest > T:
        raise ValueError(f"a sample of {longest} tokens exceeds the config's bound T={T}")
    P = len(seqs)
    inp = torch.full((P, T), tok.pad_id, dtype=torch.int64)
    ans = torch.full((P, T), -1, dtype=torch.int64)
    tgt = torch.full((P, T), -1, dtype=torch.int64)
    for j, (s, a0, a1) in enumerate(zip(seqs, starts, ends)):
        s = torch.tensor(s, dtype=torch.int64)
        n = len(s) - 1
        inp[j, :n] = s[:-1]
        tgt[j, :n] = s[1:]
        if not lm:
            tgt[j, :a0] = -1
        ans[j, a0:a1] = s[a0 + 1:a1 + 1]
    return inp, tgt, ans


def stack_members(rows: list[tuple[torch.Tensor, ...]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Per-member (inp, tgt, ...) of possibly different T -> (E, P, T_max) each (PAD / −1 on the right)."""
    T = max(r[0].shape[-1] for r in rows)
    out = []
    for k in range(len(rows[0])):
        fill = pad_id if k == 0 else -1
        out.append(torch.stack([torch.nn.functional.pad(r[k], (0, T - r[k].shape[-1]), value=fill) for r in rows]))
    return tuple(out)


@torch.no_grad()
def score(model, inp: torch.Tensor, tgts: list[torch.Tensor], model_cfg, V: int, dtype, chunk: int):
    """inp (E, P, T) ids, each target (E, P, T) -> per target, per prompt (E, P): exact match, mean CE over its
    scored tokens, right tokens, scored tokens (`kv_retrieval.answer_scores`), one forward per chunk of prompts."""
    out = [[[], [], [], []] for _ in tgts]
    for s in range(0, inp.shape[1], chunk):
        logits = model(model_inputs(inp[:, s:s + chunk], model_cfg, V, dtype))       # (E, c, T, V)
        for acc, tgt in zip(out, tgts):
            for lst, v in zip(acc, answer_scores(logits, tgt[:, s:s + chunk])):
                lst.append(v)
    return [tuple(torch.cat(v, 1) for v in acc) for acc in out]


def token_mean(ce: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Token-weighted mean CE (E,) from per-prompt mean CE and token counts (E, P)."""
    return (ce * n).sum(1) / n.sum(1).clamp(min=1)
