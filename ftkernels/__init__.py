"""Fused GPU kernels, each with a plain-torch `_ref` that is also the CPU path (DESIGN.md §2)."""
from ftkernels.dispatch import active_impl  # noqa: F401
