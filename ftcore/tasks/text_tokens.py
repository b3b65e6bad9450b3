"""Texts -> token ids for a Hugging Face causal LM used as a text encoder, and the embedding read from its last hidden
states (`feature_retrieval` with `model.name: hf_causal_lm`, `model.output: hidden`).

    s(t)     = tok(t) ‖ EOS                      the model's own tokenizer, no special tokens, then EOS appended
    ids      (T, L) long, s(t) right-padded with PAD to the longest, L = max_t |s(t)|
    end      (T,) = |s(t)| − 1                   the position of the appended EOS
    e(t)     = h_L[end(t)]                       the last layer's hidden state there (after the final norm), (H,)

The embedding is the hidden state at the appended EOS, the GPT-style causal text embedding of cpt-text (Neelakantan
et al., "Text and Code Embeddings by Contrastive Pre-Training", 2022: "[EOS] ... the last layer's hidden state at
[EOS] is the embedding"). With causal attention that position attends to every token of the text and to no padding
(padding lies to its right), so neither the pad id nor an attention mask changes e(t); the appended EOS gives every
text the same summary slot instead of whichever word happens to end it. Mean pooling over the real tokens would
also be well defined here; the last token is the one that sees the whole text under a causal mask (every earlier
position sees a prefix only), so it is the natural read-out of a decoder.
"""
from __future__ import annotations

import torch


def token_table(tok, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(T,) texts -> (ids (T, L) long right-padded with tok.pad_id, end (T,) long: the position of the EOS appended
    to each text). `tok`: ftcore.tokenizers.HFTokenizer. Each distinct text is tokenised once."""
    uniq = list(dict.fromkeys(texts))
    seqs = dict(zip(uniq, (s + [tok.eos_id] for s in tok.encode_batch(uniq))))
    L = max((len(s) for s in seqs.values()), default=1)
    ids = torch.full((len(texts), L), tok.pad_id, dtype=torch.long)
    end = torch.zeros(len(texts), dtype=torch.long)
    for i, t in enumerate(texts):
        s = seqs[t]
        ids[i, : len(s)], end[i] = torch.tensor(s, dtype=torch.long), len(s) - 1
    return ids, end


def last_token(h: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """h (E, R, T, H) hidden states, end (E, R) positions -> (E, R, H): h[e, r, end[e, r]]."""
    return h.gather(2, end[..., None, None].expand(*end.shape, 1, h.shape[-1])).squeeze(2)
