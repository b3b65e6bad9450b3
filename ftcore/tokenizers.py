"""Tokenizers behind one small interface, so a text task feeds ftcore's char-level models and HF causal LMs alike.

* ftcore's own sequence models (`transformer`, `looped_transformer`, `mamba`, ...) read characters of the
  kv vocabulary (`seq_generators.VOCAB`), fed one-hot: their linear `read_in` is the token embedding.
* `hf_causal_lm` reads the token ids of its own tokenizer (`AutoTokenizer` from `model.path`).

A task asks `tokenizer_for(model_cfg)` for the tokenizer and `model_inputs(ids, model_cfg, V)` for what to hand the
model: one-hot floats (E, B, T, V) for ftcore's models, the ids themselves (E, B, T) int64 for an HF model.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

HF_MODELS = ("hf_causal_lm",)
VLM_MODELS = ("hf_vlm",)      # HF vision-language models (ftcore/models/hf_vlm.py): their own processor, no text task
BACKBONE_MODELS = ("hf_backbone",)   # an HF transformer stack fed feature tokens (ftcore/models/hf_backbone.py)


@dataclass(frozen=True)
class CharTokenizer:
    """The kv vocabulary: PAD=0, BOS=1, EOS=2, then one id per character (`seq_generators.VOCAB`)."""
    vocab_size: int
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def encode(self, text: str) -> list[int]:
        from ftcore.tasks.seq_generators import encode
        return encode(text)

    def decode(self, ids) -> str:
        from ftcore.tasks.seq_generators import decode
        return decode(ids)


class HFTokenizer:
    """An HF tokenizer seen through the same interface. `vocab_size` is the model's embedding rows (what its logits
    cover), which can exceed the tokenizer's own count; pad falls back to EOS (GPT-2 and Llama ship no pad)."""

    def __init__(self, tok, vocab_size: int):
        self.tok, self.vocab_size = tok, vocab_size
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else 0
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else self.eos_id

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts in one call (a fast tokenizer encodes them in parallel); the same ids as `encode` each."""
        return [list(ids) for ids in self.tok(list(texts), add_special_tokens=False)["input_ids"]]

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)


def is_hf(model_cfg) -> bool:
    return getattr(model_cfg, "name", None) in HF_MODELS


def tokenizer_for(model_cfg) -> CharTokenizer | HFTokenizer:
    """The tokenizer whose ids `model_cfg`'s model reads."""
    if is_hf(model_cfg):
        return _hf_tokenizer(model_cfg.path, bool(getattr(model_cfg, "download", False)))
    from ftcore.tasks.seq_generators import VOCAB
    return CharTokenizer(len(VOCAB))


@functools.lru_cache(maxsize=8)
def _hf_tokenizer(path: str, download: bool) -> HFTokenizer:
    from ftcore.models.hf_causal_lm import load_tokenizer, model_vocab_size
    return HFTokenizer(load_tokenizer(path, download), model_vocab_size(path, download))


def model_inputs(ids: torch.Tensor, model_cfg, vocab_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """ids (E, B, T) int64 -> what the model reads: the ids for an HF model, one-hot (E, B, T, V) otherwise."""
    if is_hf(model_cfg):
        return ids
    return F.one_hot(ids, vocab_size).to(dtype)
