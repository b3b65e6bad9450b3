"""The sweep spec's schema: the dataclasses a YAML sweep is typed into (sweeps/spec.py loads, merges and validates).

The member sections (model, adapter, task, train) stay mappings here: each member's are typed once, by
`ftcore.config.member_from_dict`, when a grid point becomes a member (sweeps/grid.py). `search` and `report` are the
`Config` of their kind's registry entry (sweeps.search.SEARCHES, analysis.report_kinds.REPORTS).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from analysis.report_kinds import ReportConfig
from sweeps.search.config import SearchConfig

SECTIONS = ("model", "adapter", "task", "train")     # the member sections: typed per member, not here


@dataclass
class ExecutionSpec:
    pack_size: int = 0            # most members in one Tune trial; 0 = auto (memory and slots, sweeps/pack_size.py)
    max_waste: float = 1.5        # padded cost / real cost allowed when sharing a pack
    pack_overhead: float = 65536  # fixed per-step cost of a pack, in rows × capacity units (sweeps/plan.py)
    cpus_per_trial: int = 1       # CPUs per trial (torch threads)
    gpus_per_trial: float = 0.0   # > 0: members train on CUDA; fractions share a GPU between trials
    worker: str = "tune"          # tune: packs run in the (reused) Tune trial actor;
    #                               train: each trial launches a Ray Train worker
    workers_per_trial: int = 1    # worker: train only: Ray Train workers per trial, each its rows of every batch (data parallel)
    memory_fraction: float = 0.5  # share of a node's memory (GPU memory when on GPU) the packs of all slots may use
    max_failures: int = 2         # Tune retries of a failed trial
    cuda_graphs: str = "off"      # auto: capture an eligible pack's step in a CUDA graph on a GPU (ftcore/graphs.py)


@dataclass
class SweepSpec:
    name: str
    model: dict[str, Any] = field(default_factory=lambda: {"name": "mlp"})
    adapter: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, Any] = field(default_factory=dict)    # key -> list of values, or "LO..HI" (ints or dotted refs);
    # a bare section name ("model") is a section-valued axis: a list of mappings, each merged over that section
    seeds: int = 3
    search: SearchConfig = field(default_factory=SearchConfig)     # typed by its kind's Config (`_typed_spec`)
    report: ReportConfig = field(default_factory=ReportConfig)
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)
    # named override sets: `ftsweep run X.yaml variant=gpu` applies variants["gpu"] ({dotted key: value}) before the
    # command line's own overrides (which still win) — the paper-sized run of a CPU-sized sweep in one override
    variants: dict[str, Any] = field(default_factory=dict)
    variant: str = ""

    # -- expansion ---------------------------------------------------------------------------------
    def base_dict(self) -> dict:
        """The four member sections as fresh top-level dicts (values shared: typing copies them)."""
        return {s: dict(getattr(self, s)) for s in SECTIONS}

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the axes, as {dotted key: value}, in axes order."""
        keys = list(self.axes)
        return [dict(zip(keys, vals)) for vals in itertools.product(*(self.axes[k] for k in keys))]

    def member_dict(self, point: dict[str, Any], seed: int) -> dict:
        """The base sections with the point applied: section-valued axes first (their mapping's keys replace
        the section's), then dotted axes (so `model.n_layer` varies inside every choice of `model`).
        Untyped: `sweeps.grid.build_member` types it (the one typed boundary)."""
        d = self.base_dict()
        for key, value in sorted(point.items(), key=lambda kv: "." in kv[0]):
            if "." in key:
                section, fld = key.split(".", 1)
                d[section][fld] = value
            else:
                d[key].update(value)
        d["seed"] = seed
        return d

    def seed_list(self) -> list[int]:
        return list(range(self.seeds))
