"""Named random streams per member: the same (seed, stream) always gives the same generator, so a
member's data, base and adapter init do not depend on the pack it runs in."""
from __future__ import annotations

import hashlib

import torch


def member_generator(seed: int, stream: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def generators(seeds: list[int], stream: str) -> list[torch.Generator]:
    return [member_generator(s, stream) for s in seeds]
