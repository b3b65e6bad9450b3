"""Run one Tune trial's packs inside a worker and write their records (no Ray in this module).

A trial payload is a list of packs, each a list of member payloads {"config": nested member config,
"meta": {group, round, ...}, "tb": TensorBoard run name}, typed once at the trial's entry (`Probe.from_payload`).
Each pack is trained by `ftcore.fit`; every member gets its row in `runs/`, its curve in `curves/` (one Parquet
part per trial, written atomically by the sink, so a retried trial replaces its own part) and its TensorBoard run,
written live at every evaluation (sweeps.tensorboard). The rows are returned for the searcher.
"""
from __future__ import annotations

import math
import os
import platform
import time

import torch

import ftcore
from ftcore import checkpoint
from ftcore.footprint import max_members
from ftkernels.dispatch import impl_for, take_ops
from sweeps.plan import member_cost
from sweeps.probe import Probe
from sweeps.pruners import make_pruner
from sweeps.sink import SCHEMA_VERSION, ResultSink
from sweeps.storage import Location, join
from sweeps.tensorboard import LiveRun

HPARAM_SECTIONS = ("model", "adapter", "task", "train")     # a member's config columns in TensorBoard


def _versions() -> dict:
    try:
        import ray
        ray_version = ray.__version__
    except ImportError:
        ray_version = ""
    return {"ftcore_version": ftcore.__version__, "torch_version": torch.__version__, "ray_version": ray_version}


def _clean(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def record_head(probe: Probe, sweep_meta: dict, trial_id: str) -> dict:
    """The columns every runs row starts with (DESIGN.md §4): id, sweep/search meta, probe meta, config."""
    m = probe.member
    return {"run_id": m.run_id(), **sweep_meta, "trial_id": trial_id, **probe.meta, **m.flat(),
            "schema_version": SCHEMA_VERSION}


def progress_every_s() -> float:
    """FTCORE_PROGRESS_S: seconds between in-trial progress reports (default 30); ValueError if malformed."""
    text = os.environ.get("FTCORE_PROGRESS_S", "30")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"FTCORE_PROGRESS_S: must be a number of seconds >= 0 (got {text!r})")
    return value


def throttled(progress, where: dict, steps: int, every_s: float | None = None):
    """fit's report(step, info) -> progress({**where, step, steps, active, of}) at most every `every_s` s."""
    if progress is None:
        return None
    every_s = progress_every_s() if every_s is None else every_s
    last = [time.monotonic()]

    def report(step: int, info: dict) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s and 0 < step < steps:
            last[0] = now
            progress({**where, "step": step, "steps": steps, "active": info["active"], "of": info["of"], "n_runs": 0})
    return report


def run_pack(pack: list[Probe], sweep_meta: dict, trial_id: str, device: str = "cpu",
             report=None, where: dict | None = None, dp=None, out_dir: str | None = None,
             on_eval=None, cuda_graphs: str = "off") -> tuple[list[dict], list[dict]]:
    """Train one pack (data-parallel over `dp`'s ranks if given: ftcore.distributed); its runs rows (`where`:
    columns naming the worker, e.g. the Ray node id) and curves. Members with `train.save: final` get their
    checkpoint written under `out_dir` (when given) and named in their row's `checkpoint`. `on_eval`: fit's
    evaluation hook (`eval_hook`); `cuda_graphs`: execution.cuda_graphs (ftcore/graphs.py)."""
    members = [p.member for p in pack]
    t0 = time.perf_counter()
    results = ftcore.fit(members, report=report, device=device, dp=dp, on_eval=on_eval, cuda_graphs=cuda_graphs)
    wall = time.perf_counter() - t0
    env = {"kernels_impl": impl_for(device), "kernels_ops": take_ops(), "device": device, "node": platform.node(),
           **(where or {}), **_versions()}
    runs, curves = [], []
    for p, m, r in zip(pack, members, results):
        ckpt = write_checkpoint(out_dir, m, r.state) if out_dir is not None and r.state is not None else None
        runs.append({**record_head(p, sweep_meta, trial_id), **{k: _clean(v) for k, v in r.metrics.items()},
                     "status": r.status, "steps": r.steps, "n_trainable": r.n_trainable, "checkpoint": ckpt,
                     "wall_s": wall / len(members), "pack_size": len(members), **env})
        curves += [{"run_id": r.run_id, **{k: _clean(v) for k, v in row.items()}} for row in r.curve]
    return runs, curves


def write_checkpoint(out_dir: str, member, state: dict) -> str:
    """DIR/checkpoints/<run_id>.safetensors, atomically (temp + rename locally, one upload on object stores),
    before the trial's runs part commits it; -> its path relative to DIR (the row's `checkpoint`)."""
    rel = checkpoint.relative_path(member.run_id())
    folder = Location.of(out_dir).child("checkpoints")
    folder.mkdir()
    folder.child(rel.split("/", 1)[1]).write_bytes_atomic(checkpoint.to_bytes(member, state))
    return rel


def split_for_memory(pack: list[Probe], budget_bytes: float | None) -> list[list[Probe]]:
    """Cut a pack into packs whose padded footprint (E × the largest member's bytes) fits the budget."""
    if not budget_bytes:
        return [pack]
    members = [p.member for p in pack]
    largest = max(range(len(pack)), key=lambda i: member_cost(members[i]))
    cap = max_members(members[largest], budget_bytes)
    return [pack[i:i + cap] for i in range(0, len(pack), cap)]


_SINKS: dict[str, ResultSink] = {}


def sink_for(out_dir: str) -> ResultSink:
    """One sink per output location per worker process: a reused Tune actor keeps the sink's run_id cache from
    trial to trial, so a commit reads only the parts written since its last one (a fresh sink per trial read
    every runs part: quadratic in the number of trials)."""
    if out_dir not in _SINKS:
        _SINKS[out_dir] = ResultSink(out_dir)
    return _SINKS[out_dir]


def eval_hook(pack: list[Probe], pruner: dict | None, live: list[LiveRun] | None = None):
    """fit's `on_eval` for one pack: each evaluated member's row appended to its live TensorBoard run (`live`,
    in pack order; None: nothing written), then the search's pruner (sweeps.pruners) asked; its answer is the
    hook's. None when nothing listens."""
    prune = make_pruner(pruner, pack)
    if not live:
        return prune

    def on_eval(step: int, rows: dict[int, dict]):
        for e, row in rows.items():
            live[e].add(row)
        return prune(step, rows) if prune is not None else None
    return on_eval


def execute_trial(packs: list[list[dict]], out_dir: str, trial_id: str, sweep_meta: dict,
                  device: str = "cpu", budget_bytes: float | None = None, progress=None,
                  where: dict | None = None, dp=None, pruner: dict | None = None,
                  cuda_graphs: str = "off") -> list[dict]:
    """Train a trial's packs one after another on `device`, each cut to fit `budget_bytes`; write the records.
    `progress(dict)`, if given, hears where a long pack is (throttled: `throttled`); `where` is added to
    every runs row. With `dp` (data parallel, ftcore.distributed) every rank trains every pack (the same cut:
    same budget) and only rank 0 writes. `pruner`: the search's pruner payload (SearchConfig.pruner_payload).
    `cuda_graphs`: execution.cuda_graphs, passed to fit."""
    runs, curves = [], []
    writer = dp is None or dp.rank == 0
    typed = [[Probe.from_payload(p) for p in pack] for pack in packs]      # the one parse on this side
    names = tensorboard_names(packs, typed)
    parts = [part for pack in typed for part in split_for_memory(pack, budget_bytes)]
    for i, pack in enumerate(parts):
        steps = pack[0].member.train.steps
        report = throttled(progress, {"pack": i + 1, "packs": len(parts)}, steps)
        live = live_runs(join(out_dir, "tb"), pack, names) if writer else None
        try:
            r, c = run_pack(pack, sweep_meta, trial_id, device, report, where, dp, out_dir if writer else None,
                            eval_hook(pack, pruner, live), cuda_graphs)
        except BaseException:
            for run in live or ():
                run.abort()                         # no session end: the trial's retry starts these runs anew
            raise
        runs += r
        curves += c
        if live:
            write_tensorboard(live, r)
    if writer:
        sink_for(out_dir).write_trial(trial_id, runs, curves)     # part <trial>.<driver token>: sweeps.part_names
    return runs


def tensorboard_names(packs: list[list[dict]], typed: list[list[Probe]]) -> dict[str, str]:
    """run_id -> TensorBoard run name: the driver's (payload key "tb", sweeps.tensorboard.RunNames), else the
    run_id (a payload built without a driver)."""
    return {t.member.run_id(): p.get("tb") or t.member.run_id()
            for pack, tpack in zip(packs, typed) for p, t in zip(pack, tpack)}


def live_runs(tb_root: str, pack: list[Probe], names: dict[str, str]) -> list[LiveRun]:
    """One live TensorBoard run per member of `pack` (sweeps.tensorboard.LiveRun): hparams are the member's
    config columns, its seed and its run_id; the seeds of one configuration share a session group (the run
    name without its seed component; the probe's grid point for a name without one)."""
    runs = []
    for p in pack:
        run_id = p.member.run_id()
        name = names.get(run_id, run_id)
        hparams = {k: v for k, v in p.member.flat().items() if k.split(".")[0] in HPARAM_SECTIONS or k == "seed"}
        group = name.rsplit("/", 1)[0] if "/" in name else p.meta.get("group", "")
        runs.append(LiveRun(tb_root, name, {**hparams, "run_id": run_id}, group=group))
    return runs


def write_tensorboard(live: list[LiveRun], rows: list[dict]) -> None:
    """End each member's run with its row's final metrics (slash-named numbers) and status."""
    for run, row in zip(live, rows):
        run.close({k: v for k, v in row.items() if "/" in k and isinstance(v, (int, float))}, row["status"])


def failed_rows(packs: list[list[Probe]], sweep_meta: dict, trial_id: str, reason: str) -> list[dict]:
    """Rows for members of a trial that failed after all retries: status `failed`, no metrics."""
    return [{**record_head(p, sweep_meta, trial_id),
             "status": "failed", "error": reason[:500]} for pack in packs for p in pack]
