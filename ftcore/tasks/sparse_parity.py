"""`sparse_parity`: in-context sparse parity of Park et al. 2024 ("Can Mamba Learn How to Learn?", papers.md §5a;
code krafton-ai/mambaformer-icl `src/tasks.py` `SparseParity`, `src/samplers.py` `SparseParitySampler`,
`src/conf/parity.yaml`), packed over members.

A prompt holds K points x_i ~ U{−1, +1}^n labelled by one hidden parity of k coordinates,

    y_i = Π_{j∈S} x_ij ∈ {−1, +1},     S ⊂ {0 … n−1}, |S| = k     (`sample_sparse_parity`)

tokenised Garg-style (`interleave`): x_1, ỹ_1, …, x_K, ỹ_K with ỹ_i = (y_i, 0, …, 0) ∈ R^n. The model maps
(E, B, 2K, n) -> (E, B, 2K, 1); the logit for y_i is read at the x_i token, so it sees the i − 1 labelled
examples before it. Training loss (the reference's): binary cross-entropy of σ(logit) against (y + 1)/2,

    L = Σ_b w_b · mean_i BCE(σ(ŷ_bi), (y_bi + 1)/2),

averaged over the K positions. Learning the task in context means finding S among C(n, k) supports from the
examples: after ~log2 C(n, k) informative examples a learner can be exact, a guesser stays at 1/2.
`shared_support` (default on, as in the reference) draws one S per training batch (all B prompts of a member's
step share it; a new S every step); off, each prompt has its own S. Evaluation always uses a fixed set of
`n_eval` prompts per member (stream "eval") with one S per prompt, so the score is of in-context learning, not
of a support that happened to be shared.

Metrics (each (E,)):
    acc/kNN     sign accuracy P[sign(ŷ_i) = y_i] at in-context position k (a logit of exactly 0 counts wrong);
                kNN zero-padded to 2 digits (3 when K > 100), as icl_regression names positions
    acc/mean    its mean over the K positions
    acc/last    its mean over the last ⌈K/4⌉ positions (where the support should be identified)
    val/acc     = acc/last, the headline number (the accuracy_table report's default `report.y`; metric
                names carry a slash, so the headline is `val/acc` rather than a bare `acc`)
    val/acc/chance  0.5, the accuracy of any predictor blind to S (the report's chance column for val/acc)
    val/bce     the training loss on the evaluation prompts
    acc/blind_bayes  the accuracy of the best predictor that knows the prior (S uniform over the C(n, k) supports)
                but ignores the examples: it predicts the sign of E_S[Π_{j∈S} x_j] (a tie scores 1/2). With m
                coordinates of x equal to −1, P(y = +1 | x) = Σ_{j even} C(m, j) C(n − m, k − j) / C(n, k). It is
                above chance (0.625 for n = 4, k = 2; 38/64 ≈ 0.594 for n = 6, k = 2), so a model at this level
                has learnt the prior, not to learn in context; computed once on the evaluation prompts
Members differ by seed only (`per_member = ()`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ftcore.fields import check
from ftcore.models.mlp import build_model
from ftcore.registry import TASKS
from ftcore.seeding import generators
from ftcore.tasks.icl_functions import interleave
from ftcore.tasks.icl_regression import position_keys
from ftcore.tasks.seq_generators import sample_sparse_parity
from ftcore.tasks.sequence import SequenceTask


@dataclass
class SparseParityConfig:
    name: str = "sparse_parity"
    n: int = 10                 # bits per x (the token width)
    k: int = 2                  # |S|, the parity's support size
    n_points: int = 140         # K in-context examples (fixed, no curriculum in the reference)
    batch_size: int = 64        # B prompts per training step
    n_eval: int = 256           # evaluation prompts per member
    shared_support: bool = True  # one S per training batch (the reference); False: one S per prompt

    per_member = ()             # members of a pack differ by seed only

    def __post_init__(self):
        check(self.n >= 1, "task.n", ">= 1", self.n)
        check(1 <= self.k <= self.n, "task.k", f"in 1..{self.n} (task.n)", self.k)
        check(self.n_points >= 1, "task.n_points", ">= 1", self.n_points)
        check(self.batch_size >= 1, "task.batch_size", ">= 1", self.batch_size)
        check(self.n_eval >= 1, "task.n_eval", ">= 1", self.n_eval)


def last_quarter(K: int) -> int:
    """Number of positions `acc/last` averages: the last ⌈K/4⌉ (at least 1)."""
    return max(1, -(-K // 4))


def blind_bayes_correct(xs: torch.Tensor, ys: torch.Tensor, k: int) -> torch.Tensor:
    """Expected correctness of the support-blind Bayes predictor: xs (..., n) in {±1}, ys (...) -> (...) in {0, ½, 1}."""
    n = xs.shape[-1]
    m = (xs < 0).sum(-1)                                                     # (...) number of −1 coordinates
    p_plus = torch.zeros(m.shape, dtype=torch.float64)
    for j in range(0, k + 1, 2):                                             # an even number of −1s in S: y = +1
        p_plus += torch.tensor([math.comb(int(mi), j) * math.comb(n - int(mi), k - j) for mi in range(n + 1)],
                               dtype=torch.float64)[m]
    p_plus /= math.comb(n, k)
    right = torch.where(ys > 0, (p_plus > 0.5).double(), (p_plus < 0.5).double())
    return torch.where(p_plus == 0.5, 0.5, right).to(xs.dtype)


def parity_accuracy(logits: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Sign accuracy per member and position: logits, ys (E, P, K) -> (E, K); ŷ = 0 counts as wrong."""
    return (logits * ys > 0).to(logits.dtype).mean(1)


@TASKS.register("sparse_parity")
class SparseParity(SequenceTask):
    Config = SparseParityConfig
    per_member = SparseParityConfig.per_member

    @staticmethod
    def io_dims(cfg, model_cfg):
        return cfg.n, 1

    @staticmethod
    def seq_len(cfg):
        return 2 * cfg.n_points, "2 * task.n_points (interleaved x, y tokens)"

    def build_base(self):
        c0 = self.cfgs[0]
        model = build_model(self.model_cfg, c0.n, 1, generators(self.seeds, "base"))
        toks, ys, blind = [], [], []
        for cfg, g in zip(self.cfgs, generators(self.seeds, "eval")):
            b = sample_sparse_parity(g, cfg.n_eval, cfg.n_points, cfg.n, cfg.k, shared_support=False)
            toks.append(interleave(b.xs, b.ys))
            ys.append(b.ys)
            blind.append(blind_bayes_correct(b.xs, b.ys, cfg.k).mean())
        self.eval_tokens, self.eval_ys = torch.stack(toks), torch.stack(ys)     # (E, P, 2K, n), (E, P, K)
        self.blind_acc = torch.stack(blind)                                      # (E,)
        return model

    def batch(self, step):
        xs, ys = [], []
        for cfg, g in zip(self.cfgs, self.gens):
            b = sample_sparse_parity(g, cfg.batch_size, cfg.n_points, cfg.n, cfg.k, cfg.shared_support)
            xs.append(interleave(b.xs, b.ys))
            ys.append(b.ys)
        x, y = torch.stack(xs), torch.stack(ys)                                  # (E, B, 2K, n), (E, B, K)
        w = torch.full(y.shape[:2], 1.0 / y.shape[1])                            # (E, B)
        return x.to(self.device, self.dtype), y.to(self.device, self.dtype), w.to(self.device, self.dtype)

    @staticmethod
    def loss(pred, y, w):
        """pred (E, B, 2K, 1) logits at the x tokens vs y ∈ {±1} (E, B, K):
        Σ_b w_b · mean_k BCE(σ(ŷ_k), (y_k + 1)/2)  -> (E,)."""
        bce = F.binary_cross_entropy_with_logits(pred[..., ::2, 0], (y + 1) / 2, reduction="none")
        return (w * bce.mean(-1)).sum(-1)

    @torch.no_grad()
    def evaluate(self, model):
        logits = model(self.eval_tokens)[..., ::2, 0]                           # (E, P, K)
        acc = parity_accuracy(logits, self.eval_ys)                              # (E, K)
        K = acc.shape[-1]
        out = {key: acc[:, k] for k, key in enumerate(position_keys("acc", K))}
        out["acc/mean"] = acc.mean(-1)
        out["acc/last"] = acc[:, K - last_quarter(K):].mean(-1)
        out["val/acc"] = out["acc/last"]
        out["val/acc/chance"] = torch.full_like(out["val/acc"], 0.5)
        out["acc/blind_bayes"] = self.blind_acc.clone()
        bce = F.binary_cross_entropy_with_logits(logits, (self.eval_ys + 1) / 2, reduction="none")
        out["val/bce"] = bce.mean((1, 2))
        return out
