"""`mqar`: vector-valued multi-query associative recall of Park et al. 2024 ("Can Mamba Learn How to Learn?",
papers.md §5a; code krafton-ai/mambaformer-icl `src/tasks.py` `Retrieval`, `src/samplers.py`
`GaussianRetrievalSampler`, `src/conf/retrieval.yaml`), packed over members.

A prompt is 2n + 1 vectors in R^d read as tokens, no interleaving (`sample_mqar`):

    k_1, v_1, …, k_n, v_n, q,     all N(0, I_d) rescaled to norm √d,   q = k_j,  j ~ U{0 … n−1}

and the target is the value of the queried key, v* = v_{argmax_i ⟨k_i, q⟩} (= v_j). The model maps
(E, B, 2n+1, d) -> (E, B, 2n+1, d) (read-out R^{n_embd} -> R^d); only the last position, the query, is scored:

    L = Σ_b w_b · mean_c (ŷ_{b,2n+1,c} − v*_{bc})²            (MSE, the reference's loss)

Retrieval needs the query to be matched against every key seen so far: attention does this in one step,
a recurrent model must have kept all n pairs in its fixed-size state — the separation the paper reports
(attention ≈ 0 error, Mamba clearly not). Metrics (each (E,), on `n_eval` fixed prompts per member, stream
"eval"):

    mqar/error      retrieval error rate: the value vector of the prompt nearest (Euclidean) to ŷ is not v*
                    (values all have norm √d, so nearest = largest ⟨ŷ, v_i⟩)
    val/acc         1 − mqar/error, the headline (accuracy_table's default `report.y`)
    val/acc/chance  1/n, the accuracy of a predictor that ignores the query
    val/mse         the training loss on the evaluation prompts

The reference's `Retrieval.classify` instead compares argmax_i ⟨ŷ, k_i⟩ with argmax_i ⟨v*, k_i⟩; we score
against the values (the calibration of papers.md §5d), which is what the MSE read-out is trained to produce.
Members differ by seed only (`per_member = ()`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ftcore.fields import check
from ftcore.losses import weighted_mse
from ftcore.models.mlp import build_model
from ftcore.registry import TASKS
from ftcore.seeding import generators
from ftcore.tasks.seq_generators import sample_mqar
from ftcore.tasks.sequence import SequenceTask


@dataclass
class MqarConfig:
    name: str = "mqar"
    n_pairs: int = 64           # n key-value pairs per prompt
    dim: int = 20               # d, the width of every key, value and query token
    batch_size: int = 64        # B prompts per training step
    n_eval: int = 256           # evaluation prompts per member

    per_member = ()             # members of a pack differ by seed only

    def __post_init__(self):
        check(self.n_pairs >= 1, "task.n_pairs", ">= 1", self.n_pairs)
        check(self.dim >= 1, "task.dim", ">= 1", self.dim)
        check(self.batch_size >= 1, "task.batch_size", ">= 1", self.batch_size)
        check(self.n_eval >= 1, "task.n_eval", ">= 1", self.n_eval)


def seq_len(cfg: MqarConfig) -> int:
    """Tokens per prompt: n keys, n values and the query."""
    return 2 * cfg.n_pairs + 1


def retrieval_error(pred: torch.Tensor, values: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
    """pred (E, P, d), values (E, P, n, d), target_index (E, P) -> error rate (E,): the value nearest to
    the prediction, argmin_i ‖ŷ − v_i‖², is not the target's."""
    dist = (values - pred[..., None, :]).pow(2).sum(-1)                     # (E, P, n)
    return (dist.argmin(-1) != target_index).to(pred.dtype).mean(-1)


@TASKS.register("mqar")
class Mqar(SequenceTask):
    Config = MqarConfig
    per_member = MqarConfig.per_member

    @staticmethod
    def io_dims(cfg, model_cfg):
        return cfg.dim, cfg.dim

    @staticmethod
    def seq_len(cfg):
        return seq_len(cfg), "2 * task.n_pairs + 1 (keys, values and the query)"

    def build_base(self):
        c0 = self.cfgs[0]
        model = build_model(self.model_cfg, c0.dim, c0.dim, generators(self.seeds, "base"))
        seqs, targets, values, idx = [], [], [], []
        for cfg, g in zip(self.cfgs, generators(self.seeds, "eval")):
            b = sample_mqar(g, cfg.n_eval, cfg.n_pairs, cfg.dim)
            seqs.append(b.seq)
            targets.append(b.target)
            values.append(b.values)
            # the target's slot among the values (exact: target is a copy of one of them)
            idx.append((b.values - b.target[:, None]).pow(2).sum(-1).argmin(-1))
        self.eval_seq, self.eval_target = torch.stack(seqs), torch.stack(targets)   # (E, P, 2n+1, d), (E, P, d)
        self.eval_values, self.eval_index = torch.stack(values), torch.stack(idx)   # (E, P, n, d), (E, P)
        return model

    def batch(self, step):
        xs, ys = [], []
        for cfg, g in zip(self.cfgs, self.gens):
            b = sample_mqar(g, cfg.batch_size, cfg.n_pairs, cfg.dim)
            xs.append(b.seq)
            ys.append(b.target)
        x, y = torch.stack(xs), torch.stack(ys)                                  # (E, B, 2n+1, d), (E, B, d)
        w = torch.full(y.shape[:2], 1.0 / y.shape[1])                            # (E, B)
        return x.to(self.device, self.dtype), y.to(self.device, self.dtype), w.to(self.device, self.dtype)

    @staticmethod
    def loss(pred, y, w):
        """pred (E, B, 2n+1, d) read at the query (last) token vs y (E, B, d): Σ_b w_b · mean_c (ŷ_c − y_c)²."""
        return weighted_mse(pred[..., -1, :], y, w)

    @torch.no_grad()
    def evaluate(self, model):
        pred = model(self.eval_seq)[..., -1, :]                                  # (E, P, d)
        err = retrieval_error(pred, self.eval_values, self.eval_index)           # (E,)
        n = self.eval_values.shape[2]
        return {"mqar/error": err, "val/acc": 1 - err, "val/acc/chance": torch.full_like(err, 1.0 / n),
                "val/mse": (pred - self.eval_target).pow(2).mean((1, 2))}
