"""What each op's `aot_calls()` builds its launches with: `meta` tensors (shapes, strides and dtypes; no memory),
a backward with an unwritten gradient, and torch's matmul precision per `train.precision`. Apart from
ftkernels.aot (which imports the ops to capture their launches), so the ops import no checker."""
from __future__ import annotations

PRECISIONS = {"fp32": ("float32", "highest"), "tf32": ("float32", "high"),
              "bf16": ("bfloat16", "highest")}     # train.precision -> (tensor dtype, torch matmul precision)


def meta(*shape: int, dtype=None, grad: bool = False):
    """An uninitialised `meta` tensor: shapes, strides and dtype only (no memory, nothing computed)."""
    import torch
    return torch.empty(shape, device="meta", dtype=dtype or torch.float32).requires_grad_(grad)


def backward(y) -> None:
    """Run y's backward with an unwritten gradient (launches the backward kernels; values are irrelevant)."""
    import torch
    torch.autograd.backward(y, torch.empty_like(y))


def at_precision(precision: str, call):
    """`call(dtype)` under torch's matmul precision for `precision` (a key of PRECISIONS)."""
    import torch
    dtype_name, matmul = PRECISIONS[precision]

    def run():
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(matmul)
        try:
            call(getattr(torch, dtype_name))
        finally:
            torch.set_float32_matmul_precision(before)
    return run
