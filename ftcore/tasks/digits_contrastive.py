"""`digits_contrastive`: contrastive training of a small encoder on real images — scikit-learn's bundled 8×8
digits (`sklearn.datasets.load_digits`, 1797 images, no download) — the real-data counterpart of the
synthetic problem (papers.md §3(a) "Real data": SimCLR with batch selection, evaluated by retrieval; the
paper uses ResNet-18 on CIFAR-100, far beyond a CPU sweep).

Per member (stream "data"): a random split of the images into N training and `n_test` held-out ones, pixels
scaled to [0, 1]. Pair i is two augmented views of training image i (stream "augment", fresh every time a
batch is built): a random translation by up to `shift` pixels (zero fill) and additive N(0, noise²) pixel
noise. The encoder f (the model, e.g. `mlp` 64 → … → d) maps a view to R^d; with u_i = f(a(x_i))/‖·‖,
v_i = f(a'(x_i))/‖·‖ and z_ij = u_iᵀv_j / τ, a batch S is trained on the symmetric InfoNCE L_S
(ftcore.batching.symmetric_infonce), averaged over the step's M batches; `train.batch_selection` chooses S.

Batches: x (E, R, 64) holds the views, ordered [batch m][view][row b] (R = M·2·B); y (E, R, d) carries each
row's sample id in channel 0 and its batch index m in channel 1 (the rest 0: the contract's y is
(E, rows, out)); the loss reads M from y, so every strategy (B = N for `full`) uses the same loss.
Metrics (fixed evaluation augmentations, stream "eval"):
    full/loss       L_[N] over the N training pairs
    test/retrieval  top-1 instance retrieval on the held-out images: an augmented view's nearest clean
                    embedding (cosine) is its own image
    test/knn_acc    1-NN digit classification: a clean held-out embedding's nearest clean training
                    embedding has its label
    cost/forwards   pairs embedded so far, training and selection (ftcore.batching.cost; a pair = 2 views)
    cost/batch_losses  candidate-batch losses scored by the selection so far
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ftcore.batching import symmetric_infonce
from ftcore.batching.partition import Shuffle
from ftcore.fields import check
from ftcore.models.mlp import build_model
from ftcore.registry import TASKS
from ftcore.seeding import generators
from ftcore.tasks.selection import SelectionTask

N_IMAGES, SIDE = 1797, 8


@dataclass
class DigitsContrastiveConfig:
    name: str = "digits_contrastive"
    n: int = 512            # N training images (pairs)
    n_test: int = 512       # held-out images for the retrieval metrics
    dim: int = 32           # d, the embedding size (encoder output)
    batch_size: int = 32    # B
    temperature: float = 0.1
    noise: float = 0.1      # σ of the additive pixel noise (pixels in [0, 1])
    shift: int = 1          # largest translation in pixels

    per_member = ()

    def __post_init__(self):
        check(self.n >= 2, "task.n", ">= 2", self.n)
        check(self.n_test >= 2, "task.n_test", ">= 2", self.n_test)
        check(self.n + self.n_test <= N_IMAGES, "task.n", f"<= {N_IMAGES} − task.n_test (the digits set)", self.n)
        check(self.dim >= 2, "task.dim", ">= 2", self.dim)
        check(1 <= self.batch_size <= self.n, "task.batch_size", f"in [1, task.n={self.n}]", self.batch_size)
        check(self.temperature > 0, "task.temperature", "> 0", self.temperature)
        check(self.noise >= 0, "task.noise", ">= 0", self.noise)
        check(0 <= self.shift < SIDE, "task.shift", f"in [0, {SIDE - 1}]", self.shift)


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """(images (1797, 64) in [0, 1], labels (1797,)) from scikit-learn's bundled copy."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return torch.as_tensor(d.data, dtype=torch.float32) / 16.0, torch.as_tensor(d.target, dtype=torch.long)


def augment(images: torch.Tensor, noise: float, shift: int, gen: torch.Generator) -> torch.Tensor:
    """images (R, 64) -> translated (|dx|, |dy| ≤ shift, zero fill) and noised views (R, 64)."""
    r = images.shape[0]
    img = torch.nn.functional.pad(images.reshape(r, SIDE, SIDE), (shift,) * 4)    # (R, 8+2s, 8+2s)
    off = torch.randint(0, 2 * shift + 1, (r, 2), generator=gen)                  # crop corner per image
    rows = off[:, :1, None] + torch.arange(SIDE)[None, :, None]                   # (R, 8, 1)
    cols = off[:, 1:, None] + torch.arange(SIDE)[None, None, :]                   # (R, 1, 8)
    out = img[torch.arange(r)[:, None, None], rows, cols].reshape(r, SIDE * SIDE)
    return out + noise * torch.randn(out.shape, generator=gen)


@TASKS.register("digits_contrastive")
class DigitsContrastive(SelectionTask):
    Config = DigitsContrastiveConfig
    per_member = DigitsContrastiveConfig.per_member
    models = ("mlp",)

    @staticmethod
    def io_dims(cfg, model_cfg):
        return SIDE * SIDE, cfg.dim

    @classmethod
    def rows(cls, cfg):
        return 2 * cfg.batch_size

    def build_base(self):
        c0 = self.cfgs[0]
        self.n, self.d, self.b, self.tau = c0.n, c0.dim, c0.batch_size, c0.temperature
        images, labels = load_digits_tensors()
        train, test, train_y, test_y, q1, q2, q_test = [], [], [], [], [], [], []
        for g, ge in zip(generators(self.seeds, "data"), generators(self.seeds, "eval")):
            perm = torch.randperm(N_IMAGES, generator=g)
            tr, te = perm[: c0.n], perm[c0.n: c0.n + c0.n_test]
            train.append(images[tr])
            test.append(images[te])
            train_y.append(labels[tr])
            test_y.append(labels[te])
            q1.append(augment(images[tr], c0.noise, c0.shift, ge))
            q2.append(augment(images[tr], c0.noise, c0.shift, ge))
            q_test.append(augment(images[te], c0.noise, c0.shift, ge))
        self.train, self.test = torch.stack(train), torch.stack(test)            # (E, N, 64), (E, T, 64)
        self.train_y, self.test_y = torch.stack(train_y), torch.stack(test_y)    # (E, N), (E, T)
        self.eval_views = torch.cat([torch.stack(q1), torch.stack(q2)], 1)      # (E, 2N, 64)
        self.test_views = torch.stack(q_test)                                    # (E, T, 64)
        self.aug_gens = generators(self.seeds, "augment")
        self.own = Shuffle(self.n, self.b, 0, generators(self.seeds, "batching"))  # `batch_selection: task`
        return build_model(self.model_cfg, SIDE * SIDE, self.d, generators(self.seeds, "base"))

    def _views(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (E, M, B) -> two fresh augmented views of each image, (E, M·2·B, 64) ordered [m][view][b]."""
        c0, out = self.cfgs[0], []
        for e, g in enumerate(self.aug_gens):
            imgs = self.train[e].cpu()[idx[e].reshape(-1)]                        # (M·B, 64)
            views = torch.stack([augment(imgs, c0.noise, c0.shift, g) for _ in range(2)])   # (2, M·B, 64)
            out.append(views.reshape(2, *idx.shape[1:], -1).transpose(0, 1).reshape(-1, SIDE * SIDE))
        return torch.stack(out).to(self.device, self.dtype)

    def batch_of(self, idx: torch.Tensor):
        """idx (E, M, B) sample ids -> x (E, R, 64), y (E, R, d) [id, m, 0…], w (E, R) = 1/R; R = M·2·B."""
        E, M, B = idx.shape
        x = self._views(idx)
        ids = idx.unsqueeze(2).expand(E, M, 2, B).reshape(E, -1)                 # (E, R)
        m = torch.arange(M).view(1, M, 1, 1).expand(E, M, 2, B).reshape(E, -1)
        y = torch.zeros(E, x.shape[1], self.d)
        y[..., 0], y[..., 1] = ids.float(), m.float()
        w = torch.full(x.shape[:2], 1.0 / x.shape[1])
        return x, y.to(self.device, self.dtype), w.to(self.device, self.dtype)

    def batch(self, step):
        return self.own_batch(step)

    def loss(self, pred, y, w):
        """pred (E, R, d) embeddings of the views -> Σ_m w_m L_{S_m} (E,), M and B read from y's layout."""
        E, R, d = pred.shape
        M = int(y[0, :, 1].max()) + 1
        p = torch.nn.functional.normalize(pred, dim=-1).reshape(E, M, 2, R // (2 * M), d)
        logits = p[:, :, 0] @ p[:, :, 1].transpose(-1, -2) / self.tau           # (E, M, B, B)
        return (w.reshape(E, M, -1).sum(-1) * symmetric_infonce(logits)).sum(-1)

    def _embed(self, model, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(model(x), dim=-1)

    def pair_logits(self, model) -> torch.Tensor:
        """Z (E, N, N) = u_iᵀv_j / τ of fresh augmented views of every training image (no grad)."""
        with torch.no_grad():
            idx = torch.arange(self.n).expand(self.E, 1, self.n)
            p = self._embed(model, self._views(idx)).reshape(self.E, 2, self.n, self.d)
            return p[:, 0] @ p[:, 1].transpose(-1, -2) / self.tau

    @torch.no_grad()
    def evaluate(self, model):
        p = self._embed(model, self.eval_views).reshape(self.E, 2, self.n, self.d)
        loss = symmetric_infonce(p[:, 0] @ p[:, 1].transpose(-1, -2) / self.tau)
        keys = self._embed(model, self.test)                                     # (E, T, d) clean held-out
        queries = self._embed(model, self.test_views)                            # (E, T, d) augmented
        own = torch.arange(keys.shape[1], device=keys.device)
        retrieval = ((queries @ keys.transpose(1, 2)).argmax(-1) == own).float().mean(-1)
        nearest = (keys @ self._embed(model, self.train).transpose(1, 2)).argmax(-1)   # (E, T)
        knn = (torch.gather(self.train_y, 1, nearest) == self.test_y).float().mean(-1)
        return {"full/loss": loss, "test/retrieval": retrieval.to(loss), "test/knn_acc": knn.to(loss),
                **self.cost_metrics(loss)}
