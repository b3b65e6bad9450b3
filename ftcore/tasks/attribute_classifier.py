"""The fixed attribute classifier that scores generated images (issue 18, the CoBSAT analogue: papers.md §8).

CoBSAT (Zeng et al. 2024) scores an MLLM's generated image by asking a checker model whether it shows the right
object and attribute. Here the checker is one multinomial logistic regression per attribute on the flattened
pixels of `ftcore.tasks.images.render` — trained once per process and configuration (a fixed seed, fresh renders,
nothing from any member's stream), cached, and checked: its accuracy on a held-out set of renders must reach
`ACC_BAR` for every attribute it scores, else `RuntimeError` (a metric whose checker cannot tell the attribute
values apart would be noise; fix attributes with `images.sample_scenes(fixed=...)` until it can).

    logits_a(x) = W_a · vec(x) + b_a,    x ∈ [0, 1]^{3×S×S},   W_a (n_a, 3S²)
    trained:     min_{W, b}  mean_i CE(logits_a(x_i), a_i) + λ ‖W‖²   (full batch, Adam, fixed steps)

Why linear: a linear score of an average is the average of the scores, so the checker judges a blurred
conditional-mean image (what an MSE-trained generator emits when the jitter is unpredictable) by the average of
its verdicts on the sharp images it blends — it neither rewards nor punishes the blur itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ftcore.tasks.images import render, sample_scenes, words

ACC_BAR = 0.95            # held-out accuracy every scored attribute must reach
SEED = 20241807           # the classifier's own stream (issue 18, item 1): no member draws from it
N_TRAIN, N_TEST = 1000, 500
STEPS, LR, WEIGHT_DECAY = 100, 0.05, 1e-4


@dataclass(frozen=True)
class Classifier:
    """Per attribute a linear head; `accuracy[a]` its held-out accuracy (checked >= ACC_BAR)."""
    weights: dict[str, torch.Tensor]          # a -> (n_a, 3S²)
    biases: dict[str, torch.Tensor]           # a -> (n_a,)
    accuracy: dict[str, float]

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (..., 3, S, S) or (..., 3S²) -> {attribute: (...) long}; clamped to [0, 1] first."""
        flat = images.reshape(*images.shape[:-3], -1) if images.dim() >= 3 and images.shape[-3] == 3 else images
        flat = flat.float().clamp(0, 1)
        return {a: (flat @ W.T + self.biases[a]).argmax(-1) for a, W in self.weights.items()}


def _fit_head(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, D), y (N,) in 0..n-1 -> (W (n, D), b (n,)) by full-batch Adam on the L2-regularised CE."""
    W = (0.01 * torch.randn(n, x.shape[1], generator=gen)).requires_grad_()
    b = torch.zeros(n, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(x @ W.T + b, y) + WEIGHT_DECAY * W.square().sum()
        loss.backward()
        opt.step()
    return W.detach(), b.detach()


def _train(key: tuple) -> Classifier:
    attributes, n_values, fixed, side, jitter, noise = key
    n_values, fixed = dict(n_values), dict(fixed)
    gen = torch.Generator().manual_seed(SEED)
    sc = sample_scenes(gen, N_TRAIN + N_TEST, n_values, fixed)
    x = render(sc, gen, side, jitter, noise).reshape(N_TRAIN + N_TEST, -1)              # (N, 3S²)
    weights, biases, acc = {}, {}, {}
    for a in attributes:
        y = sc[a]
        with torch.enable_grad():                    # callers may be under no_grad (evaluate)
            W, b = _fit_head(x[:N_TRAIN], y[:N_TRAIN], len(words(a, n_values.get(a))), gen)
        weights[a], biases[a] = W, b
        acc[a] = float(((x[N_TRAIN:] @ W.T + b).argmax(-1) == y[N_TRAIN:]).float().mean())
    bad = {a: v for a, v in acc.items() if v < ACC_BAR}
    if bad:
        raise RuntimeError(f"attribute classifier below its bar {ACC_BAR} on held-out renders: "
                           + ", ".join(f"{a} {v:.3f}" for a, v in bad.items())
                           + " (fix more attributes or render larger images)")
    return Classifier(weights, biases, acc)


_CACHE: dict[tuple, Classifier] = {}


def classifier(attributes: tuple[str, ...], n_values: dict[str, int], fixed: dict[str, int], side: int,
               jitter: float, noise: float) -> Classifier:
    """The checked classifier of `attributes` for scenes drawn as `sample_scenes(gen, n, n_values, fixed)` and
    rendered with (side, jitter, noise): trained on first use, then cached for the process."""
    key = (tuple(attributes), tuple(sorted(n_values.items())), tuple(sorted(fixed.items())), int(side),
           float(jitter), float(noise))
    if key not in _CACHE:
        _CACHE[key] = _train(key)
    return _CACHE[key]
