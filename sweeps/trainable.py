"""The Ray layer of one trial: a Tune function trainable that runs its packs in a Ray Train worker.

Current Train V2 + Tune pattern (docs: "Hyperparameter Tuning with Ray Tune", Ray ≥ 2.43): the Tune
trial is a light driver function (`tune.with_resources(pack_driver, {"CPU": DRIVER_CPU})`) that builds a
`TorchTrainer` whose single worker runs `pack_worker`; the worker's `ray.train.report` reaches the Tune
trial through `TuneReportCallback`. Not the deprecated `Tuner(trainer)`.
"""
from __future__ import annotations

import json

import ray.train
import ray.tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

DRIVER_CPU = 0.01


def pack_worker(config: dict) -> None:
    """Runs inside the Ray Train worker process."""
    import torch

    from sweeps.execute import execute_trial
    torch.set_num_threads(int(config["threads"]))
    rows = execute_trial(config["packs"], config["out"], config["trial_id"], config["sweep_meta"])
    ray.train.report({"rows": json.dumps(rows, default=str), "n_runs": len(rows)})


def pack_driver(config: dict) -> None:
    """The Tune trial: launch one Ray Train run for this trial's packs."""
    trial_id = ray.tune.get_context().get_trial_id()
    cpus = float(config["cpus"])
    trainer = TorchTrainer(
        pack_worker,
        train_loop_config={**config, "trial_id": trial_id, "threads": max(1, int(cpus))},
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=False,
                                               resources_per_worker={"CPU": cpus - DRIVER_CPU}),
        run_config=ray.train.RunConfig(name=f"train-{trial_id}", storage_path=config["storage"],
                                       callbacks=[TuneReportCallback()]),
    )
    trainer.fit()
