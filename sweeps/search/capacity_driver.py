"""Capacity search as a round search: every unfinished group probes its next ladder value, all seeds."""
from __future__ import annotations

from sweeps.search.base import RoundSearch
from sweeps.search.capacity import CapacitySearch
from sweeps.spec import SweepSpec, group_label


class CapacityDriver(RoundSearch):
    def __init__(self, spec: SweepSpec, out_dir=None):
        super().__init__(spec, out_dir)
        s = spec.search
        self.points = {group_label(p): p for p in spec.grid_points()}
        self.ladder = s.ladder_values()
        self.search = CapacitySearch(list(self.points), self.ladder, s.quorum)
        self.asked: dict[str, int] = {}

    def next_round(self):
        pending = self.search.pending()
        if not pending:
            return None
        self.round += 1
        self.asked = pending
        param = self.spec.search.param
        return [p for g, v in pending.items() for p in self.probes({**self.points[g], param: v}, g)]

    def record(self, rows):
        super().record(rows)
        key = self.spec.search.success
        by_group: dict[str, list[bool]] = {g: [] for g in self.asked}
        for r in rows:
            by_group[r["group"]].append(r.get("status") == "ok" and float(r.get(key) or 0.0) > 0.5)
        for g, v in self.asked.items():
            self.search.record(g, v, by_group[g])

    def counts(self):
        n_groups, n_seeds = len(self.points), len(self.spec.seed_list())
        return {**super().counts(), "probes": self.search.n_probes(),
                "full_grid_runs": len(self.ladder) * n_groups * n_seeds,
                "thresholds": {g: self.search.threshold(g) for g in self.points}}
