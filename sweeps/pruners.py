"""Pruners: stop hopeless members of a pack at evaluation steps (issue 16, item 3).

`make_pruner(payload, pack)` turns the search's pruner payload (`SearchConfig.pruner_payload()`, shipped in the
trial's config) into fit's `on_eval(step, rows) -> members to prune` for one pack, or None when the search
prunes nothing. A pruned member is frozen like a finished one (and compacted away with them), recorded with
status `pruned`, `steps` = the step it stopped at and its last evaluation as its metrics (ftcore.fit).

What is compared. All members of a pack share `train.steps` and `train.eval_every`, so they are evaluated at the
same steps: a pack is *synchronous*, and a rule compares its members at the same step (no member is judged
against another's future).

* The unit judged is a **configuration**: the members whose configs differ only by seed. Its value is the median
  over its seeds in the pack, and all its seeds are pruned together: a configuration with some seeds pruned and
  others finished would leave only its luckiest seeds in the records (a biased mean over seeds), and Optuna
  tells a proposal PRUNED if any of its seeds is.
* Only configurations of one **cohort** are compared: those agreeing on the payload's `by` columns
  (`search.prune_by`: config columns, or `group`, a probe's grid point outside what the search searches). By
  default a grid compares its whole pack (every grid point is its own group) and Optuna one group's proposals
  (one study's: a low rank is never pruned for losing to a high rank of another study sharing its pack); a grid
  that measures a curve over, say, the rank sets `prune_by: [adapter.rank]` so that each rank's learning rates
  are compared among themselves.
* A member's value at a step is the best value of `metric` it has reached so far (lower is better after the sign
  of `mode`; NaN/inf count as the worst, +inf). Best-so-far, as Optuna's pruners rank the current trial by its
  best intermediate value, smooths the noise of a mini-batch metric such as train/loss.

Decisions are pure functions of the rows and the pack's configs (ties broken by pack position), so data-parallel
ranks, which see identical rows, agree.

Rules (`rule`):

* `median` — the median stopping rule (Golovin et al. 2017, "Google Vizier", §3.2.2; Ray Tune's
  MedianStoppingRule, Optuna's MedianPruner): at an evaluation step s ≥ `min_steps` (warm-up; auto ⌈steps/9⌉),
  s > 0, a configuration still training whose value is strictly worse than the median of the values of *every*
  configuration of its cohort (the stopped ones frozen at their last value, as Tune's rule keeps stopped trials
  in its median and Optuna compares with completed trials) is pruned. Keeping the stopped ones in the pool
  stops the ratchet that a median over the survivors would have (halving the cohort at every evaluation): in a
  synchronous cohort the rule cuts the worse half at the first evaluation past the warm-up, and later prunes
  only a configuration that falls behind the pool's median.
* `successive_halving` — synchronous successive halving (Jamieson & Talwalkar 2016, "Non-stochastic best arm
  identification and hyperparameter optimization"; Li et al. 2018, "Hyperband"; the rungs of ASHA, Li et al.
  2020, Ray Tune's ASHAScheduler, Optuna's SuccessiveHalvingPruner): rungs at r·eta^k steps (k = 0, 1, ...
  while below train.steps; r = `min_steps`, auto ⌈steps/eta²⌉: rungs r, r·eta, then the full budget). At the
  first evaluation at or past a rung, of the n configurations of a cohort still training, the best
  max(1, ⌊n/eta⌋) go on (Optuna's promotion rule) and the others are pruned; rungs passed between two
  evaluations cut in turn.

Both act only in a cohort of at least `min_configs` configurations (Tune's `min_samples_required`, Optuna's
`n_startup_trials`).

Limits. The worker sees one pack: the median is the cohort's in this pack, not a study's history (Optuna's own
MedianPruner compares with completed trials), and which members share a pack (execution.pack_size, memory cuts,
a resumed sweep's remainder) changes what is compared. Run_ids do not depend on the pruner: a pruned run is a
recorded run, which `ftsweep resume` does not train again (a new output directory does). `metric` must be a
metric of the task (every task's rows carry train/loss after step 0); a name the first evaluation does not carry
fails the trial with a line naming the valid ones (a task declares its metrics only by computing them, so
validation cannot check the name).
"""
from __future__ import annotations

import math
import statistics

from sweeps.probe import Probe

RULES = ("median", "successive_halving")
LATE_METRICS = ("train/loss",)          # added by ftcore.fit from step 1 on: absent from step 0's rows


def make_pruner(payload: dict | None, pack: list[Probe]):
    """fit's `on_eval` for `pack`, or None (no pruning)."""
    if not payload:
        return None
    if payload.get("rule") not in RULES:
        raise ValueError(f"search.pruner: unknown pruner payload {payload!r}")
    return PackPruner(payload, pack)


def configuration_key(probe: Probe) -> str:
    """The member's configuration: its flat config without the seed (seeds of one configuration share it)."""
    return repr(sorted((k, repr(v)) for k, v in probe.member.flat().items() if k != "seed"))


def cohort_key(probe: Probe, by: list[str]) -> str:
    """The values of the `by` columns (a probe's meta first, e.g. `group`, then its config's dotted columns)."""
    flat = probe.member.flat() if any(k not in probe.meta for k in by) else {}
    return repr([repr(probe.meta[k] if k in probe.meta else flat.get(k)) for k in by])


def auto_min_steps(rule: str, steps: int, eta: int) -> int:
    """`prune_min_steps: 0`: the median rule's warm-up ⌈steps/9⌉; successive halving's first rung ⌈steps/eta²⌉."""
    return max(1, math.ceil(steps / (9 if rule == "median" else eta * eta)))


def rungs(min_steps: int, eta: int, steps: int) -> list[int]:
    """Successive halving's rungs: min_steps · eta^k below `steps` (k = 0, 1, ...)."""
    out, r = [], min_steps
    while 0 < r < steps:
        out.append(r)
        r *= eta
    return out


class PackPruner:
    """fit's `on_eval(step, rows)` for one pack: the members (indices into the pack) to prune at `step`.

    Members -> configurations (same config but the seed) -> cohorts (configurations agreeing on `by`), each
    list in pack order, which breaks ties."""

    def __init__(self, payload: dict, pack: list[Probe]):
        self.rule, self.metric = payload["rule"], payload["metric"]
        self.sign = -1.0 if payload.get("mode", "min") == "max" else 1.0
        self.eta, self.min_configs = int(payload.get("eta", 3)), int(payload.get("min_configs", 3))
        self.steps = pack[0].member.train.steps if pack else 0
        self.min_steps = int(payload.get("min_steps") or 0) or auto_min_steps(self.rule, self.steps, self.eta)
        self.task = pack[0].member.task.name if pack else ""
        keys = [configuration_key(p) for p in pack]
        order = list(dict.fromkeys(keys))
        self.config_of = [order.index(k) for k in keys]          # member index -> configuration index
        self.members = [[e for e, c in enumerate(self.config_of) if c == i] for i in range(len(order))]
        by = list(payload.get("by") or [])
        first = [pack[m[0]] for m in self.members]               # a configuration's first member stands for it
        cohort_keys = [cohort_key(p, by) for p in first]
        self.cohorts = [[c for c, k in enumerate(cohort_keys) if k == key] for key in dict.fromkeys(cohort_keys)]
        self.best = [math.nan] * len(pack)                       # member -> best score so far (NaN: none yet)
        self.rungs = rungs(self.min_steps, self.eta, self.steps)
        self.last_step = -1
        self.pruned: set[int] = set()                            # configurations this pruner stopped

    def __call__(self, step: int, rows: dict[int, dict]) -> list[int]:
        for e, row in rows.items():
            self.best[e] = min_score(self.best[e], self.score(step, row))
        passed = [r for r in self.rungs if self.last_step < r <= step]
        self.last_step = step
        if step <= 0 or step < self.min_steps:
            return []
        training = {self.config_of[e] for e in rows} - self.pruned
        out = []
        for cohort in self.cohorts:
            if len(cohort) < self.min_configs:
                continue
            live = [c for c in cohort if c in training]
            out += self.median_rule(cohort, live) if self.rule == "median" else self.halving_rule(live, len(passed))
        self.pruned |= set(out)
        return sorted(e for c in out for e in self.members[c])

    def score(self, step: int, row: dict) -> float:
        """The row's `metric`, signed so that lower is better; +inf when non-finite. ValueError when absent."""
        if self.metric not in row:
            if step == 0 and self.metric in LATE_METRICS:
                return math.nan
            valid = ", ".join(sorted(k for k in row if k != "step"))
            raise ValueError(f"search.prune_metric: {self.metric!r} is not a metric of task {self.task!r}; "
                             f"valid: {valid}")
        try:
            value = self.sign * float(row[self.metric])
        except (TypeError, ValueError):
            return math.inf
        return value if math.isfinite(value) else math.inf

    def value(self, c: int) -> float:
        """A configuration's value: the median over its seeds of their best scores (+inf before any)."""
        scores = [s if not math.isnan(s) else math.inf for s in (self.best[e] for e in self.members[c])]
        return statistics.median(scores)

    def median_rule(self, cohort: list[int], training: list[int]) -> list[int]:
        """Configurations in `training` strictly worse than the median over every configuration of the cohort."""
        median = statistics.median(self.value(c) for c in cohort)
        return [c for c in training if self.value(c) > median]

    def halving_rule(self, training: list[int], n_rungs: int) -> list[int]:
        """Successive halving at `n_rungs` rungs reached at once: keep the best max(1, ⌊n/eta⌋) each time."""
        kept = sorted(training, key=lambda c: (self.value(c), c))
        for _ in range(n_rungs):
            if len(kept) < self.min_configs:
                break
            kept = kept[:max(1, len(kept) // self.eta)]
        return sorted(set(training) - set(kept))


def min_score(best: float, score: float) -> float:
    """The better (lower) of two scores, NaN meaning none; a non-finite score (+inf: diverged) sticks."""
    if math.isnan(score):
        return best
    if math.isnan(best) or score == math.inf:
        return score
    return min(best, score)
