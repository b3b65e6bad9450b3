"""Multi-LoRA packing on a shared HF base: E LoRA members over ONE frozen copy vs one member per run.

    python benchmarks/bench_multi_lora.py                       # CPU: a small GPT-2 (n_embd 128, 4 layers)
    python benchmarks/bench_multi_lora.py --device cuda --n-embd 768 --n-layer 12 --n-head 12 --vocab 50257
                                                                 # GPU: GPT-2-small-sized (the issue's goal: >= 5x at E=32)

A member run is S optimizer steps of LoRA (mixed ranks 4/8/16 on c_attn, c_proj, c_fc; PackedAdamW) on its own
random token batches (B × T). Packed: one `hf_causal_lm` base and one LoRA adapter of E members, one forward over
the E members' batches per step (adapters/lora_modules.py). One per run: E separate runs, each loading the base
(as a separate run must) and training one member. Printed side by side, with the ratio:

* member-runs per minute — E / wall time (one-per-run time both with and without its E base loads);
* peak memory broken into base (frozen parameters), adapters + optimizer state (parameters, gradients, AdamW m
  and v: 4 × trainable bytes), activations (what autograd saves for one forward + loss, counted with
  saved_tensors_hooks; on CUDA also torch.cuda.max_memory_allocated of the step).

The base weights are random (ftcore.models.hf_tiny builds and saves the model first): speed and memory do not
depend on what the weights are.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from ftcore.adapters.lora import LoRA, LoraConfig
from ftcore.models.hf_causal_lm import HFCausalLM, HFCausalLMConfig
from ftcore.models.hf_tiny import save_tiny
from ftcore.optim import PackedAdamW
from ftcore.seeding import generators

RANKS = (4, 8, 16)
TARGETS = ["c_attn", "c_proj", "c_fc"]


def nbytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def build(path: str, E: int, device: str):
    cfg = HFCausalLMConfig(path=path)
    base = HFCausalLM(cfg, *(2 * [_vocab(path)]), [])
    cfgs = [LoraConfig(rank=RANKS[e % len(RANKS)], alpha=16.0, targets=TARGETS, init="kaiming") for e in range(E)]
    model = LoRA(cfgs, base, 0, 0, generators(list(range(E)), "adapter")).to(device)
    opt = PackedAdamW([p for p in model.parameters() if p.requires_grad], lr=[1e-3] * E, weight_decay=[0.0] * E)
    return model, opt


def _vocab(path: str) -> int:
    from ftcore.models.hf_causal_lm import model_vocab_size
    return model_vocab_size(path)


def loss_fn(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Next-token CE per member: logits (E, B, T, V), ids (E, B, T) -> (E,)."""
    E, V = logits.shape[0], logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits[:, :, :-1].reshape(-1, V), ids[:, :, 1:].reshape(-1),
                                             reduction="none").view(E, -1).mean(1)


def batches(E: int, steps: int, B: int, T: int, V: int, device: str, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (E, B, T), generator=g).to(device) for _ in range(steps)]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train(model, opt, data) -> None:
    E = data[0].shape[0]
    for ids in data:
        opt.zero_grad()
        loss_fn(model(ids), ids).sum().backward()
        opt.step(torch.ones(E, dtype=torch.bool, device=ids.device))


def activations(model, ids) -> int:
    saved = [0]

    def count(t):
        saved[0] += t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        loss_fn(model(ids), ids).sum()
    return saved[0]


def packed(path, E, steps, B, T, device):
    """-> (wall s, memory dict) of one pack of E members."""
    sync(device)
    model, opt = build(path, E, device)
    data = batches(E, steps, B, T, _vocab(path), device)
    train(model, opt, data[:1])                      # warm-up step (allocator, first-call costs)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    train(model, opt, data)
    sync(device)
    wall = time.perf_counter() - t0
    mem = {"base": nbytes(model.base.parameters()),
           "adapters+opt": 4 * nbytes(p for p in model.parameters() if p.requires_grad),
           "activations": activations(model, data[0])}
    if device == "cuda":
        mem["cuda_peak"] = torch.cuda.max_memory_allocated()
    return wall, mem


def one_per_run(path, E, steps, B, T, device):
    """-> (wall s incl. loads, wall s of the training steps only) of E one-member runs."""
    total = steps_only = 0.0
    V = _vocab(path)
    for e in range(E):
        sync(device)
        t0 = time.perf_counter()
        model, opt = build(path, 1, device)
        data = batches(1, steps, B, T, V, device, seed=e)
        train(model, opt, data[:1])
        sync(device)
        t1 = time.perf_counter()
        train(model, opt, data)
        sync(device)
        t2 = time.perf_counter()
        total += t2 - t0
        steps_only += t2 - t1
    return total, steps_only


def mib(b: float) -> str:
    return f"{b / 2**20:8.1f}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="multi-LoRA packing on one shared HF base vs one member per run")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(save_tiny(tmp, "gpt2", a.n_embd, a.n_layer, a.n_head, a.vocab))
        n_base = sum(p.numel() for p in HFCausalLM(HFCausalLMConfig(path=path), *(2 * [_vocab(path)]), []).parameters())
        print(f"# GPT-2 base: n_embd {a.n_embd}, {a.n_layer} layers, vocab {_vocab(path)} ({n_base / 1e6:.2f} M params), "
              f"LoRA ranks {RANKS} on {TARGETS}; {a.steps} steps of B={a.batch} x T={a.seq} per member; "
              f"device {a.device}")
        print("|   E | packed runs/min | one-per-run runs/min (steps only) | ratio (steps only) | base MiB | "
              "adapters+opt MiB | activations MiB |" + (" cuda peak MiB |" if a.device == "cuda" else ""))
        print("|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if a.device == "cuda" else ""))
        for E in a.sizes:
            wall, mem = packed(path, E, a.steps, a.batch, a.seq, a.device)
            total, steps_only = one_per_run(path, E, a.steps, a.batch, a.seq, a.device)
            rate, rate_1, rate_s = 60 * E / wall, 60 * E / total, 60 * E / steps_only
            row = (f"| {E:3d} | {rate:15.1f} | {rate_1:10.1f} ({rate_s:.1f}) | {rate / rate_1:6.2f}x "
                   f"({rate / rate_s:.2f}x) | {mib(mem['base'])} | {mib(mem['adapters+opt'])} | "
                   f"{mib(mem['activations'])} |")
            if a.device == "cuda":
                row += f" {mib(mem['cuda_peak'])} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
