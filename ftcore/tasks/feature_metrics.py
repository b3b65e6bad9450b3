"""Retrieval metrics of `feature_retrieval` and its term-frequency baseline.

For a query with scores s_j over the N catalogue entries and true entry f:

    g = #{j : s_j > s_f},  t = #{j ≠ f : s_j = s_f}
    rank   = 1 + g + t/2                       (the expected rank under a random tie-break)
    RR     = 1 / rank,   top1 = [g = 0] / (1 + t)     (top1: the probability a random tie-break puts f first)
    MRR    = mean RR over the queries (per kind, and over `contextual` = paraphrase ∪ situation)

Ties matter for TF-IDF only (a query sharing no word with any entry scores 0 everywhere: rank (N + 1)/2, not 1).
The baseline is scikit-learn's `TfidfVectorizer` (unigrams + bigrams, sublinear tf, smooth idf, l2 rows) fitted on
the catalogue texts, scored by cosine — the "term-frequency search" of the paper's comparison.
"""
from __future__ import annotations

import numpy as np
import torch

from ftcore.tasks.feature_catalogue import CONTEXTUAL, KINDS


def ranks(scores: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (..., T, N), truth (T,) -> (expected rank, top-1 probability), each (..., T)."""
    s_true = scores.gather(-1, truth.to(scores.device).view(*([1] * (scores.dim() - 2)), -1, 1)
                           .expand(*scores.shape[:-1], 1))                           # (..., T, 1)
    g = (scores > s_true).sum(-1).to(scores.dtype)
    t = (scores == s_true).sum(-1).to(scores.dtype) - 1.0
    return 1.0 + g + t / 2, (g == 0).to(scores.dtype) / (1.0 + t)


def kind_metrics(scores: torch.Tensor, truth: torch.Tensor, kinds: list[str], prefix: str) -> dict[str, torch.Tensor]:
    """scores (..., T, N) -> {prefix/mrr, prefix/top1, prefix/mrr/<kind>, prefix/top1/<kind>} of shape (...)."""
    rank, top1 = ranks(scores.float(), truth)
    out = {f"{prefix}/mrr": (1.0 / rank).mean(-1), f"{prefix}/top1": top1.mean(-1)}
    groups = {k: [k] for k in KINDS} | {"contextual": list(CONTEXTUAL)}
    for name, members in groups.items():
        mask = torch.tensor([k in members for k in kinds], device=rank.device)
        if mask.any():
            out[f"{prefix}/mrr/{name}"] = (1.0 / rank[..., mask]).mean(-1)
            out[f"{prefix}/top1/{name}"] = top1[..., mask].mean(-1)
    return out


def tfidf_scores(catalogue: list[str], queries: list[str]) -> torch.Tensor:
    """(T, N) cosine scores of TF-IDF query vectors against the catalogue's (fitted on the catalogue)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"[a-z0-9']+")
    docs = vec.fit_transform(catalogue)                                          # (N, V), rows unit norm
    q = vec.transform(queries)                                                   # (T, V)
    return torch.as_tensor(np.asarray((q @ docs.T).todense()), dtype=torch.float64)
