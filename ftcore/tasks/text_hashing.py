"""Text -> a fixed-size vector with no vocabulary and no download: the feature-hashing trick (Weinberger et al.,
"Feature Hashing for Large Scale Multitask Learning", ICML 2009) over word unigrams and bigrams.

    tokens(t)  = lower-cased runs of [a-z0-9']
    grams(t)   = tokens ∪ {"w_i w_{i+1}"}
    x_h        = Σ_{g ∈ grams, crc32(g) mod D = h} sign(g),   sign(g) = ±1 from a second bit of the hash
    x          = x / ‖x‖                                      (zero text -> zero vector)

crc32 is stable across processes and platforms (Python's `hash` of a str is salted per process). The sign halves the
bias that collisions add to inner products. The encoder on top (an `mlp`) learns what the words mean.
"""
from __future__ import annotations

import re
import zlib

import torch

_WORD = re.compile(r"[a-z0-9']+")


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def grams(text: str) -> list[str]:
    """Unigrams, then bigrams, in order of appearance."""
    t = tokens(text)
    return t + [f"{a} {b}" for a, b in zip(t, t[1:])]


def _codes(text: str, dim: int) -> tuple[list[int], list[float]]:
    """(bucket, sign) of every gram of `text`."""
    hs = [zlib.crc32(g.encode()) for g in grams(text)]
    return [h % dim for h in hs], [1.0 if (h >> 31) & 1 else -1.0 for h in hs]


def hash_text(text: str, dim: int) -> torch.Tensor:
    """One text -> (dim,) signed hashed counts, L2-normalised."""
    return hash_texts([text], dim)[0]


def hash_sparse(texts: list[str], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T,) texts -> (buckets (T, G) long, values (T, G)): the L2-normalised vectors of `hash_texts` as their
    G = most grams of a text entries, padded with (0, 0.0); `densify` gives the (T, dim) vectors back. A large pool
    of texts stays ~G/dim of its dense size."""
    codes = [_codes(t, dim) for t in texts]
    g = max((len(c) for c, _ in codes), default=0)
    idx, val = torch.zeros(len(texts), max(g, 1), dtype=torch.long), torch.zeros(len(texts), max(g, 1))
    for i, (c, v) in enumerate(codes):
        idx[i, : len(c)], val[i, : len(v)] = torch.tensor(c, dtype=torch.long), torch.tensor(v)
    n = densify(idx, val, dim).norm(dim=-1, keepdim=True)                      # (T, 1)
    return idx, val / n.clamp_min(1e-12)


def densify(idx: torch.Tensor, val: torch.Tensor, dim: int) -> torch.Tensor:
    """(..., G) buckets and values -> (..., dim) vectors (repeated buckets add up)."""
    return torch.zeros(*idx.shape[:-1], dim, dtype=val.dtype, device=val.device).scatter_add_(-1, idx, val)


def hash_texts(texts: list[str], dim: int) -> torch.Tensor:
    """(T,) texts -> (T, dim) (one scatter-add for all texts)."""
    rows, cols, vals = [], [], []
    for i, t in enumerate(texts):
        c, v = _codes(t, dim)
        rows += [i] * len(c)
        cols += c
        vals += v
    x = torch.zeros(len(texts), dim)
    x.index_put_((torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)),
                 torch.tensor(vals), accumulate=True)
    n = x.norm(dim=-1, keepdim=True)
    return torch.where(n > 0, x / n.clamp_min(1e-12), x)
