"""The Ray layer of one trial: a Tune function trainable that trains the trial's packs.

Two workers (`execution.worker`):

* `tune` (default): the packs run inside the Tune trial's own actor, which holds the trial's CPUs/GPU
  (`tune.with_resources(pack_trial, {"CPU": c, "GPU": g})`). With `reuse_actors=True` Tune keeps the actor
  (torch imported, threads set) from one trial to the next: measured on 2 CPUs, a trial costs ~0.1 s of
  Ray time instead of 9–13 s for launching a `TorchTrainer` (DESIGN.md §6). Members of a pack are
  independent runs — no gradient all-reduce — so Ray Train's worker group buys nothing per trial.
* `train`: the Tune trial is a light driver (`{"CPU": DRIVER_CPU}`) that launches a Ray Train
  `TorchTrainer` with `execution.workers_per_trial` workers running `pack_worker`; rank 0's
  `ray.train.report` reaches Tune through `TuneReportCallback` (the Train V2 + Tune pattern, Ray ≥ 2.43).
  For clusters where trials should get Train's worker placement and failure handling; not the deprecated
  `Tuner(trainer)`. With N > 1 workers a pack trains data-parallel (ftcore.distributed over the process
  group Train initialises: gloo on CPU, NCCL on GPU): every worker holds the pack, takes its rows of every
  member's batch and all-reduces the trainable gradients; only rank 0 writes records and reports rows.

Either way a trial's result is one report with all its member rows (not per member-step: DESIGN.md §6);
before it, a long pack sends a small progress report (step, active members) at most every
FTCORE_PROGRESS_S seconds (30), which the driver prints.

Tests reach the failure paths through FTCORE_FAULT (sweeps/faults.py): the trial's process can be made to die
before it trains, or after its rows are committed and before they are reported.
"""
from __future__ import annotations

import json

import ray
import ray.train
import ray.tune

from sweeps.faults import inject

DRIVER_CPU = 0.01


def _train_packs(config: dict, trial_id: str, progress=None, dp=None) -> dict:
    import torch

    from sweeps.execute import execute_trial
    torch.set_num_threads(int(config["threads"]))
    gpus = float(config.get("gpus", 0))
    device, budget = ("cuda", None) if gpus > 0 else ("cpu", config.get("budget_bytes"))
    if device == "cuda":   # this trial's share of its GPU's memory
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        budget = config["memory_fraction"] * min(gpus, 1.0) * total
    where = {"ray_node_id": ray.get_runtime_context().get_node_id()}
    inject("start", config["packs"], trial_id)            # FTCORE_FAULT (tests only): sweeps/faults.py
    rows = execute_trial(config["packs"], config["out"], trial_id, config["sweep_meta"], device=device,
                         budget_bytes=budget, progress=progress, where=where, dp=dp, pruner=config.get("pruner"),
                         cuda_graphs=config.get("cuda_graphs", "off"))
    inject("committed", config["packs"], trial_id)        # the rows are on disk, not yet reported
    return {"rows": json.dumps(rows, default=str), "n_runs": len(rows)}


def pack_trial(config: dict) -> None:
    """`execution.worker: tune` — the Tune trial trains its packs itself."""
    ray.tune.report(_train_packs(config, ray.tune.get_context().get_trial_id(), ray.tune.report))


def pack_worker(config: dict) -> None:
    """`execution.worker: train` — runs inside each Ray Train worker process. `ray.train.report` is a barrier
    that every rank must reach equally often and keeps rank 0's metrics only: with several workers there are
    no in-trial progress reports (their throttle is per-process time), and the other ranks report a stub."""
    if ray.train.get_context().get_world_size() == 1:
        ray.train.report(_train_packs(config, config["trial_id"], ray.train.report))
        return
    from ftcore.distributed import DataParallel
    dp = DataParallel()
    result = _train_packs(config, config["trial_id"], None, dp)
    ray.train.report(result if dp.rank == 0 else {"n_runs": 0, "rank": dp.rank})


def pack_driver(config: dict) -> None:
    """`execution.worker: train` — the Tune trial: launch one Ray Train run of `workers` workers (each with the
    trial's CPUs/GPU share) for this trial's packs."""
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    cpus, gpus = float(config["cpus"]), float(config.get("gpus", 0))
    resources = {"CPU": cpus - DRIVER_CPU, **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        pack_worker,
        train_loop_config={**config, "trial_id": trial_id},
        scaling_config=ray.train.ScalingConfig(num_workers=int(config.get("workers", 1)), use_gpu=gpus > 0,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(name=f"train-{trial_id}", storage_path=config["storage"],
                                       callbacks=[TuneReportCallback()]),
    )
    trainer.fit()


def trainable_for(worker: str, cpus: int, gpus: float):
    """The Tune trainable with its resources for `execution.worker`."""
    if worker == "train":
        return ray.tune.with_resources(pack_driver, {"CPU": DRIVER_CPU})
    return ray.tune.with_resources(pack_trial, {"CPU": cpus, **({"GPU": gpus} if gpus else {})})
