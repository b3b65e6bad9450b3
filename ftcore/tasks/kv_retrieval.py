"""`kv_retrieval`: numerical dictionary key-value retrieval ("From Artificial Needles to Real Haystacks",
Xiong et al., ICLR 2025; papers.md §6; code edixiong/artificial-needles `data-generation/scripts/dict_builder.py`
`build_dicts`, `generate_dataset.py`), shrunk for a small character-level model trained from scratch.

A prompt lists `n_dicts` dictionaries of integer keys and values; one of them, the gold dict at slot
i ∈ [0, n_dicts), holds the gold key k and its value v, which occur nowhere else; the prompt ends with a
query for k and the answer is v (generator: `seq_generators.sample_kv_retrieval`; `fmt: tiny` renders
`{k:v,k:v}{k:v}…?k:` -> `v`, the paper's template / no_template prompts are available too). `n_dicts` is the
context-length knob; `task/context_tokens` reports the resulting prompt length in tokens.

Tokens: characters (`seq_generators.VOCAB`, V symbols) fed one-hot, so io_dims = (V, V) and the sequence
models' linear read_in is the token embedding. Teacher forcing on s = prompt ‖ answer ‖ EOS (length L + A):
the input is s[:-1] right-padded to the config's worst case T = L_max + A_max − 1 (`kv_max_lengths`, so a
member's shapes never depend on its pack or its draws), the target at position t is s[t+1] on the A answer
positions t = L−1 … L+A−2 and −1 (ignored) elsewhere. Training loss per member (next-token cross-entropy
on the answer tokens only, padding weighted 0):

    ℓ = Σ_b w_b · (1/A_b) Σ_{t ∈ answer(b)} −log softmax(z_{b,t})[s_{b,t+1}],     w_b = 1/B

Context-length curriculum / mixture (training only; off by default): training prompts at step s have
n(s) = min(n_dicts_start + n_dicts_inc · ⌊s / n_dicts_interval⌋, n_dicts) dicts (`n_dicts_at`, a pure function
of the step, like Garg's curriculum in `icl_regression.curriculum_at`), or with `mix_n_dicts` each prompt draws
its own n_j ~ U{1..n(s)}. Shorter prompts are padded to the same T, so shapes never change, and the draws come
from the member's own generator, so a member's data does not depend on its pack. The lookup (find the queried
key, copy the value after it: an induction-head circuit) has a long loss plateau at a fixed n_dicts ≥ 2, while
n = 1 (copy the only value) is learnt at once. Measured (sweeps/kv_retrieval.yaml header): neither the
curriculum nor the mixture shortens the plateau of a 2-layer `transformer` (learned absolute positions, so the
previous-token step of the lookup must be learnt per position); a 2-layer `mamba` (its causal conv mixes
neighbouring tokens) leaves the plateau within ~3000 steps.

Evaluation: `n_eval` fixed prompts per member (stream "eval") whose gold slots are stratified, slot of
prompt j = j mod n_dicts, so every slot has ⌊n_eval/n_dicts⌋ or one more samples — also when training
fixes `gold_pos` (then the metrics measure how retrieval transfers to the other slots). Metrics (E,):

    acc/mean         exact match of the whole answer (value digits and EOS): every teacher-forced argmax
                     right. This equals greedy decoding's exact match: while the argmaxes are right the
                     greedy prefix is the teacher's prefix, and at the first wrong one greedy emits it too.
    acc/pos{i}       acc/mean over the prompts whose gold dict is at slot i (0-based, zero-padded to 2 digits)
    val/ce           mean answer-token cross-entropy (the training loss on the eval set)
    val/token_acc    fraction of answer tokens whose argmax is right
    task/context_tokens   mean prompt length in tokens (the context the model reads before answering)

Members differ by seed only (`per_member = ()`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ftcore.fields import check
from ftcore.models.mlp import build_model
from ftcore.registry import TASKS
from ftcore.seeding import generators
from ftcore.tasks.seq_generators import (
    FORMATS,
    PAD,
    VOCAB,
    KvBatch,
    kv_max_lengths,
    sample_kv_retrieval,
)
from ftcore.tasks.sequence import SequenceTask

V = len(VOCAB)


@dataclass
class KvRetrievalConfig:
    name: str = "kv_retrieval"
    n_dicts: int = 8            # dictionaries in the context (the context-length knob; paper 85)
    gold_dict_size: int = 2     # entries of the gold dict (paper 3)
    dict_size_min: int = 2      # other dicts: size uniform in [min, max] (paper 3..4)
    dict_size_max: int = 2
    key_digits_min: int = 2     # keys: digit count uniform in [min, max], then uniform (paper 3..4)
    key_digits_max: int = 2
    val_digits_min: int = 2     # values: same rule (paper 3..4)
    val_digits_max: int = 2
    gold_pos: int = -1          # training gold slot: -1 = uniform over [0, n_dicts), else this slot
    fmt: str = "tiny"           # tiny | compact | no_template | template (seq_generators.FORMATS)
    batch_size: int = 32        # B prompts per training step
    n_eval: int = 256           # evaluation prompts per member, gold slots stratified
    n_dicts_start: int = 1      # context-length curriculum (training only; `n_dicts_at`): first n_dicts,
    n_dicts_inc: int = 1        #   added every n_dicts_interval steps, up to n_dicts;
    n_dicts_interval: int = 0   #   0 = off (always n_dicts)
    mix_n_dicts: bool = False   # training prompt j draws its own n_j uniform in 1..n_dicts_at(step)

    per_member = ()             # members of a pack differ by seed only

    def __post_init__(self):
        check_dict_fields(self)
        check(-1 <= self.gold_pos < self.n_dicts, "task.gold_pos", f"-1 (uniform) or a slot in 0..{self.n_dicts - 1}",
              self.gold_pos)
        check(self.batch_size >= 1, "task.batch_size", ">= 1", self.batch_size)
        check(self.n_dicts_interval >= 0, "task.n_dicts_interval", ">= 0 (0 = no curriculum)",
              self.n_dicts_interval)
        if self.n_dicts_interval > 0:
            check(1 <= self.n_dicts_start <= self.n_dicts, "task.n_dicts_start",
                  f"in 1..{self.n_dicts} (the curriculum's end, task.n_dicts)", self.n_dicts_start)
            check(self.n_dicts_inc >= 0, "task.n_dicts_inc", ">= 0", self.n_dicts_inc)
        varying = self.n_dicts_interval > 0 or self.mix_n_dicts
        check(not varying or self.gold_pos == -1, "task.gold_pos",
              "-1 when the training context varies (task.n_dicts_interval > 0 or task.mix_n_dicts)", self.gold_pos)
        check(self.n_eval >= self.n_dicts, "task.n_eval", f">= task.n_dicts = {self.n_dicts} (a prompt per slot)",
              self.n_eval)

    def sample(self, gen: torch.Generator, n_prompts: int, gold_position, n_dicts: int | None = None) -> KvBatch:
        return sample_kv_retrieval(gen, n_prompts, n_dicts or self.n_dicts, gold_position, self.fmt, self.gold_dict_size,
                                   (self.dict_size_min, self.dict_size_max),
                                   (self.key_digits_min, self.key_digits_max),
                                   (self.val_digits_min, self.val_digits_max))

    def max_lengths(self) -> tuple[int, int]:
        """(L_max prompt tokens, A_max answer tokens incl. EOS) over every prompt this config can draw."""
        return kv_max_lengths(self.n_dicts, self.gold_dict_size, (self.dict_size_min, self.dict_size_max),
                              (self.key_digits_min, self.key_digits_max),
                              (self.val_digits_min, self.val_digits_max), self.fmt)


def check_dict_fields(cfg) -> None:
    """The checks every config of dictionary key-value data shares (kv_retrieval, needles_finetune): n_dicts, fmt,
    the size and digit ranges, and enough distinct keys and values for the generator's uniqueness rules."""
    check(cfg.n_dicts >= 1, "task.n_dicts", ">= 1", cfg.n_dicts)
    check(cfg.fmt in FORMATS, "task.fmt", f"one of {', '.join(FORMATS)}", cfg.fmt)
    for part in ("dict_size", "key_digits", "val_digits"):
        lo, hi = getattr(cfg, f"{part}_min"), getattr(cfg, f"{part}_max")
        check(lo >= 1, f"task.{part}_min", ">= 1", lo)
        check(hi >= lo, f"task.{part}_max", f">= task.{part}_min = {lo}", hi)
    check(cfg.key_digits_max <= 9 and cfg.val_digits_max <= 9, "task.key_digits_max/val_digits_max",
          "<= 9", (cfg.key_digits_max, cfg.val_digits_max))
    n_keys = 10 ** cfg.key_digits_max - 10 ** (cfg.key_digits_min - 1)     # integers with those digit counts
    n_vals = 10 ** cfg.val_digits_max - 10 ** (cfg.val_digits_min - 1)
    check(1 <= cfg.gold_dict_size <= n_keys, "task.gold_dict_size", f"in 1..{n_keys} (distinct keys)",
          cfg.gold_dict_size)
    # other dicts avoid the gold key, so they have n_keys − 1 keys to draw distinct ones from
    check(cfg.n_dicts == 1 or cfg.dict_size_max <= n_keys - 1, "task.dict_size_max",
          f"<= {n_keys - 1} (distinct keys other than the gold key)", cfg.dict_size_max)
    check(n_vals >= 2, "task.val_digits_max", "a range with >= 2 values (the gold value is unique)",
          cfg.val_digits_max)


def n_dicts_at(cfg: KvRetrievalConfig, step: int) -> int:
    """Training context length at step s, a pure function of the step (as `icl_regression.curriculum_at`):

        n(s) = min(n_dicts_start + n_dicts_inc · ⌊s / n_dicts_interval⌋, n_dicts)     (n_dicts when interval = 0)

    With `mix_n_dicts` it is the upper end of each prompt's uniform draw n_j ∈ 1..n(s). Evaluation always uses
    n_dicts, and every batch is padded to T = seq_len(cfg) of n_dicts, so shapes never change."""
    if cfg.n_dicts_interval == 0:
        return cfg.n_dicts
    return min(cfg.n_dicts_start + cfg.n_dicts_inc * (step // cfg.n_dicts_interval), cfg.n_dicts)


def train_sample(cfg: KvRetrievalConfig, gen: torch.Generator, step: int) -> KvBatch | list[KvBatch]:
    """The B training prompts of one member at `step` (drawn from that member's generator only): one batch at
    n_dicts_at(step), or with `mix_n_dicts` one batch per distinct n_j (counts of n_j ~ U{1..n(s)} first)."""
    n = n_dicts_at(cfg, step)
    gold = None if cfg.gold_pos < 0 else cfg.gold_pos
    if not cfg.mix_n_dicts:
        return cfg.sample(gen, cfg.batch_size, gold, n)
    ns = torch.randint(1, n + 1, (cfg.batch_size,), generator=gen)                  # (B,) n_j
    return [cfg.sample(gen, int((ns == k).sum()), None, k) for k in range(1, n + 1) if (ns == k).any()]


def seq_len(cfg: KvRetrievalConfig) -> int:
    """T = L_max + A_max − 1: the model input s[:-1] of the longest prompt ‖ answer ‖ EOS."""
    prompt, answer = cfg.max_lengths()
    return prompt + answer - 1


def teacher_forcing(b: KvBatch, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids (P, T) = s[:-1] PAD-padded, target ids (P, T) = s[t+1] on the answer positions, −1 elsewhere."""
    P = b.tokens.shape[0]
    inp = torch.full((P, T), PAD, dtype=torch.int64)
    tgt = torch.full((P, T), -1, dtype=torch.int64)
    for p in range(P):
        L = int(b.lengths[p])
        ans = b.answer_tokens[p][b.answer_tokens[p] != PAD]                     # (A,) value digits + EOS
        s = torch.cat([b.tokens[p, :L], ans])                                    # (L + A,)
        if len(s) - 1 > T:
            raise ValueError(f"a prompt of {len(s) - 1} tokens exceeds the config's bound T={T}")
        inp[p, :len(s) - 1] = s[:-1]
        tgt[p, L - 1:len(s) - 1] = ans
    return inp, tgt


def answer_scores(logits: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """logits (..., T, V), tgt (..., T) with −1 = ignored -> per prompt (...,): exact match, mean answer CE,
    right answer tokens, answer tokens."""
    mask = tgt >= 0
    safe = tgt.clamp(min=0)
    nll = -logits.float().log_softmax(-1).gather(-1, safe[..., None])[..., 0]   # (..., T)
    right = (logits.argmax(-1) == safe) & mask
    n = mask.sum(-1)
    exact = (right | ~mask).all(-1)
    ce = (nll * mask).sum(-1) / n.clamp(min=1)
    return exact.float(), ce, right.sum(-1).float(), n.float()


def pos_keys(n_slots: int, prefix: str = "acc/pos") -> list[str]:
    """Metric names per gold slot, zero-padded to at least 2 digits so they sort in slot order."""
    width = max(2, len(str(n_slots - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(n_slots)]


@TASKS.register("kv_retrieval")
class KvRetrieval(SequenceTask):
    Config = KvRetrievalConfig
    per_member = KvRetrievalConfig.per_member

    def __init__(self, cfgs, model_cfg, seeds):
        super().__init__(cfgs, model_cfg, seeds)
        self.T = seq_len(cfgs[0])

    @staticmethod
    def io_dims(cfg, model_cfg):
        return V, V

    @staticmethod
    def seq_len(cfg):
        return seq_len(cfg), f"the longest prompt + answer − 1 for task.n_dicts={cfg.n_dicts}, fmt={cfg.fmt}"

    def build_base(self):
        model = build_model(self.model_cfg, V, V, generators(self.seeds, "base"))
        inps, tgts, ctx = [], [], []
        for cfg, g in zip(self.cfgs, generators(self.seeds, "eval")):
            b = cfg.sample(g, cfg.n_eval, [j % cfg.n_dicts for j in range(cfg.n_eval)])
            inp, tgt = teacher_forcing(b, self.T)
            inps.append(inp)
            tgts.append(tgt)
            ctx.append(b.lengths.double().mean())
            self.eval_pos = b.gold_position                                     # (P,) same for every member
        self.eval_inp, self.eval_tgt = torch.stack(inps), torch.stack(tgts)     # (E, P, T) int64
        self.context_tokens = torch.stack(ctx).float()                          # (E,)
        return model

    def batch(self, step):
        inps, tgts = [], []
        for cfg, g in zip(self.cfgs, self.gens):
            bs = train_sample(cfg, g, step)
            parts = [teacher_forcing(b, self.T) for b in (bs if isinstance(bs, list) else [bs])]
            inps.append(torch.cat([p[0] for p in parts]))                        # (B, T)
            tgts.append(torch.cat([p[1] for p in parts]))
        x = F.one_hot(torch.stack(inps), V)                                      # (E, B, T, V)
        y = torch.stack(tgts)                                                    # (E, B, T) target ids, −1 ignored
        w = torch.full(y.shape[:2], 1.0 / y.shape[1])                            # (E, B)
        return x.to(self.device, self.dtype), y.to(self.device, self.dtype), w.to(self.device, self.dtype)

    @staticmethod
    def loss(pred, y, w):
        """pred (E, B, T, V) logits vs y (E, B, T) target ids (−1 = not an answer token):
        Σ_b w_b · mean answer-token cross-entropy  -> (E,)."""
        tgt = y.round().long()                                                   # ids travel as floats (exact < 256)
        mask = tgt >= 0
        nll = -pred.float().log_softmax(-1).gather(-1, tgt.clamp(min=0)[..., None])[..., 0]   # (E, B, T)
        per = (nll * mask).sum(-1) / mask.sum(-1).clamp(min=1)                   # (E, B)
        return (w * per).sum(-1).to(pred.dtype)

    @torch.no_grad()
    def evaluate(self, model):
        c0 = self.cfgs[0]
        exact, ce, right, n = [], [], [], []
        for s in range(0, self.eval_inp.shape[1], c0.batch_size):               # chunks bound the logits' memory
            inp, tgt = self.eval_inp[:, s:s + c0.batch_size], self.eval_tgt[:, s:s + c0.batch_size]
            logits = model(F.one_hot(inp, V).to(self.dtype))                     # (E, c, T, V)
            for acc, v in zip((exact, ce, right, n), answer_scores(logits, tgt)):
                acc.append(v)
        exact, ce, right, n = (torch.cat(v, 1) for v in (exact, ce, right, n))  # (E, P)
        out = {"acc/mean": exact.mean(1)}
        pos = self.eval_pos.to(exact.device)
        for i, key in enumerate(pos_keys(c0.n_dicts)):
            out[key] = exact[:, pos == i].mean(1)
        out["val/ce"] = ce.mean(1)
        out["val/token_acc"] = right.sum(1) / n.sum(1)
        out["task/context_tokens"] = self.context_tokens.to(exact)
        return {k: v.to(self.dtype) for k, v in out.items()}

