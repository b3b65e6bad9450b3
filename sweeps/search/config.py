"""The `search:` section's base dataclass: `kind` names the sweeps.search.SEARCHES entry whose `Config` (a subclass)
types the rest of the section and owns its checks. Kept apart from the drivers so the sweep schema can name it.

The pruning fields live here, shared by every kind (sweeps/pruners.py applies them; a kind that cannot use a pruner
refuses one in its own `__post_init__`, as the capacity search does):

    search:
      pruner: median              # none | median | successive_halving
      prune_metric: val/mse       # default: the search's objective (Optuna's first), else train/loss
      prune_mode: min             # with prune_metric only
      prune_min_steps: 0          # 0: auto (median: ceil(steps/9) warm-up; successive_halving: ceil(steps/eta^2))
      prune_min_configs: 3        # a cohort with fewer configurations is never pruned
      prune_eta: 3                # successive_halving's reduction factor
      prune_by: [adapter.rank]    # compare only configurations agreeing on these (default: the kind's)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ftcore.config import TrainConfig
from ftcore.fields import check
from sweeps.errors import fail

PRUNERS = ("none", "median", "successive_halving")
PRUNE_MODES = ("min", "max")
DEFAULT_PRUNE_OBJECTIVE = ("train/loss", "min")      # every member's rows carry it after step 0 (ftcore.fit)


@dataclass
class SearchConfig:
    """The `search:` section; `kind` names the `SEARCHES` entry whose `Config` (a subclass) types the rest.

    Hooks a kind overrides: `check` (rules that read the rest of the spec; rules on the section alone go in
    `__post_init__`, which a subclass's own must call through `super().__post_init__()` so the pruning fields are
    checked), `check_columns` (rules on the members' config columns), `extremes` (the points, besides each grid
    point itself, that validation builds so an impossible value anywhere fails before a run), `runs_per_point`
    (member runs a grid point × seed implies, for the size cap) and `columns` (the `search.*` columns of every
    runs row: the record contract, DESIGN.md §4)."""
    kind: str = "grid"
    pruner: str = "none"             # none | median | successive_halving (sweeps/pruners.py)
    prune_metric: str = ""           # "": the search's objective (`objectives()[0]` where a kind has one), else train/loss
    prune_mode: str = ""             # min | max, with prune_metric ("": min); the default metric brings its own
    prune_min_steps: int = 0         # median: warm-up; successive_halving: first rung; 0: auto (sweeps/pruners.py)
    prune_min_configs: int = 3       # configurations a pack needs before anything in it is pruned
    prune_eta: int = 3               # successive_halving: keep the best 1/eta at each rung
    prune_by: list[str] = field(default_factory=list)   # cohorts: config columns or `group`; []: `default_prune_by()`

    def __post_init__(self):
        self.check_pruning()

    def check_pruning(self) -> None:
        """One-line ValueError naming the pruning field that is out of range."""
        check(self.pruner in PRUNERS, "search.pruner", " | ".join(PRUNERS), self.pruner)
        check(self.prune_mode in ("",) + PRUNE_MODES, "search.prune_mode", "min or max", self.prune_mode)
        check(not self.prune_mode or bool(self.prune_metric), "search.prune_mode",
              "set together with search.prune_metric (the default metric brings its own mode)", self.prune_mode)
        check(self.prune_min_steps >= 0, "search.prune_min_steps", ">= 0 (0: auto)", self.prune_min_steps)
        check(self.prune_min_configs >= 2, "search.prune_min_configs", ">= 2", self.prune_min_configs)
        check(self.prune_eta >= 2, "search.prune_eta", ">= 2", self.prune_eta)
        check(len(set(self.prune_by)) == len(self.prune_by) and all(self.prune_by), "search.prune_by",
              "distinct column names", self.prune_by)

    def check(self, spec, limits: bool = True) -> None:
        """SpecError when the section contradicts the rest of the spec (`limits`: apply the size caps)."""
        self.check_pruning_steps(spec)

    def check_pruning_steps(self, spec) -> None:
        """SpecError when an explicit `prune_min_steps` is at or past every train.steps of the sweep (nothing
        would ever be pruned: the user meant something else)."""
        if self.pruner == "none" or not self.prune_min_steps:
            return
        steps = spec.axes.get("train.steps")
        steps = steps if isinstance(steps, list) else [spec.train.get("steps", TrainConfig.steps)]
        numbers = [s for s in steps if isinstance(s, int) and not isinstance(s, bool)]
        if numbers and self.prune_min_steps >= max(numbers):
            fail(f"search.prune_min_steps: must be below train.steps ({max(numbers)}), or nothing is ever pruned "
                 f"(got {self.prune_min_steps})")

    def check_columns(self, columns: set[str]) -> None:
        """SpecError when the section names a config column the sweep's members do not have."""
        self.check_prune_by(columns)

    def check_prune_by(self, columns: set[str]) -> None:
        """SpecError when `prune_by` names neither a config column nor `group`."""
        for name in self.prune_by:
            if name not in columns and name != "group":
                fail(f"search.prune_by: {name} is not a field of this sweep's configs (nor `group`); valid: "
                     f"group, {', '.join(sorted(columns))}")

    def extremes(self) -> list[dict]:
        return [{}]

    def runs_per_point(self) -> int:
        return 1

    def prune_objective(self) -> tuple[str, str]:
        """(metric, min | max) the pruner ranks members by: `prune_metric`, else the first objective of a kind
        that has `objectives()` (Optuna), else train/loss (min)."""
        if self.prune_metric:
            return self.prune_metric, self.prune_mode or "min"
        objectives = getattr(self, "objectives", None)
        return tuple(objectives()[0]) if callable(objectives) else DEFAULT_PRUNE_OBJECTIVE

    def default_prune_by(self) -> list[str]:
        """The cohorts a pruner compares when `prune_by` is empty: a kind that searches inside each group (Optuna:
        one study per group) compares a group's proposals only, never one grid point against another."""
        return ["group"]

    def pruner_payload(self) -> dict | None:
        """What a trial's worker needs to prune members (sweeps.pruners.make_pruner), JSON-able; None: no pruning."""
        if self.pruner == "none":
            return None
        metric, mode = self.prune_objective()
        return {"rule": self.pruner, "metric": metric, "mode": mode, "min_steps": self.prune_min_steps,
                "min_configs": self.prune_min_configs, "eta": self.prune_eta,
                "by": list(self.prune_by or self.default_prune_by())}

    def columns(self) -> dict:
        # every kind writes the same five columns; a kind without a searched parameter writes the values the
        # single schema of every kind had (so older and newer rows of a sweep agree). A pruning sweep adds two
        # (only then: rows of sweeps without a pruner keep their pinned schema, tests/test_run_id_pin.py).
        cols = {"search.kind": self.kind, "search.param": "", "search.success": "fit/success", "search.quorum": 0.5,
                "search.ladder_size": None}
        if self.pruner != "none":
            cols.update({"search.pruner": self.pruner, "search.prune_metric": self.prune_objective()[0]})
        return cols
