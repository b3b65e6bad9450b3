"""`looped_transformer`: one GPT-2 block stack applied b times with input injection (Yang, Lee, Nowak,
Papailiopoulos, ICLR 2024; papers.md §4; code Leiay/looped_transformer `TransformerModelLooped`).

    P = read_in(x)                 (the input injection)
    Y_0 = 0
    Y_{t+1} = M(Y_t + P)           M = GPT-2 backbone: + wpe (added at every loop), n_layer blocks, final LN
    ŷ_t = read_out(Y_t)            a prediction after every loop t = 1..b

With `input_injection: false` the prompt enters once: Y_1 = M(P), Y_{t+1} = M(Y_t) (an ablation; the paper
injects). The same weights serve every iteration, so the parameter count does not depend on `n_loops`.

Training (papers.md §4(b); code scripts/train.py `train_step`): at step s the model runs

    b_s = min(max(T, 1) + loop_inc · ⌊s / loop_interval⌋, b)       (loop curriculum; loop_interval 0: b_s = b)

iterations and the loss is the task's loss averaged over the predictions of the last T = `loss_last`
iterations; iterations before b_s − T run without gradient (`horizon_start = max(0, n_loops −
n_loop_window)`). `train_kwargs(step)` hands fit() exactly that ({n_loops: b_s, keep_last: T}); fit calls
model(x, **kw) and averages task.loss over the returned list. `loss_last: 0` means all iterations.
Paper (b, T): LR (20, 15), sparse LR (20, 10), decision tree (70, 15), ReLU-2NN (12, 5); curriculum +2
loops every 500 steps. Evaluation runs `eval_loops` iterations (0 = b; the paper evaluates 500: the
looped model settles on a fixed point) and scores the last.

Init and draw order on gens[e] as in `transformer`: read_in.weight, wpe, blocks, read_out.weight.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ftcore.fields import check
from ftcore.models.transformer import PackedTransformer, TransformerConfig
from ftcore.registry import MODELS


@dataclass
class LoopedConfig(TransformerConfig):
    """The transformer's fields (one block stack by default) plus the loop."""
    name: str = "looped_transformer"
    n_layer: int = 1
    n_loops: int = 12          # b: iterations at the end of the loop curriculum (and by default in forward)
    loss_last: int = 0         # T: loss over the last T iterations; 0 = all
    loop_inc: int = 2          # loop curriculum: +loop_inc iterations ...
    loop_interval: int = 500   # ... every loop_interval steps, from max(T, 1) up to b; 0 = always b
    eval_loops: int = 0        # iterations at evaluation (forward without n_loops); 0 = n_loops
    input_injection: bool = True

    def __post_init__(self):
        super().__post_init__()
        check(self.n_loops >= 1, "model.n_loops", ">= 1", self.n_loops)
        check(0 <= self.loss_last <= self.n_loops, "model.loss_last", f"in [0, model.n_loops={self.n_loops}]",
              self.loss_last)
        check(self.loop_inc >= 0, "model.loop_inc", ">= 0", self.loop_inc)
        check(self.loop_interval >= 0, "model.loop_interval", ">= 0 (0 = no loop curriculum)", self.loop_interval)
        check(self.eval_loops >= 0, "model.eval_loops", ">= 0 (0 = model.n_loops)", self.eval_loops)

    def loops_at(self, step: int) -> int:
        """b_s: iterations at training step `step` (a pure function of the step)."""
        if self.loop_interval == 0:
            return self.n_loops
        return min(max(self.loss_last, 1) + self.loop_inc * (step // self.loop_interval), self.n_loops)


@MODELS.register("looped_transformer")
class PackedLoopedTransformer(PackedTransformer):
    """The transformer's read-in / backbone / read-out (same parameters, same draws), applied in a loop."""
    Config = LoopedConfig

    def forward_loops(self, x: torch.Tensor, n_loops: int | None = None,
                      keep_last: int | None = None) -> list[torch.Tensor]:
        """x (E, B, T, in_dim) -> [ŷ_t (E, B, T, out_dim)]: the read-out after each iteration.

        n_loops: iterations to run (default cfg.n_loops). keep_last: return only the last `keep_last`
        predictions and run the earlier iterations under no_grad (the paper's truncated loss); None or 0
        returns all n_loops predictions with gradient.
        """
        n = self._n(n_loops)
        start = 0 if not keep_last else max(0, n - keep_last)
        return self._iterate(x, n, grad_from=start, out_from=start)

    def forward(self, x: torch.Tensor, n_loops: int | None = None, keep_last: int | None = None):
        """x (E, B, T, in_dim) -> (E, B, T, out_dim): the prediction after the last iteration (gradient
        flows through every iteration; n_loops default cfg.eval_loops or cfg.n_loops). With keep_last set
        (training, via `train_kwargs`): the list `forward_loops(x, n_loops, keep_last)`."""
        if keep_last is not None:
            return self.forward_loops(x, n_loops, keep_last)
        n = self._n(n_loops if n_loops is not None else (self.cfg.eval_loops or None))
        return self._iterate(x, n, grad_from=0, out_from=n - 1)[-1]

    def train_kwargs(self, step: int) -> dict:
        """What fit() passes to forward at training step `step`: b_s iterations, loss over the last T."""
        n = self.cfg.loops_at(step)
        return {"n_loops": n, "keep_last": self.cfg.loss_last or n}

    def _n(self, n_loops: int | None) -> int:
        n = self.cfg.n_loops if n_loops is None else n_loops
        if n < 1:
            raise ValueError(f"n_loops must be >= 1 (got {n})")
        return n

    def _iterate(self, x: torch.Tensor, n: int, grad_from: int, out_from: int) -> list[torch.Tensor]:
        """Run n iterations; iterations t < grad_from under no_grad; read out iterations t >= out_from."""
        P = self.read_in(x)                                                          # (E, B, T, C)
        Y = torch.zeros_like(P) if self.cfg.input_injection else None
        out = []
        for t in range(n):
            with torch.no_grad() if t < grad_from else contextlib.nullcontext():
                if self.cfg.input_injection:
                    Y = self.backbone(Y + P)                                         # (E, B, T, C)
                else:
                    Y = self.backbone(P if Y is None else Y)
                if t >= out_from:
                    out.append(self.read_out(Y))                                     # (E, B, T, out)
        return out

