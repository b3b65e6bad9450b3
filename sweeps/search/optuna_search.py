"""Optuna searches as Optuna users know them: one study per group, asked in batches (ask/tell).

For each grid point matching `search.only` (e.g. the gradient solver at one rank), a seeded study proposes values of
`search.params` — floats, ints and categoricals over config columns (`train.lr`, `adapter.rank`, `adapter.width`,
`train.schedule`, ...); each proposal runs on every seed, and the study is told, per objective, the median over
seeds of its metric. One objective is `metric` + `mode`; several are `metrics` + `directions` (e.g. val/mse and
n_trainable, both min), a multi-objective study whose Pareto front the report draws (analysis/pareto_report.py).
This is the paper's per-rank (lr, wd) selection on validation loss (papers.md §2(b)), with TPE instead of a grid.
Groups run independently, with no barrier between them: a group's next batch is asked as soon as every proposal
of its previous batch is told (a proposal is told once all its seeds' rows are in, whichever trials ran them);
untuned groups run once, in the first wave.

Samplers (`search.sampler`), each seeded by (group, trial number), so a resumed sweep (studies reloaded from the
journal) asks what an undisturbed one would have asked; the first `batch` proposals are random (n_startup_trials):

    tpe     TPESampler(constant_liar=True): a batch is asked before any of it is told, and each proposal sees the
            batch's earlier ones as RUNNING trials scored worst, so a batch spreads out (single and multi-objective)
    gp      GPSampler: running trials enter its acquisition (qEI, or qEHVI for several objectives): a batch rule
            of its own, no liar needed (optuna >= 4.9; several objectives need >= 4.4)
    random  RandomSampler: proposals are independent; there is nothing to lie about
    cmaes   CmaEsSampler (needs the `cmaes` package; one objective; categoricals drawn at random): a batch is part
            of a generation, drawn from one search distribution, which needs no liar either

Packing: a proposal's values go into its members' configs. Per-member fields (`per_member` in ftcore: train.lr,
train.weight_decay, a LoRA's adapter.rank, an additive ReLU's adapter.width) let a batch of proposals × seeds share
a pack (ranks and widths through the pack's padding masks, DESIGN.md §3). A field that is not per-member (say
train.schedule or model.depth) is searched as well: proposals that differ in it train in separate packs, since the
planner packs only members with the same `MemberConfig.pack_key` (sweeps/plan.py).

Telling a proposal: every seed ok with finite metrics -> COMPLETE with the medians; a seed failed, diverged or with
a non-finite metric -> FAIL; otherwise a pruned seed (`status: pruned`) -> PRUNED, a single objective's median as
last evaluated reported first at the earliest pruned step (Optuna's trial.report, then TrialPruned). A proposal whose
config is invalid (rank > width when both are searched) is told FAIL at once (user attr `invalid`) and counts
against `n_trials`; validation has built every grid point at each parameter's ends and choices before any run.

Studies persist in a journal file next to the results (`DIR/optuna/journal.log`; safe for parallel writers,
readable by `optuna-dashboard DIR/optuna/journal.log`). Points not matching `only` run once with the spec's values.
"""
from __future__ import annotations

import importlib.util
import json
import math
import statistics
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from ftcore.fields import check
from sweeps.grid import group_label
from sweeps.schema import SECTIONS
from sweeps.search.base import SEARCHES, RoundSearch, SearchConfig
from sweeps.spec_checks import SpecError, fail

PARAM_TYPES = ("float", "int", "categorical")
DIRECTIONS = {"min": "minimize", "max": "maximize"}
ALIASES = {"minimize": "min", "maximize": "max"}         # Optuna's own words, stored as min/max


BATCH = "ftcore.batch"      # a trial's user attr: the group's batch index it was asked in (the `round` column)


def _batch_of(trial) -> int:
    """The batch index trial was asked in (0: asked before the index was stored)."""
    return int(trial.user_attrs.get(BATCH, 0))


def _sampler_tpe(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, constant_liar=True)


def _sampler_gp(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup)


def _sampler_random(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _sampler_cmaes(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=n_startup, warn_independent_sampling=False)


SAMPLERS = {"tpe": _sampler_tpe, "gp": _sampler_gp, "random": _sampler_random, "cmaes": _sampler_cmaes}
SINGLE_OBJECTIVE = ("cmaes",)                      # Optuna's CmaEsSampler raises on a multi-objective study
NEEDS_PACKAGE = {"cmaes": "cmaes"}                 # sampler -> the package it imports (not installed with optuna)


@dataclass
class Param:
    """One searched config column, an Optuna distribution written in YAML:

        train.lr:       {low: 1.0e-4, high: 3.0e-2, log: true}         # float: the type when omitted
        adapter.rank:   {type: int, low: 1, high: 8}                   # step 1 unless given
        train.schedule: {type: categorical, choices: [constant, cosine]}

    `log` defaults to true for a float (the older `{low, high, log}` schema's default) and false for an int."""
    type: str = "float"
    low: float | None = None
    high: float | None = None
    log: bool | None = None
    step: float | None = None            # a grid low, low + step, ..., high (float: not with log; int: 1 if omitted)
    choices: list[Any] = field(default_factory=list)

    def check(self, name: str) -> None:
        """One-line ValueError naming `name` (search.params.<column>) when this is no Optuna distribution; fills in
        the type's defaults (log; an int's ends as ints)."""
        check(self.type in PARAM_TYPES, f"{name}.type", f"one of {', '.join(PARAM_TYPES)}", self.type)
        if self.type == "categorical":
            for k in ("low", "high", "log", "step"):
                check(getattr(self, k) is None, f"{name}.{k}", "unset for type categorical (it takes choices)",
                      getattr(self, k))
            check(bool(self.choices), f"{name}.choices", "a non-empty list for type categorical", self.choices)
            check(all(c is None or isinstance(c, (bool, int, float, str)) for c in self.choices), f"{name}.choices",
                  "scalars (numbers, strings, booleans or null)", self.choices)
            canon = [json.dumps(c) for c in self.choices]
            check(len(set(canon)) == len(canon), f"{name}.choices", "distinct values", self.choices)
            return
        check(not self.choices, f"{name}.choices", f"empty for type {self.type} (choices are for categorical)",
              self.choices)
        check(self.low is not None and self.high is not None, name, f"{{low, high}} for type {self.type}",
              {"low": self.low, "high": self.high})
        check(self.low < self.high, name, "low < high", (self.low, self.high))
        if self.type == "int":
            self._check_int(name)
        else:
            self.log = True if self.log is None else self.log
            check(not (self.log and self.step is not None), f"{name}.step", "unset when log is true", self.step)
        check(not self.log or self.low > 0, name, "low > 0 when log", (self.low, self.high))
        if self.step is not None:
            check(self.step > 0, f"{name}.step", "> 0", self.step)
            n = (self.high - self.low) / self.step
            check(math.isclose(n, round(n), abs_tol=1e-9), name, "high - low a multiple of step",
                  (self.low, self.high, self.step))

    def _check_int(self, name: str) -> None:
        for k in ("low", "high", "step"):
            v = getattr(self, k)
            check(v is None or float(v).is_integer(), f"{name}.{k}", "an integer for type int", v)
        self.low, self.high = int(self.low), int(self.high)
        self.step = 1 if self.step is None else int(self.step)
        self.log = False if self.log is None else self.log
        check(not self.log or self.step == 1, f"{name}.step", "1 when log is true (Optuna's rule)", self.step)

    def distribution(self) -> BaseDistribution:
        if self.type == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step))
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def corner(self, i: int):
        """The i-th value validation builds: a categorical's choices in turn; low, high, low, ... otherwise."""
        if self.type == "categorical":
            return self.choices[i % len(self.choices)]
        return self.low if i % 2 == 0 else self.high


def _check_name(name: str) -> None:
    """A searched parameter is a dotted field of a member section, and not one that picks the config's fields (a
    registry name) or its base (model.from): those are grid choices."""
    section, _, fld = name.partition(".")
    check(section in SECTIONS and bool(fld), f"search.params.{name}",
          f"named by a dotted field of {', '.join(SECTIONS)} (e.g. train.lr, adapter.rank)", name)
    check(fld != "name" and section + "." + fld.split(".")[0] != "model.from", f"search.params.{name}",
          "a field other than a registry name or model.from (those pick which fields exist: make them a grid axis)",
          name)


def _optuna_at_least(major: int, minor: int) -> bool:
    return tuple(int(x) for x in optuna.__version__.split(".")[:2]) >= (major, minor)


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


@SEARCHES.register("optuna")
class OptunaDriver(RoundSearch):
    @dataclass
    class Config(SearchConfig):
        """Per group, a seeded study over `params`, scored by the median over seeds of `metric` (or of each of
        `metrics`, one direction each: a multi-objective study)."""
        kind: str = "optuna"
        params: dict[str, Param] = field(default_factory=dict)
        n_trials: int = 8
        batch: int = 4
        metric: str = "val/mse"
        mode: str = "min"
        metrics: list[str] = field(default_factory=list)      # several objectives; replace metric/mode when given
        directions: list[str] = field(default_factory=list)   # min | max, one per metric
        sampler: str = "tpe"
        sampler_seed: int = 0
        only: dict[str, Any] = field(default_factory=dict)   # tune only groups matching these values

        def __post_init__(self):
            super().__post_init__()                   # the pruner fields (SearchConfig)
            check(bool(self.params), "search.params", "at least one parameter (search.kind=optuna)", self.params)
            for name, p in self.params.items():
                _check_name(name)
                p.check(f"search.params.{name}")
            check(self.n_trials >= 1, "search.n_trials", ">= 1", self.n_trials)
            check(self.batch >= 1, "search.batch", ">= 1", self.batch)
            check(self.mode in DIRECTIONS, "search.mode", "min or max", self.mode)
            self.directions = [ALIASES.get(d, d) for d in self.directions]
            for i, d in enumerate(self.directions):
                check(d in DIRECTIONS, f"search.directions[{i}]", "min or max", d)
            check(bool(self.metrics) or not self.directions, "search.metrics",
                  "one metric per entry of search.directions", self.metrics)
            check(len(self.directions) == len(self.metrics), "search.directions",
                  f"min or max for each of search.metrics ({len(self.metrics)})", self.directions)
            check(len(set(self.metrics)) == len(self.metrics), "search.metrics", "distinct metrics", self.metrics)
            check(self.sampler in SAMPLERS, "search.sampler", f"one of {', '.join(SAMPLERS)}", self.sampler)
            check(self.sampler not in SINGLE_OBJECTIVE or len(self.objectives()) == 1, "search.sampler",
                  f"tpe, gp or random with {len(self.metrics)} objectives ({self.sampler} has one)", self.sampler)
            check(self.sampler != "gp" or len(self.objectives()) == 1 or _optuna_at_least(4, 4), "search.sampler",
                  f"tpe or random with several objectives on optuna {optuna.__version__} (gp needs optuna >= 4.4)",
                  self.sampler)
            package = NEEDS_PACKAGE.get(self.sampler)
            if package and importlib.util.find_spec(package) is None:
                raise ValueError(f"search.sampler: {self.sampler} needs the '{package}' package, which is not "
                                 f"installed (pip install {package}, or use tpe, gp or random)")

        def objectives(self) -> list[tuple[str, str]]:
            """[(metric, min | max)]: `metrics` with `directions`, else the one `metric` with `mode`."""
            return list(zip(self.metrics, self.directions)) or [(self.metric, self.mode)]

        def check(self, spec, limits=True):
            super().check(spec, limits)
            for name in self.params:
                if name in spec.axes:
                    fail(f"search.params.{name}: is a grid axis too; a field is either swept (axes) or searched")

        def check_columns(self, columns):
            super().check_columns(columns)
            for name in self.params:
                if name not in columns:
                    fail(f"search.params.{name}: not a field of this sweep's configs; "
                         f"valid: {', '.join(sorted(columns))}")

        def extremes(self):
            """The spec's own point, then every parameter at its low end, its high end, and each choice in turn."""
            n = max([2] + [len(p.choices) for p in self.params.values()])
            return [{}] + [{k: p.corner(i) for k, p in self.params.items()} for i in range(n)]

        def runs_per_point(self):
            return self.n_trials

        def columns(self):
            """The base columns; a multi-objective search adds search.metrics, search.directions and search.params
            (comma-joined: analysis/pareto_report.py reads them), so single-objective rows keep their old schema."""
            cols = super().columns()
            if len(self.objectives()) > 1:
                cols.update({"search.metrics": ",".join(self.metrics), "search.directions": ",".join(self.directions),
                             "search.params": ",".join(self.params)})
            return cols

    same_first_round = False         # see RoundSearch

    def __init__(self, spec, out_dir):
        super().__init__(spec, out_dir)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = spec.search
        path = Path(out_dir) / "optuna" / "journal.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.storage = JournalStorage(JournalFileBackend(str(path)))
        self.space = {name: p.distribution() for name, p in s.params.items()}
        self.points = {group_label(p): p for p in spec.grid_points()}
        self.tuned = [g for g, p in self.points.items()
                      if all(str(p.get(k, self._base(k))) == str(v) for k, v in s.only.items())]
        self.untuned = [g for g in self.points if g not in self.tuned]
        directions = [DIRECTIONS[d] for _, d in s.objectives()]
        self.studies = {g: optuna.create_study(study_name=f"{spec.name}:{g}", storage=self.storage,
                                               load_if_exists=True, directions=directions) for g in self.tuned}
        self.open: set[tuple[str, int]] = set()     # (group, optuna trial number) asked, not yet told
        self.batches = {g: max(map(_batch_of, st.trials), default=0)     # group -> batches asked so far (its `round`
                        for g, st in self.studies.items()}           # meta), across resumes
        self.invalid = 0

    def _sampler(self, g: str, number: int) -> optuna.samplers.BaseSampler:
        """The spec's sampler seeded by (group, trial number): a proposal depends only on the study's told trials,
        so a resumed sweep asks what an undisturbed one would have asked. Modelling starts after the first batch."""
        s = self.spec.search
        seed = s.sampler_seed + zlib.crc32(g.encode()) % 10_000 + 100_003 * number
        return SAMPLERS[s.sampler](seed % 2**32, s.batch)

    def _reissued(self, g: str) -> list[optuna.trial.FrozenTrial]:
        """Trials of the journal asked but never told (the driver died with them in flight): run them again."""
        return [t for t in self.studies[g].trials if t.state == TrialState.RUNNING and (g, t.number) not in self.open]

    def _base(self, key: str):
        section, _, fld = key.partition(".")
        return getattr(self.spec, section, {}).get(fld)

    def _asked(self, g: str) -> int:
        return len(self.studies[g].trials)

    def _proposal(self, g: str, number: int, params: dict, index: int = 1) -> list | None:
        """The probes of one proposal (every seed); None, with the trial told FAIL, when its config is invalid."""
        try:
            return self.probes({**self.points[g], **params}, g, {"optuna.trial": number}, index)
        except SpecError as e:
            self.storage.set_trial_user_attr(self._trial_id(g, number), "invalid", str(e))
            self.studies[g].tell(number, state=TrialState.FAIL)
            self.invalid += 1
            return None

    def _trial_id(self, g: str, number: int) -> int:
        """The journal's id of trial `number` of group g's study (the storage API writes attrs and reports by id)."""
        study_id = self.storage.get_study_id_from_name(self.studies[g].study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def next_round(self):
        """One wave: the untuned groups' runs (first wave only), and the next batch of every tuned group whose
        previous batch is all told (a group's proposals asked, never told, by a driver that died come first).
        None when no group can ask now."""
        probes = []
        if self.round == 0:
            for g in self.untuned:
                probes += self.probes(self.points[g], g)
        busy = {g for g, _ in self.open}
        for g in self.tuned:
            if g not in busy:
                probes += self._batch(g)
        return self.hand_out(probes) if probes else None

    def _batch(self, g: str) -> list:
        """Group g's next batch: its reissued trials, then `batch` proposals in all (while the study has fewer
        than n_trials); each proposal's probes carry its trial number and the group's batch index as `round`."""
        s, study, asked = self.spec.search, self.studies[g], []
        reissued = self._reissued(g)
        died_in = max(map(_batch_of, reissued), default=0)
        index = died_in or self.batches.get(g, 0) + 1          # the batch a driver died in keeps its index
        for t in reissued:
            asked.append((t.number, self.probes({**self.points[g], **t.params}, g, {"optuna.trial": t.number},
                                                index)))
        while len(asked) < s.batch and self._asked(g) < s.n_trials:
            study.sampler = self._sampler(g, len(study.trials))
            trial = study.ask(self.space)
            trial.set_user_attr(BATCH, index)
            made = self._proposal(g, trial.number, trial.params, index)
            if made is not None:
                asked.append((trial.number, made))
        if asked:
            self.batches[g] = index
        for number, _ in asked:
            self.open.add((g, number))
        return [p for _, made in asked for p in made]

    def wait_key(self, meta):
        """A proposal (group, Optuna trial number) waits for its seeds' rows; untuned runs wait for nothing."""
        number = meta.get("optuna.trial")
        if number is None or (isinstance(number, float) and math.isnan(number)):
            return None
        return meta["group"], int(number)

    def complete(self, key, rows):
        g, number = key
        self.open.discard(key)
        self._tell(g, number, rows)

    def _tell(self, g: str, number: int, seeds: list[dict]) -> None:
        """COMPLETE with the median over seeds of each objective's metric, FAIL or PRUNED (module docstring)."""
        study, metrics = self.studies[g], [m for m, _ in self.spec.search.objectives()]
        statuses = [r.get("status") for r in seeds]
        if any(st not in ("ok", "pruned") or (st == "ok" and not all(_finite(r.get(m)) for m in metrics))
               for st, r in zip(statuses, seeds)):
            study.tell(number, state=TrialState.FAIL)
        elif "pruned" in statuses:
            self._report_pruned(g, number, seeds, metrics)
            study.tell(number, state=TrialState.PRUNED)
        else:
            study.tell(number, [statistics.median(float(r[m]) for r in seeds) for m in metrics])

    def _report_pruned(self, g: str, number: int, seeds: list[dict], metrics: list[str]) -> None:
        """A single objective's median over seeds as last evaluated, at the earliest step a seed was pruned: the
        intermediate value TPE ranks a pruned trial by (Optuna reports none for several objectives)."""
        values = [float(r[metrics[0]]) for r in seeds if _finite(r.get(metrics[0]))]
        steps = [int(r["steps"]) for r in seeds if r.get("status") == "pruned" and _finite(r.get("steps"))]
        if len(metrics) == 1 and values and steps:
            self.storage.set_trial_intermediate_value(self._trial_id(g, number), min(steps), statistics.median(values))

    def counts(self):
        return {**super().counts(), "studies": len(self.studies), "invalid_proposals": self.invalid,
                "optuna_trials": sum(len(st.trials) for st in self.studies.values())}
