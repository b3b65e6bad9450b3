"""Round-based searches and their registry. A search hands out *rounds* of member runs and learns from their
result rows; the runner packs each round into Tune trials (DESIGN.md §3). Every search answers:

    next_round() -> list[Probe] | None       # None: finished
    record(rows)                              # one result row per member of the round
    counts() -> dict                          # numbers for progress and the closing summary

Each kind is an entry of `SEARCHES` (like models, adapters and tasks in ftcore.registry) that owns the dataclass
of its `search:` section (`Config`, a sweeps.search.config.SearchConfig) and that section's checks.
"""
from __future__ import annotations

from ftcore.registry import Registry
from sweeps.grid import build_member
from sweeps.probe import Probe  # noqa: F401  (part of this module's API)
from sweeps.schema import SweepSpec
from sweeps.search.config import SearchConfig

SEARCHES = Registry("search", key="kind")


class RoundSearch:
    Config = SearchConfig
    # Round 1 is the same whenever the search starts (resume replays from it): grid and capacity. Optuna's
    # studies reload their told trials from the journal, so a resumed study's first round is a later one.
    same_first_round = True

    def __init__(self, spec: SweepSpec, out_dir=None):
        self.spec, self.out_dir = spec, out_dir
        self.round = 0
        self.n_runs = 0
        self.n_pruned = self.steps = self.steps_saved = 0

    def probes(self, point: dict, group: str, extra_meta: dict | None = None) -> list[Probe]:
        """One probe per seed for a grid point."""
        meta = {"group": group, "round": self.round, **(extra_meta or {})}
        return [Probe(build_member(self.spec, point, s), dict(meta)) for s in self.spec.seed_list()]

    def next_round(self) -> list[Probe] | None:
        raise NotImplementedError

    def record(self, rows: list[dict]) -> None:
        self.n_runs += len(rows)
        for r in rows:
            steps, budget = _count(r.get("steps")), _count(r.get("train.steps"))
            self.steps += steps
            if r.get("status") == "pruned":
                self.n_pruned += 1
                self.steps_saved += max(budget - steps, 0)

    def counts(self) -> dict:
        """rounds and runs; `pruned` (runs a pruner stopped, sweeps/pruners.py), `steps` (optimizer steps the
        runs took) and `steps_saved` (Σ over pruned runs of train.steps − the step it stopped at)."""
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
