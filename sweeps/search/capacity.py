"""Capacity search: the smallest capacity value (width m, rank r) at which a group succeeds.

For every group (one combination of the grid axes, e.g. N × g-depth) the search walks a *ladder* of
capacity values c_0 < c_1 < … < c_n, assuming success is monotone in capacity:

1. doubling: probe c_0, then the smallest ladder value ≥ 2× the last failing one, until a probe succeeds
   (or the top of the ladder fails: the group is *censored*, its threshold is above the ladder);
2. bisection between the last failure and the first success, on ladder indices, until they are adjacent.

A probe succeeds when at least `quorum` of its seeds succeed (fractions compared with a 0.01
tolerance, so `quorum: 0.67` means two of three seeds). Every probe is recorded. Groups advance
independently (`record` per group, in any order): the driver (capacity_driver.py) hands a group its next
probe as soon as its last one is in, and groups that become ready together share packs (DESIGN.md §3). The
number of probes per group is about log2(c*/c_0) + log2(gap) instead of the n + 1 of a full ladder scan.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GroupState:
    fail: int = -1                 # largest ladder index known to fail
    ok: int | None = None          # smallest ladder index known to succeed
    next: int | None = 0           # ladder index to probe next; None = finished
    probes: list[tuple[int, int, int]] = field(default_factory=list)   # (value, n_success, n_seeds)


class CapacitySearch:
    def __init__(self, groups: list[str], ladder: list[int], quorum: float):
        if not ladder or sorted(set(ladder)) != list(ladder):
            raise ValueError("search.ladder: must be strictly increasing and non-empty")
        if not 0 < quorum <= 1:
            raise ValueError(f"search.quorum: must be in (0, 1] (got {quorum})")
        self.ladder, self.quorum = list(ladder), quorum
        self.state = {g: GroupState() for g in groups}

    @property
    def done(self) -> bool:
        return all(s.next is None for s in self.state.values())

    def pending(self) -> dict[str, int]:
        """The capacity value each unfinished group probes next (in flight or not)."""
        return {g: self.ladder[s.next] for g, s in self.state.items() if s.next is not None}

    def passes(self, n_success: int, n_seeds: int) -> bool:
        return quorum_met(n_success, n_seeds, self.quorum)

    def record(self, group: str, value: int, successes: list[bool]) -> None:
        s = self.state[group]
        i = self.ladder.index(value)
        if i != s.next:
            raise ValueError(f"group {group!r} expected a probe at {self.ladder[s.next]}, got {value}")
        s.probes.append((value, int(sum(successes)), len(successes)))
        if self.passes(sum(successes), len(successes)):
            s.ok = i
        else:
            s.fail = i
        s.next = self._next_index(s)

    def _next_index(self, s: GroupState) -> int | None:
        top = len(self.ladder) - 1
        if s.ok is None:                                     # still doubling
            if s.fail >= top:
                return None                                  # censored
            target = 2 * self.ladder[s.fail] if s.fail >= 0 else self.ladder[0]
            return next((j for j in range(s.fail + 1, top + 1) if self.ladder[j] >= target), top)
        if s.ok - s.fail <= 1:
            return None                                      # adjacent: threshold found
        return (s.fail + s.ok) // 2

    def threshold(self, group: str) -> int | None:
        """Smallest succeeding ladder value, or None when censored (nothing on the ladder succeeded)."""
        s = self.state[group]
        return None if s.ok is None else self.ladder[s.ok]

    def n_probes(self) -> int:
        return sum(len(s.probes) for s in self.state.values())


QUORUM_TOL = 0.01


def quorum_met(n_success: int, n_seeds: int, quorum: float) -> bool:
    """n_success / n_seeds >= quorum, with a 0.01 tolerance for quorums written as rounded fractions."""
    return n_seeds > 0 and n_success / n_seeds >= quorum - QUORUM_TOL


def make_ladder(lo: int, hi: int, values: list[int] | None = None) -> list[int]:
    """Explicit ladder values, or every integer in [lo, hi]."""
    if values:
        return sorted({int(v) for v in values})
    return list(range(int(lo), int(hi) + 1))
