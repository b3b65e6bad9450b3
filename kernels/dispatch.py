"""One dispatch point: Triton kernels on CUDA tensors when available, the plain-torch reference otherwise.

`FTCORE_KERNELS` forces a choice: `auto` (default), `torch`, `triton`. The implementation in use is
recorded in every run row (`kernels_impl`). No fused op is wired into the training loop yet (the Triton
kernels arrive with the speed issue), so today every run records `torch`.
"""
from __future__ import annotations

import os

CHOICES = ("auto", "torch", "triton")
FUSED_OPS: tuple[str, ...] = ()      # ops with a Triton implementation wired into ftcore


def triton_available() -> bool:
    try:
        import torch
        import triton  # noqa: F401
        return torch.cuda.is_available()
    except ImportError:
        return False


def active_impl() -> str:
    choice = os.environ.get("FTCORE_KERNELS", "auto")
    if choice not in CHOICES:
        raise ValueError(f"FTCORE_KERNELS: must be one of {', '.join(CHOICES)} (got {choice!r})")
    if choice == "triton" and not (FUSED_OPS and triton_available()):
        raise ValueError("FTCORE_KERNELS=triton: no Triton kernel is available here (needs CUDA, triton and a fused op)")
    return "triton" if choice != "torch" and FUSED_OPS and triton_available() else "torch"
