"""`triton` and `triton.language` where Triton is installed; inert stand-ins where it is not (macOS, or a
Linux without the wheel), so every op module imports and its `<op>_ref` — the CPU path — works everywhere.
With the stand-ins `@triton.jit` returns the plain function (never launched: `dispatch` only picks Triton
when `HAVE_TRITON`)."""
from __future__ import annotations

try:
    import triton
    import triton.language as tl
    HAVE_TRITON = True
except ImportError:          # pragma: no cover - exercised on machines without triton
    HAVE_TRITON = False

    class _Stub:
        """Any attribute is another stub; used as a decorator (with or without arguments) it returns the function."""

        def __getattr__(self, name):
            return _Stub()

        def __call__(self, *args, **kwargs):
            if len(args) == 1 and callable(args[0]) and not kwargs:
                return args[0]
            return _Stub()

    triton = tl = _Stub()

__all__ = ["HAVE_TRITON", "tl", "triton"]
