"""`spectral`: equal-size spectral clustering of the pairs into high-loss batches (papers.md §3(a) `sc_even`;
reference `utils.py custom_affinity`, `spectral_clustering(batch_selection='sc_even')`, `sc_even_kb_loose`).

At the start of every epoch, from the current logits z_ij = u_iᵀv_j (temperature folded into z):

    A_ij = log(1 + (B−1) e^{z_ij − z_ii}) + log(1 + (B−1) e^{z_ji − z_ii}),   A ← A + Aᵀ,   W = e^A

(A_ij is the pair's contribution to a batch loss: pairs that confuse each other get a large affinity, so
clusters of W are high-loss batches). Then the normalised-Laplacian spectral embedding with K = N/B
components (sklearn `spectral_embedding(norm_laplacian=True, drop_first=False)`: the K eigenvectors of the
smallest eigenvalues of L = I − D^{-1/2} W D^{-1/2}, W's diagonal ignored as scipy's `laplacian` does,
rows divided by √deg), k-means (k-means++ init, best of `N_INIT`, from the member's generator), and the
reference's balancing step: each of the K centres repeated B times, a linear-sum assignment of the N
points to those N slots (scipy), cluster = slot // B — so every cluster has exactly B samples. The epoch
trains on those N/B batches, one per step.

k·B variant (`train.selection_k: k`, the paper's `sc_even_kb_loose` for N too large to cluster at once):
a random permutation cuts the N samples into chunks of k·B and each chunk is clustered into k batches
(the last chunk, if shorter, into its own size / B). `selection_k: 0` clusters all N at once.
"""
from __future__ import annotations

import math

import torch

from ftcore.batching.base import Strategy
from ftcore.fields import check
from ftcore.registry import BATCHINGS

N_INIT = 4          # k-means restarts (sklearn's KMeans uses 1 for k-means++ with n_init='auto')
KMEANS_ITERS = 100


def pair_affinity(z: torch.Tensor, b: int) -> torch.Tensor:
    """The paper's symmetric affinity A (N, N) from logits z (N, N) (`custom_affinity`)."""
    zii = z.diagonal().unsqueeze(1)                                               # (N, 1): z_ii of row i
    a = torch.log1p((b - 1) * torch.exp(z - zii)) + torch.log1p((b - 1) * torch.exp(z.T - zii))
    return a + a.T


def spectral_embedding(w: torch.Tensor, k: int) -> torch.Tensor:
    """Rows of the K smallest eigenvectors of the normalised Laplacian of w (N, N), divided by √deg: (N, K)."""
    w = w - torch.diag(w.diagonal())                                              # self-loops ignored
    dd = w.sum(1).sqrt()                                                          # (N,)
    lap = torch.eye(w.shape[0], dtype=w.dtype) - w / dd[:, None] / dd[None, :]
    _, vecs = torch.linalg.eigh(lap)                                              # ascending eigenvalues
    return vecs[:, :k] / dd[:, None]


def kmeans(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Centres (K, dim) of Lloyd's k-means on x (N, dim): k-means++ init, best inertia of N_INIT runs."""
    best, best_inertia = None, math.inf
    for _ in range(N_INIT):
        centres = x[torch.randint(x.shape[0], (1,), generator=gen)]
        while centres.shape[0] < k:                                               # k-means++: p ∝ D²
            d2 = torch.cdist(x, centres).pow(2).amin(1)
            p = d2 if float(d2.sum()) > 0 else torch.ones_like(d2)
            centres = torch.cat([centres, x[torch.multinomial(p, 1, generator=gen)]])
        for _ in range(KMEANS_ITERS):
            label = torch.cdist(x, centres).argmin(1)                              # (N,)
            new = torch.stack([x[label == c].mean(0) if bool((label == c).any()) else centres[c] for c in range(k)])
            if torch.equal(new, centres):
                break
            centres = new
        inertia = float(torch.cdist(x, centres).pow(2).amin(1).sum())
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best


def equal_size_clusters(z: torch.Tensor, b: int, gen: torch.Generator) -> torch.Tensor:
    """Spectral clustering of the pairs with logits z (n, n) into n/B clusters of exactly B: (n/B, B) long,
    indices into range(n)."""
    from scipy.optimize import linear_sum_assignment  # imported here: ~0.5 s that every Ray worker paid at start
    n = z.shape[0]
    k = n // b
    if k == 1:
        return torch.arange(n).unsqueeze(0)
    maps = spectral_embedding(torch.exp(pair_affinity(z, b)), k)                  # (n, K)
    centres = kmeans(maps, k, gen)                                                # (K, K)
    slots = centres.repeat_interleave(b, 0)                                       # (n, K): slot s is centre s // B
    _, col = linear_sum_assignment(torch.cdist(maps, slots).numpy())
    label = torch.as_tensor(col) // b                                             # (n,) each label used B times
    return torch.argsort(label, stable=True).reshape(k, b)


@BATCHINGS.register("spectral")
class Spectral(Strategy):
    @classmethod
    def check(cls, n, b, k):
        super().check(n, b, k)
        check(b >= 2, "task.batch_size", ">= 2 for spectral (the affinity is log(1 + (B−1)e^…))", b)
        check(k >= 0, "train.selection_k", ">= 0 (0 = cluster all N at once)", k)

    def partition(self, epoch, logits):
        z = logits().detach().to("cpu", torch.float64)                            # (E, N, N)
        chunk = self.n if self.k == 0 else min(self.n, self.k * self.b)
        out = []
        for e, g in enumerate(self.gens):
            order = torch.randperm(self.n, generator=g) if chunk < self.n else torch.arange(self.n)
            parts = []
            for s in range(0, self.n, chunk):
                ids = order[s:s + chunk]                                          # (≤ k·B,)
                parts.append(ids[equal_size_clusters(z[e][ids][:, ids], self.b, g)])
            out.append(torch.cat(parts))                                          # (N/B, B)
        return torch.stack(out)
