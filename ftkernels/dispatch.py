"""One dispatch point: Triton kernels on CUDA tensors when available, the plain-torch reference otherwise.

`FTCORE_KERNELS` forces a choice:
* `auto` (default) — Triton for CUDA tensors when triton imports, the `<op>_ref` otherwise;
* `torch` — always the reference;
* `triton` — always Triton; on CPU tensors this needs `TRITON_INTERPRET=1` (Triton's interpreter: slow,
  for tests), and is an error otherwise, so a forced choice never silently falls back.
The implementation a pack used is recorded in every run row (`kernels_impl`), via `impl_for(device)`.
"""
from __future__ import annotations

import functools
import logging
import os

import torch

CHOICES = ("auto", "torch", "triton")
FUSED_OPS = ("lora_linear", "packed_mlp", "multi_adamw")      # ops with a Triton implementation wired into ftcore
log = logging.getLogger("ftcore.kernels")


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
    """'triton' or 'torch': what the fused ops will run for tensors on `device`."""
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
    """True when the fused ops should take the Triton path for these tensors."""
    return impl_for(tensors[0].device) == "triton"


def active_impl() -> str:
    """The implementation for CPU tensors (where a CPU-only worker trains)."""
    return impl_for("cpu")


@functools.cache
def _log_once(impl: str, device: str) -> None:
    log.info("ftcore kernels: %s on %s (FTCORE_KERNELS=%s)", impl, device, choice())
