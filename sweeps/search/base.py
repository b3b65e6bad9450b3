"""Round-based searches. A search hands out *rounds* of member runs and learns from their result rows;
the runner packs each round into Tune trials (DESIGN.md §3). Every search answers:

    next_round() -> list[Probe] | None       # None: finished
    record(rows)                              # one result row per member of the round
    counts() -> dict                          # numbers for progress and the closing summary
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ftcore.config import MemberConfig
from sweeps.spec import SweepSpec, build_member, group_label


@dataclass
class Probe:
    member: MemberConfig
    meta: dict = field(default_factory=dict)     # group, round, search/optuna columns

    def payload(self) -> dict:
        """JSON-able form shipped to the Ray Train worker."""
        return {"config": self.member.nested(), "meta": self.meta}     # a trained base as model.from


class RoundSearch:
    # Round 1 is the same whenever the search starts (resume replays from it): grid and capacity. Optuna's
    # studies reload their told trials from the journal, so a resumed study's first round is a later one.
    same_first_round = True

    def __init__(self, spec: SweepSpec, out_dir=None):
        self.spec, self.out_dir = spec, out_dir
        self.round = 0
        self.n_runs = 0

    def probes(self, point: dict, group: str, extra_meta: dict | None = None) -> list[Probe]:
        """One probe per seed for a grid point."""
        meta = {"group": group, "round": self.round, **(extra_meta or {})}
        return [Probe(build_member(self.spec, point, s), dict(meta)) for s in self.spec.seed_list()]

    def next_round(self) -> list[Probe] | None:
        raise NotImplementedError

    def record(self, rows: list[dict]) -> None:
        self.n_runs += len(rows)

    def counts(self) -> dict:
        return {"rounds": self.round, "runs": self.n_runs}


class GridSearch(RoundSearch):
    """Every grid point × seed, in a single round."""

    def next_round(self):
        if self.round:
            return None
        self.round = 1
        return [p for point in self.spec.grid_points() for p in self.probes(point, group_label(point))]


def make_search(spec: SweepSpec, out_dir) -> RoundSearch:
    from sweeps.search.capacity_driver import CapacityDriver
    from sweeps.search.optuna_search import OptunaDriver
    kinds = {"grid": GridSearch, "capacity": CapacityDriver, "optuna": OptunaDriver}
    return kinds[spec.search.kind](spec, out_dir)
