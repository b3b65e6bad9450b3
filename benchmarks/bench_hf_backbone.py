"""Seconds per step of `hf_backbone` packs (t2i_icl's default task, LoRA on c_attn) on a GPT-2 stack of a given size
with random weights (ftcore.models.hf_tiny, saved once under the system temp dir): what `sweeps/t2i_icl.yaml
variant=hf` costs per member-step on this machine before one runs it on a real model. Not a test.

    .venv/bin/python benchmarks/bench_hf_backbone.py [--n-embd 768] [--n-layer 12] [--members 1 3] [--steps 3]

Per pack size E: one warm-up step, then the mean wall of `--steps` steps of `ftcore.fit.train_step` (the step fit
runs), reported per step and per member-step.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import ftcore
from ftcore.fit import build_pack, make_optimizer, train_step
from ftcore.models.hf_tiny import save_tiny


def stack_dir(n_embd: int, n_layer: int) -> str:
    path = Path(tempfile.gettempdir()) / f"ftcore_bench_gpt2_{n_embd}x{n_layer}"
    if not (path / "config.json").is_file():
        save_tiny(path, "gpt2", n_embd=n_embd, n_layer=n_layer, n_head=max(1, n_embd // 64), seed=1)
    return str(path)


def seconds_per_step(path: str, E: int, steps: int, rank: int = 4) -> float:
    ms = [ftcore.member_from_dict({"model": {"name": "hf_backbone", "path": path},
                                   "adapter": {"name": "lora", "rank": rank, "targets": ["c_attn"]},
                                   "task": {"name": "t2i_icl"}, "train": {"steps": steps + 1, "lr": 1e-4},
                                   "seed": s}) for s in range(E)]
    task, model = build_pack(ms, torch.float32)
    opt = make_optimizer(model, ms)
    active, diverged = torch.ones(E, dtype=torch.bool), torch.full((E,), -1)
    train_step(task, model, opt, task.batch(0), active, diverged, 0, 1.0)          # warm-up
    t = time.perf_counter()
    for s in range(1, steps + 1):
        train_step(task, model, opt, task.batch(s), active, diverged, s, 1.0)
    return (time.perf_counter() - t) / steps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-embd", type=int, default=768)
    ap.add_argument("--n-layer", type=int, default=12)
    ap.add_argument("--members", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args(argv)
    path = stack_dir(a.n_embd, a.n_layer)
    print(f"GPT-2 stack {a.n_layer} x {a.n_embd} (random weights), torch threads {torch.get_num_threads()}")
    print("E   s/step   s/member-step")
    for E in a.members:
        s = seconds_per_step(path, E, a.steps)
        print(f"{E:<3} {s:7.3f}  {s / E:7.3f}")


if __name__ == "__main__":
    main()
