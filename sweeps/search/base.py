"""Wave-based searches and their registry. A search hands out *waves* of member runs as its groups become ready
and learns from their result rows one trial at a time; the runner packs each wave into as many Tune trials as there
are free slots (DESIGN.md §3). There is no round barrier: a group advances as soon as its own probe's rows are in,
whatever else is still running. Every search answers:

    next_round() -> list[Probe] | None   # the probes that can run now: one wave, for every unfinished group with
                                         # nothing in flight; None: nothing can run now (the sweep is finished
                                         # when, besides, nothing is outstanding)
    record(rows) -> int                  # the rows of any subset of handed-out probes (one trial's); returns how
                                         # many of the search's decisions (a capacity group's probe, an Optuna
                                         # proposal) it completed
    counts() -> dict                     # numbers for progress and the closing summary

A decision waits for all its seeds' rows (`wait_key`): rows of one probe split across trials are held until the
last comes in. Decisions depend on the rows alone, never on their arrival order, so a resumed sweep (which replays
recorded rows as soon as a wave names them) takes the same decisions as an undisturbed one.

Each kind is an entry of `SEARCHES` (like models, adapters and tasks in ftcore.registry) that owns the dataclass
of its `search:` section (`Config`, a sweeps.search.config.SearchConfig) and that section's checks.
"""
from __future__ import annotations

from collections.abc import Hashable

from ftcore.registry import Registry
from sweeps.grid import build_member
from sweeps.probe import Probe  # noqa: F401  (part of this module's API)
from sweeps.schema import SweepSpec
from sweeps.search.config import SearchConfig

SEARCHES = Registry("search", key="kind")


class RoundSearch:
    Config = SearchConfig
    # Wave 1 is the same whenever the search starts (resume replays from it): grid and capacity. Optuna's
    # studies reload their told trials from the journal, so a resumed study's first wave is a later one.
    same_first_round = True

    def __init__(self, spec: SweepSpec, out_dir=None):
        self.spec, self.out_dir = spec, out_dir
        self.round = 0                                   # waves handed out so far
        self.n_runs = 0
        self.n_pruned = self.steps = self.steps_saved = 0
        self.expected: dict[Hashable, int] = {}          # decision key -> rows it waits for (its seeds)
        self.held: dict[Hashable, list[dict]] = {}       # decision key -> its rows in so far

    def probes(self, point: dict, group: str, extra_meta: dict | None = None, index: int = 1) -> list[Probe]:
        """One probe per seed for a grid point. Its `round` meta is `index`: the group's own probe index (1 for
        the group's first probe, 2 for its second, ...), not the wave it was handed out in."""
        meta = {"group": group, "round": index, **(extra_meta or {})}
        return [Probe(build_member(self.spec, point, s), dict(meta)) for s in self.spec.seed_list()]

    def next_round(self) -> list[Probe] | None:
        raise NotImplementedError

    def wait_key(self, meta: dict) -> Hashable | None:
        """The decision a probe (its meta) or a row belongs to; None: no decision waits for it (a grid's runs)."""
        return None

    def complete(self, key: Hashable, rows: list[dict]) -> None:
        """Every row of decision `key` is in (one per seed): take the decision."""

    def hand_out(self, probes: list[Probe]) -> list[Probe]:
        """Count a wave (`round`) and the rows each of its decisions will wait for; returns `probes`."""
        self.round += 1
        for p in probes:
            key = self.wait_key(p.meta)
            if key is not None:
                self.expected[key] = self.expected.get(key, 0) + 1
        return probes

    def waiting(self) -> int:
        """Decisions handed out whose rows are not all in."""
        return len(self.expected)

    def record(self, rows: list[dict]) -> int:
        self._count(rows)
        complete = []
        for r in rows:
            key = self.wait_key(r)
            if key is None or key not in self.expected:
                continue
            self.held.setdefault(key, []).append(r)
            if len(self.held[key]) == self.expected[key]:
                complete.append(key)
        for key in complete:
            del self.expected[key]
            self.complete(key, self.held.pop(key))
        return len(complete)

    def _count(self, rows: list[dict]) -> None:
        self.n_runs += len(rows)
        for r in rows:
            steps, budget = _count(r.get("steps")), _count(r.get("train.steps"))
            self.steps += steps
            if r.get("status") == "pruned":
                self.n_pruned += 1
                self.steps_saved += max(budget - steps, 0)

    def counts(self) -> dict:
        """`rounds`: waves handed out (one per `next_round` that returned probes; a capacity group's probes are
        the ones of its own ladder walk, so this is at least the longest walk); `runs`; `pruned` (runs a pruner
        stopped, sweeps/pruners.py), `steps` (optimizer steps the runs took) and `steps_saved` (Σ over pruned runs
        of train.steps − the step it stopped at)."""
        return {"rounds": self.round, "runs": self.n_runs, "pruned": self.n_pruned, "steps": self.steps,
                "steps_saved": self.steps_saved}


def _count(value) -> int:
    """A row's step count as an int; 0 when absent (a failed trial's row) or NaN (a resumed row read back)."""
    try:
        return int(value) if value is not None and value == value else 0
    except (TypeError, ValueError):
        return 0


def make_search(spec: SweepSpec, out_dir) -> RoundSearch:
    return SEARCHES.get_entry(spec.search.kind)(spec, out_dir)
