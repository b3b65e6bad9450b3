"""Grid search: every grid point × seed, in a single wave (no decision waits on its rows). With `search.pruner`
(sweeps/pruners.py) the rows of pruned members pass through like the others (status `pruned`); nothing is re-run."""
from __future__ import annotations

from dataclasses import dataclass

from sweeps.grid import group_label
from sweeps.search.base import SEARCHES, RoundSearch, SearchConfig


@SEARCHES.register("grid")
class GridSearch(RoundSearch):
    @dataclass
    class Config(SearchConfig):
        kind: str = "grid"

        def default_prune_by(self):
            """Every grid point is its own group: a grid compares the whole pack unless `prune_by` names cohorts
            (e.g. [adapter.rank]: each rank's learning rates among themselves)."""
            return []

    def next_round(self):
        if self.round:
            return None
        return self.hand_out([p for point in self.spec.grid_points() for p in self.probes(point, group_label(point))])
