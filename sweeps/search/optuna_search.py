"""Optuna for continuous hyper-parameters, one study per group, asked in batches (ask/tell).

For each grid point matching `search.only` (e.g. the gradient solver at one rank), a seeded TPE study
proposes `train.lr` / `train.weight_decay`; each proposal runs on every seed, and the study is told the
median over seeds of `search.metric` (non-finite or failed runs: the trial is told FAIL). This is the
paper's per-rank (lr, wd) selection on validation loss (papers.md §2(b)), with TPE instead of a grid.
Studies persist in a journal file next to the results (`DIR/optuna/journal.log`; safe for parallel
writers, readable by optuna-dashboard). Points not matching `only` run once with the spec's values.
Proposals are per-member tensors in a pack, so a whole batch of proposals × seeds is one pack.
"""
from __future__ import annotations

import math
import statistics
import zlib
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from sweeps.search.base import RoundSearch
from sweeps.spec import SweepSpec, group_label


class OptunaDriver(RoundSearch):
    same_first_round = False         # see RoundSearch
    def __init__(self, spec: SweepSpec, out_dir):
        super().__init__(spec, out_dir)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = spec.search
        path = Path(out_dir) / "optuna" / "journal.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.storage = JournalStorage(JournalFileBackend(str(path)))
        self.points = {group_label(p): p for p in spec.grid_points()}
        self.tuned = [g for g, p in self.points.items() if all(str(p.get(k, self._base(k))) == str(v) for k, v in s.only.items())]
        self.untuned = [g for g in self.points if g not in self.tuned]
        self.studies = {g: optuna.create_study(
            study_name=f"{spec.name}:{g}", storage=self.storage, load_if_exists=True,
            direction="minimize" if s.mode == "min" else "maximize") for g in self.tuned}
        self.open: set[tuple[str, int]] = set()     # (group, optuna trial number) asked, not yet told

    def _sampler(self, g: str, number: int) -> optuna.samplers.BaseSampler:
        """TPE seeded by (group, trial number): a proposal depends only on the study's told trials, so a
        resumed sweep (`ftsweep resume`, studies reloaded from the journal) asks what an undisturbed one
        would have asked. Modelling starts after the first batch."""
        s = self.spec.search
        seed = s.sampler_seed + zlib.crc32(g.encode()) % 10_000 + 100_003 * number
        return optuna.samplers.TPESampler(seed=seed % 2**32, n_startup_trials=s.batch)

    def _reissued(self, g: str) -> list[optuna.trial.FrozenTrial]:
        """Trials of the journal asked but never told (the driver died mid-round): run them again."""
        return [t for t in self.studies[g].trials if t.state == TrialState.RUNNING and (g, t.number) not in self.open]

    def _base(self, key: str):
        section, _, fld = key.partition(".")
        return getattr(self.spec, section, {}).get(fld)

    def _asked(self, g: str) -> int:
        return len(self.studies[g].trials)

    def next_round(self):
        s = self.spec.search
        probes = []
        self.round += 1
        if self.round == 1:
            for g in self.untuned:
                probes += self.probes(self.points[g], g)
        for g in self.tuned:
            study, asked = self.studies[g], []
            reissued = self._reissued(g)
            for t in reissued:
                asked.append((t.number, {k: t.params[k] for k in s.params}))
            for _ in range(min(s.batch - len(reissued), s.n_trials - self._asked(g))):
                study.sampler = self._sampler(g, len(study.trials))
                trial = study.ask()
                asked.append((trial.number, {k: trial.suggest_float(k, r.low, r.high, log=r.log) for k, r in s.params.items()}))
            for number, params in asked:
                self.open.add((g, number))
                probes += self.probes({**self.points[g], **params}, g, {"optuna.trial": number})
        if not probes:
            self.round -= 1
            return None
        return probes

    def record(self, rows):
        super().record(rows)
        metric = self.spec.search.metric
        scores: dict[tuple[str, int], list[float]] = {}
        for r in rows:
            if "optuna.trial" in r and r.get("optuna.trial") is not None:
                v = r.get(metric)
                ok = r.get("status") == "ok" and v is not None and math.isfinite(v)
                scores.setdefault((r["group"], int(r["optuna.trial"])), []).append(v if ok else math.nan)
        for key, vals in scores.items():
            self.open.discard(key)
            if any(math.isnan(v) for v in vals):
                self.studies[key[0]].tell(key[1], state=TrialState.FAIL)
            else:
                self.studies[key[0]].tell(key[1], statistics.median(vals))

    def counts(self):
        return {**super().counts(), "studies": len(self.studies),
                "optuna_trials": sum(len(st.trials) for st in self.studies.values())}
