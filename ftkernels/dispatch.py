"""One dispatch point: Triton kernels on CUDA tensors when available, the plain-torch reference otherwise.

`FTCORE_KERNELS` forces a choice:
* `auto` (default) — Triton for CUDA tensors when triton imports, the `<op>_ref` otherwise;
* `torch` — always the reference;
* `triton` — always Triton; on CPU tensors this needs `TRITON_INTERPRET=1` (Triton's interpreter: slow,
  for tests), and is an error otherwise, so a forced choice never silently falls back.

Two records per run row: `kernels_impl` is the policy for the pack's device (`impl_for(device)`), and
`kernels_ops` is what each op call actually took (`take_ops()`): an op outside its kernel's limits (a LoRA rank
of 0 or above 64, a packed MLP output wider than 64, a Mamba state wider than 64, an unsupported dtype) runs
its reference even when the policy says triton, and says so there. Each op's public entry asks `decide(op,
fits, *tensors)`, which records the answer in a per-process table that `take_ops()` reads and clears.
"""
from __future__ import annotations

import functools
import json
import logging
import os

import torch

CHOICES = ("auto", "torch", "triton")
FUSED_OPS = ("lora_linear", "packed_mlp", "multi_adamw", "selective_scan")    # ops with a Triton path in ftcore
log = logging.getLogger("ftcore.kernels")
_RAN: dict[str, set[str]] = {}          # op -> the implementations its calls took since the last take_ops()


def triton_importable() -> bool:
    from ftkernels._compat import HAVE_TRITON
    return HAVE_TRITON


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def choice() -> str:
    c = os.environ.get("FTCORE_KERNELS", "auto")
    if c not in CHOICES:
        raise ValueError(f"FTCORE_KERNELS: must be one of {', '.join(CHOICES)} (got {c!r})")
    return c


def impl_for(device: torch.device | str) -> str:
    """'triton' or 'torch': the policy for tensors on `device` (what an in-limits op call takes)."""
    c, cuda = choice(), torch.device(device).type == "cuda"
    if c == "torch":
        impl = "torch"
    elif c == "triton":
        if not triton_importable() or not (cuda or interpreting()):
            raise ValueError("FTCORE_KERNELS=triton: Triton needs CUDA tensors (or TRITON_INTERPRET=1 on CPU) "
                             "and an importable triton")
        impl = "triton"
    else:
        impl = "triton" if cuda and triton_importable() else "torch"
    _log_once(impl, str(device))
    return impl


def use_triton(*tensors: torch.Tensor) -> bool:
    """True when the policy says Triton for these tensors (their first one's device)."""
    return impl_for(tensors[0].device) == "triton"


def decide(op: str, fits: bool, *tensors: torch.Tensor) -> bool:
    """True: `op` takes its Triton path for this call. `fits`: the call is inside the kernel's limits (when
    False the policy is not even asked, so a forced `triton` never errors on an out-of-limits call). The
    answer is recorded for `take_ops()`."""
    tri = fits and use_triton(*tensors)
    _RAN.setdefault(op, set()).add("triton" if tri else "torch")
    return tri


def autocast_inputs(*tensors: torch.Tensor | None) -> tuple:
    """Under torch.autocast for the first tensor's device: the floating tensors cast to autocast's dtype (what
    autocast does to a matmul's inputs, so a fused op sees one 16-bit dtype); otherwise all unchanged."""
    dev = tensors[0].device.type
    if not torch.is_autocast_enabled(dev):
        return tensors
    dt = torch.get_autocast_dtype(dev)
    return tuple(t.to(dt) if t is not None and t.is_floating_point() else t for t in tensors)


def ops_ran() -> dict[str, str]:
    """{op: "triton" | "torch" | "torch+triton"} for the op calls since the last `take_ops()`/`reset_ops()`."""
    return {op: "+".join(sorted(impls)) for op, impls in sorted(_RAN.items())}


def reset_ops() -> None:
    _RAN.clear()


def take_ops() -> str:
    """The run rows' `kernels_ops`: `ops_ran()` as a JSON string (e.g. {"multi_adamw": "triton", "packed_mlp":
    "torch"}), then the table cleared for the next pack."""
    out = json.dumps(ops_ran(), sort_keys=True)
    reset_ops()
    return out


def active_impl() -> str:
    """The implementation for CPU tensors (where a CPU-only worker trains)."""
    return impl_for("cpu")


@functools.cache
def _log_once(impl: str, device: str) -> None:
    log.info("ftcore kernels: %s on %s (FTCORE_KERNELS=%s)", impl, device, choice())
