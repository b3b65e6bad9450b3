"""`lm_text`: next-token language modelling on generated text with structure — stage 1 of the artificial-needles
study (papers.md §6(d) GPU plan, step (1): "pretrain a decoder from scratch on generic synthetic text-like data";
Xiong et al., ICLR 2025 fine-tune a *pretrained* LM, which cannot be downloaded here).

Documents come from `needles_text.sample_corpus`: a few lines `doc i: kiro's code is 4821. mira lives in Tavemo.`
then `q: what is kiro's code?\na: 4821.` — facts, and questions answered from them, so the base learns the QA format
and short-context retrieval that stage 2 (`needles_finetune`) then measures at longer contexts by gold position.

Tokens: `tokenizer_for(model_cfg)` — characters of `seq_generators.VOCAB` fed one-hot for ftcore's models, an HF
model's own ids for `hf_causal_lm`; io_dims = (V, V) with V the tokenizer's vocab_size. Sequence s = BOS ‖ prompt ‖
answer ‖ EOS (`text_batches.encode_pairs`, lm=True). Loss per member (every real token; PAD weighs 0):

    ℓ = Σ_b w_b · (1/|s_b| − 1) Σ_t −log softmax(z_{b,t})[s_{b,t+1}],     w_b = 1/B

Metrics on `n_eval` held-out documents (stream "eval"), each (E,):
    lm/ce            token-weighted mean next-token cross-entropy (nats/token) — stage 2's retention baseline
    lm/answer_acc    teacher-forced exact match of the answer's value (`4821` of `a: 4821.`: every argmax right)
    lm/answer_ce     mean cross-entropy of those value tokens
Members differ by seed only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ftcore.fields import check
from ftcore.models.mlp import build_model
from ftcore.registry import TASKS
from ftcore.seeding import generators
from ftcore.tasks.kv_retrieval import KvRetrieval
from ftcore.tasks.needles_text import ASKS, N_NAMES, corpus_max_chars, n_codes, sample_corpus
from ftcore.tasks.sequence import SEQ_MODELS, SequenceTask
from ftcore.tasks.text_batches import encode_pairs, score, stack_members, token_mean
from ftcore.tokenizers import HF_MODELS, is_hf, model_inputs, tokenizer_for


def check_world(cfg, prefix: str = "task") -> None:
    """The corpus fields shared by `lm_text` and `needles_finetune` (its retention set)."""
    check(cfg.docs_max >= 1, f"{prefix}.docs_max", ">= 1", cfg.docs_max)
    check(cfg.facts_max >= 1, f"{prefix}.facts_max", ">= 1", cfg.facts_max)
    check(1 <= cfg.digits_min <= 9, f"{prefix}.digits_min", "in 1..9", cfg.digits_min)
    check(cfg.ask in ASKS, f"{prefix}.ask", f"one of {', '.join(ASKS)}", cfg.ask)
    check(cfg.digits_min <= cfg.digits_max <= 9, f"{prefix}.digits_max", f"in {cfg.digits_min}..9", cfg.digits_max)
    n = min(n_codes((cfg.digits_min, cfg.digits_max)), N_NAMES)
    check(cfg.docs_max * cfg.facts_max <= n, f"{prefix}.facts_max",
          f"<= {n // cfg.docs_max} (docs_max · facts_max facts need distinct codes)", cfg.facts_max)


@dataclass
class LmTextConfig:
    name: str = "lm_text"
    docs_max: int = 3          # documents per text: uniform in 1..docs_max
    facts_max: int = 2         # facts per document: uniform in 1..facts_max
    digits_min: int = 2        # codes: digit count uniform in [min, max], then uniform
    digits_max: int = 3
    ask: str = "any"           # question about any fact, or one in the first/last document (needles_text.ASKS)
    batch_size: int = 16       # texts per training step
    n_eval: int = 128          # held-out texts per member

    per_member = ()

    def __post_init__(self):
        check_world(self)
        check(self.batch_size >= 1, "task.batch_size", ">= 1", self.batch_size)
        check(self.n_eval >= 1, "task.n_eval", ">= 1", self.n_eval)

    @property
    def digits(self) -> tuple[int, int]:
        return self.digits_min, self.digits_max

    def sample(self, gen: torch.Generator, n: int):
        return sample_corpus(gen, n, self.docs_max, self.facts_max, self.digits, self.ask)


def char_len(cfg) -> int:
    """Input length bound with one token per character: BOS + longest text (+ EOS, − 1 for the shift)."""
    return corpus_max_chars(cfg.docs_max, cfg.facts_max, (cfg.digits_min, cfg.digits_max)) + 1


class TextTask(SequenceTask):
    """What `lm_text` and `needles_finetune` share: the tokenizer, the sequence bound, the base, the input encoding."""
    models = SEQ_MODELS + HF_MODELS

    def __init__(self, cfgs, model_cfg, seeds):
        super().__init__(cfgs, model_cfg, seeds)
        self.tok = tokenizer_for(model_cfg)
        self.V = self.tok.vocab_size
        self.static_T = not is_hf(model_cfg)      # chars: pad to the config's bound (shapes never depend on draws)

    @staticmethod
    def io_dims(cfg, model_cfg):
        V = tokenizer_for(model_cfg).vocab_size
        return V, V

    def encode(self, batches, T: int, lm: bool, suffix: str = ""):
        """Per-member text batches -> (E, P, T') inputs, targets, answer targets (T' = T for chars)."""
        rows = [encode_pairs(self.tok, b.prompts, b.answers, T if self.static_T else None, lm, suffix)
                for b in batches]
        return stack_members(rows, self.tok.pad_id)

    def inputs(self, ids: torch.Tensor) -> torch.Tensor:
        return model_inputs(ids.to(self.device), self.model_cfg, self.V, self.dtype)

    def build_model(self):
        return build_model(self.model_cfg, self.V, self.V, generators(self.seeds, "base"))

    def train_batch(self, inp, tgt):
        y = tgt.to(self.device, self.dtype)                                       # ids travel as floats (exact)
        w = torch.full(y.shape[:2], 1.0 / y.shape[1], device=self.device, dtype=self.dtype)   # (E, B)
        return self.inputs(inp), y, w

    loss = staticmethod(KvRetrieval.loss)       # mean CE over each sequence's scored tokens, weighted by w


@TASKS.register("lm_text")
class LmText(TextTask):
    Config = LmTextConfig
    per_member = LmTextConfig.per_member

    def __init__(self, cfgs, model_cfg, seeds):
        super().__init__(cfgs, model_cfg, seeds)
        self.T = char_len(cfgs[0])

    @staticmethod
    def seq_len(cfg):
        return char_len(cfg), f"the longest text (BOS + chars) for task.docs_max={cfg.docs_max}"

    def build_base(self):
        model = self.build_model()
        evals = [cfg.sample(g, cfg.n_eval) for cfg, g in zip(self.cfgs, generators(self.seeds, "eval"))]
        self.eval_inp, self.eval_tgt, self.eval_ans = self.encode(evals, self.T, lm=True, suffix=".")   # (E, P, T)
        return model

    def batch(self, step):
        inp, tgt, _ = self.encode([cfg.sample(g, cfg.batch_size) for cfg, g in zip(self.cfgs, self.gens)],
                                  self.T, lm=True)
        return self.train_batch(inp, tgt)

    @torch.no_grad()
    def evaluate(self, model):
        (_, ce, _, n), (exact, ace, _, _) = score(model, self.eval_inp, [self.eval_tgt, self.eval_ans],
                                                   self.model_cfg, self.V, self.dtype, self.cfgs[0].batch_size)
        out = {"lm/ce": token_mean(ce, n), "lm/answer_acc": exact.mean(1), "lm/answer_ce": ace.mean(1)}
        return {k: v.to(self.dtype) for k, v in out.items()}
