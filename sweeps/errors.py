"""The sweep layer's user-mistake error: imported by the schema's section configs and by the spec's checks alike,
so it lives below both (no import circle)."""
from __future__ import annotations


class SpecError(ValueError):
    """A user mistake in a sweep spec or override: one line, no traceback (CLI exit code 2)."""


def fail(msg: str) -> None:
    raise SpecError(msg)
