"""Clustering scores and the k-means baselines of the criterion-clustering analogue (IC|TC, Kwon et al., ICLR 2024;
papers.md §9). The paper scores a clustering of N images into K clusters against the criterion's ground truth by

    Hungarian accuracy   ACC = max_π (1/N) Σ_i 1[π(ĉ_i) = y_i],   π a one-to-one map of cluster ids to labels,
                         found on the (K × L) contingency table C_kl = #{i: ĉ_i = k, y_i = l} by the Hungarian
                         algorithm (scipy.optimize.linear_sum_assignment, maximising Σ C_{k π(k)}); clusters or
                         labels left unmatched when K ≠ L count as wrong
    NMI                  I(ĉ; y) / ((H(ĉ) + H(y)) / 2)   (arithmetic normalisation, scikit-learn's default);
                         with p_kl = C_kl / N, I = Σ p_kl log(p_kl / (p_k p_l)), H = −Σ p log p;
                         NMI = 1 when both partitions are the same single cluster, 0 when one is (and the other not)

Both are invariant to renaming the clusters. The baselines cluster features with k-means (scikit-learn `KMeans`,
k-means++ init, `n_init` restarts, `random_state` from the member's seed): criterion-blind by construction.
Tested against hand-computed cases and brute-force/library oracles in tests/test_criterion_clustering.py.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def contingency(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """pred, truth (N,) integer ids -> C (K, L) counts over the distinct values of each (sorted)."""
    _, p = np.unique(np.asarray(pred), return_inverse=True)
    _, t = np.unique(np.asarray(truth), return_inverse=True)
    c = np.zeros((p.max() + 1 if p.size else 0, t.max() + 1 if t.size else 0), dtype=np.int64)
    np.add.at(c, (p, t), 1)
    return c


def hungarian_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Best one-to-one matching accuracy of cluster ids to labels (module docstring), in [0, 1]."""
    c = contingency(pred, truth)
    if c.size == 0:
        return float("nan")
    rows, cols = linear_sum_assignment(c, maximize=True)
    return float(c[rows, cols].sum() / c.sum())


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(pred: np.ndarray, truth: np.ndarray) -> float:
    """Normalised mutual information with the arithmetic-mean normalisation (module docstring), in [0, 1]."""
    c = contingency(pred, truth).astype(float)
    if c.size == 0:
        return float("nan")
    n = c.sum()
    pk, pl = c.sum(1) / n, c.sum(0) / n
    h_k, h_l = _entropy(c.sum(1)), _entropy(c.sum(0))
    if h_k == 0 and h_l == 0:                       # both one cluster: the same partition
        return 1.0
    if h_k == 0 or h_l == 0:
        return 0.0
    nz = c > 0
    p = c[nz] / n
    mi = float((p * np.log(p / np.outer(pk, pl)[nz])).sum())
    return max(0.0, min(1.0, mi / ((h_k + h_l) / 2)))


def kmeans(features: np.ndarray, k: int, seed: int, n_init: int = 3) -> np.ndarray:
    """features (N, D) -> cluster ids (N,) from scikit-learn's KMeans (k-means++ init, best of n_init, fixed seed)."""
    from sklearn.cluster import KMeans
    x = np.asarray(features, dtype=np.float64)       # OpenMP threads follow OMP_NUM_THREADS (Ray sets it per trial)
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)


def scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(Hungarian accuracy, NMI) of one clustering against one ground truth."""
    return hungarian_accuracy(pred, truth), nmi(pred, truth)
