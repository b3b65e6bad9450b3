"""CUDA graphs for a pack's training step (`execution.cuda_graphs: auto`, `fit(..., cuda_graphs="auto")`).

A tiny pack's step on a GPU is launch-bound: tens of kernels of a few microseconds each, every one launched from
Python. A static-batch pack's step — forward, backward and optimizer update, `ftcore.fit.train_step` — is captured
once in a `torch.cuda.CUDAGraph` and then replayed: one launch for the whole step (torch's "whole-network capture",
https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs). A graph replays the same kernels on the same memory,
so what changes from step to step lives on the device:

* the batch: the task's own tensors, the same every step (`Task.static_batch`: FTC's full batch, ...);
* the step number (divergence bookkeeping: `diverged_at`) and the schedule's lr factor: 0-dim device tensors
  written before each replay (`fill_`, an asynchronous device op: no host sync);
* AdamW's step count: on the device (`PackedAdamW.use_device_step`), incremented inside the graph; the update reads
  it and the lr factor from device memory (`ftkernels.multi_adamw`); `sync_step` brings it back to the host;
* `active` and `diverged_at`: updated in place inside the graph; evaluations (eager, between replays) read them.

Eligible packs (`graphable`): a CUDA device, a task with static batches and no `train.batch_selection` batcher, no
data parallelism, no per-step forward keywords (the looped transformer's curriculum), and an optimizer with a
device step count (PackedAdamW; plain SGD reads no count). Else the pack trains eagerly, as with `off`.
Warm-up: WARMUP eager steps on a side stream after each (re)build of the pack (lazy initialisation — cuBLAS
workspaces, Triton compiles, the frozen base's cached output — happens outside the capture), then the capture;
compaction rebuilds the pack and captures again. Autocast's weight-cast cache is off while capturing (torch's rule
for autocast inside a graph).

Status: written and tested without a GPU (the device-scalar update is checked in Triton's interpreter; everything
else needs CUDA), so `off` is the default; `benchmarks/gpu_check.py` compares fit with graphs on and off (curves and
member-runs per minute) and says whether `auto` is safe to make the default.
"""
from __future__ import annotations

import torch

from ftcore.pack import step_hook

CHOICES = ("off", "auto")
WARMUP = 3


def graphable(task, model, batcher, dp, device, opt) -> bool:
    """Whether `cuda_graphs: auto` captures this pack's step (module docstring)."""
    return (torch.device(device).type == "cuda" and torch.cuda.is_available() and batcher is None and dp is None
            and bool(getattr(task, "static_batch", False)) and hasattr(opt, "use_device_step")
            and step_hook(model) is None)


class GraphedStep:
    """`ftcore.fit.train_step` of one pack, eager for WARMUP steps, then captured once and replayed.

    Call it as `graphed(step, lr_factor)` in place of `train_step(...)`; it returns the step's loss (E,) (a tensor
    the graph rewrites on each replay). `close()` before the pack is dropped (compaction, the end of fit): it
    returns the optimizer to host step counting and frees the graph's memory pool."""

    def __init__(self, task, model, opt, batch, active: torch.Tensor, diverged_at: torch.Tensor, precision: str,
                 train_step):
        self.task, self.model, self.opt, self.batch = task, model, opt, batch
        self.active, self.diverged_at, self.precision, self.train_step = active, diverged_at, precision, train_step
        dev = active.device
        self.step_t = torch.zeros((), dtype=torch.long, device=dev)              # the step number
        self.lr_t = torch.ones((), dtype=torch.float32, device=dev)              # the schedule's factor
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss: torch.Tensor | None = None
        self.eager = 0
        self.side = torch.cuda.Stream(device=dev)

    def _step(self, step, lr_factor) -> torch.Tensor:
        return self.train_step(self.task, self.model, self.opt, self.batch, self.active, self.diverged_at, step,
                               lr_factor, self.precision, None)

    def __call__(self, step: int, lr_factor: float) -> torch.Tensor:
        if self.graph is None and self.eager < WARMUP:
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                loss = self._step(step, lr_factor)
            torch.cuda.current_stream().wait_stream(self.side)
            self.eager += 1
            return loss
        if self.graph is None:
            self._capture()
        self.step_t.fill_(step)
        self.lr_t.fill_(lr_factor)
        self.graph.replay()
        return self.loss

    def _capture(self) -> None:
        self.opt.use_device_step()
        self.graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(self.graph):
            self.loss = self._step(self.step_t, self.lr_t)

    def close(self) -> None:
        self.opt.sync_step()
        self.graph = self.loss = None
