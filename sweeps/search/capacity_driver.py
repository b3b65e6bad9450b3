"""Capacity search as a wave search: each unfinished group probes its next ladder value on every seed as soon as
its previous probe's rows are all in, whatever the other groups are doing (the ladder walk itself is
sweeps/search/capacity.py). A group's walk depends only on its own probes' outcomes, so its threshold is the same
whatever order the trials complete in."""
from __future__ import annotations

from dataclasses import dataclass, field

from ftcore.fields import check
from sweeps.grid import group_label
from sweeps.search.base import SEARCHES, RoundSearch, SearchConfig
from sweeps.search.capacity import CapacitySearch, make_ladder
from sweeps.spec_checks import LIMITS_HINT, MAX_RUNS, fail


@SEARCHES.register("capacity")
class CapacityDriver(RoundSearch):
    @dataclass
    class Config(SearchConfig):
        """The smallest `param` value on the ladder where `success` holds for `quorum` of the seeds."""
        kind: str = "capacity"
        param: str = ""
        range: list[int] = field(default_factory=lambda: [1, 256])
        ladder: list[int] = field(default_factory=list)     # explicit ladder; overrides range
        success: str = "fit/success"
        quorum: float = 0.5

        def __post_init__(self):
            super().__post_init__()
            check(self.pruner == "none", "search.pruner",
                  "none for search.kind=capacity (its thresholds need every probe's outcome)", self.pruner)
            check(bool(self.param) and "." in self.param, "search.param",
                  "a dotted capacity field such as adapter.width or adapter.rank (search.kind=capacity)", self.param)
            if not self.ladder:
                check(len(self.range) == 2 and self.range[0] <= self.range[1], "search.range",
                      "[low, high] with low <= high", list(self.range))
            check(all(v >= 0 for v in self.ladder or self.range), "search.ladder", "capacity values >= 0",
                  list(self.ladder or self.range))
            check(0 < self.quorum <= 1, "search.quorum", "in (0, 1]", self.quorum)

        def _length(self) -> int:
            """Ladder length without expanding it (a typo'd range may be 10^12 values)."""
            return len(set(self.ladder)) or self.range[1] - self.range[0] + 1

        def check(self, spec, limits=True):
            if self.param in spec.axes:
                fail(f"search.param: {self.param} is searched, so it cannot also be a grid axis")
            if limits and self._length() > MAX_RUNS:
                fail(f"search.range: {list(self.range)} is a ladder of {self._length()} values, above the cap of "
                     f"{MAX_RUNS} ({LIMITS_HINT})")

        def check_columns(self, columns):
            if self.param not in columns:
                fail(f"search.param: {self.param} is not a field of this sweep's configs; valid: {', '.join(sorted(columns))}")

        def ladder_values(self) -> list[int]:
            """The capacity ladder: `ladder` if given, else every integer in `range`."""
            return make_ladder(self.range[0], self.range[1], self.ladder)

        def extremes(self):
            ladder = self.ladder_values()
            return [{self.param: ladder[0]}, {self.param: ladder[-1]}]

        def runs_per_point(self):
            return (self._length() - 1).bit_length() + 2      # doubling then bisection, plus the ladder's ends

        def columns(self):
            return {**super().columns(), "search.param": self.param, "search.success": self.success,
                    "search.quorum": self.quorum, "search.ladder_size": len(self.ladder_values())}

    def __init__(self, spec, out_dir=None):
        super().__init__(spec, out_dir)
        s = spec.search
        self.points = {group_label(p): p for p in spec.grid_points()}
        self.ladder = s.ladder_values()
        self.search = CapacitySearch(list(self.points), self.ladder, s.quorum)

    def next_round(self):
        """One probe (every seed) per unfinished group with nothing in flight; None when there is none."""
        ready = {g: v for g, v in self.search.pending().items() if g not in self.expected}
        if not ready:
            return None
        param = self.spec.search.param
        return self.hand_out([p for g, v in ready.items()
                              for p in self.probes({**self.points[g], param: v}, g,
                                                   index=len(self.search.state[g].probes) + 1)])

    def wait_key(self, meta):
        """A group's probe waits for its seeds' rows."""
        return meta.get("group")

    def complete(self, g, rows):
        """The group's probe is in: a seed succeeds when its run is ok and `success` > 0.5."""
        key = self.spec.search.success
        successes = [r.get("status") == "ok" and float(r.get(key) or 0.0) > 0.5 for r in rows]
        self.search.record(g, self.search.pending()[g], successes)

    def counts(self):
        n_groups, n_seeds = len(self.points), len(self.spec.seed_list())
        return {**super().counts(), "probes": self.search.n_probes(),
                "full_grid_runs": len(self.ladder) * n_groups * n_seeds,
                "thresholds": {g: self.search.threshold(g) for g in self.points}}
