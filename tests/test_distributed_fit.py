"""Data-parallel `fit` (ftcore.distributed) without Ray: two processes in a gloo group on the loopback train a
pack exactly as one process does (up to float summation order), for padded static batches (ftc_relabel, mixed
k: uneven real rows per shard; grad clipping; SGD) and fresh per-step batches of a transformer (icl_regression,
an odd batch size: shards of 3 and 4 rows). And what the sweep layer accepts for `execution.workers_per_trial`."""
import math
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ftcore import fit, member_from_dict
from ftcore.distributed import DataParallel
from sweeps.runner import slots
from sweeps.spec import ExecutionSpec, SpecError, load_spec


def ftc(n, seed, **train):
    return member_from_dict({"model": {"name": "mlp", "width": 8}, "task": {"name": "ftc_relabel", "dim": 4, "n": n},
                             "adapter": {"name": "additive_relu", "width": 4},
                             "train": {"steps": 40, "eval_every": 10, "lr": 2e-2, **train}, "seed": seed})


def icl(seed):
    return member_from_dict({"model": {"name": "transformer", "n_embd": 8, "n_head": 2, "n_layer": 1, "n_positions": 10},
                             "task": {"name": "icl_regression", "dim": 2, "n_points": 5, "batch_size": 7, "n_eval": 16},
                             "adapter": {"name": "full"}, "train": {"steps": 12, "eval_every": 4, "lr": 1e-3,
                                                                   "early_stop": False}, "seed": seed})


def packs():
    return {"ftc_adam": [ftc(3, 0, grad_clip=0.5), ftc(5, 1, grad_clip=0.5)],
            "ftc_sgd": [ftc(4, 2, method="sgd", lr=0.1), ftc(4, 3, method="sgd", lr=0.05)],
            "icl": [icl(0), icl(1)]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, out: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        dp = DataParallel()
        out[rank] = {name: fit(members, dp=dp) for name, members in packs().items()}
    finally:
        dist.destroy_process_group()


def close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-4, abs_tol=1e-6) for k in a)


def test_two_gloo_ranks_train_a_pack_as_one_process_does():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(2, free_port(), out), nprocs=2, join=True)
        ranks = dict(out)
    one = {name: fit(members) for name, members in packs().items()}
    for name, results in one.items():
        for r0, r1, r in zip(ranks[0][name], ranks[1][name], results):
            assert r0.metrics == r1.metrics and r0.curve == r1.curve      # ranks agree exactly
            assert (r0.run_id, r0.status, r0.steps) == (r.run_id, r.status, r.steps), name
            assert close(r0.metrics, r.metrics), (name, r0.metrics, r.metrics)
            assert len(r0.curve) == len(r.curve) and all(close(a, b) for a, b in zip(r0.curve, r.curve)), name


def test_rows_split_evenly_and_keep_their_weights():
    assert [DataParallel(r, 3).rows(7) for r in range(3)] == [slice(0, 2), slice(2, 4), slice(4, 7)]
    assert DataParallel(0, 2).rows(1) == slice(0, 0) and DataParallel(1, 2).rows(1) == slice(0, 1)
    x, y, w = torch.randn(2, 5, 3), torch.randn(2, 5, 1), torch.full((2, 5), 0.2)
    (xa, xb), ya, wa = DataParallel(1, 2).shard((x, x), y, w)
    assert torch.equal(xa, x[:, 2:]) and torch.equal(xb, x[:, 2:]) and torch.equal(ya, y[:, 2:])
    assert torch.equal(wa, w[:, 2:])                       # weights are not renormalised: Σ over ranks = full loss
    with pytest.raises(ValueError, match="rank"):
        DataParallel(2, 2)


# -- the sweep layer: what it accepts, and how many trials run at once -------------------------------------------
SWEEPS = Path(__file__).parent.parent / "sweeps"


def test_workers_per_trial_validates_for_row_losses_with_the_train_worker():
    spec = load_spec(SWEEPS / "ftc_capacity.yaml", ["execution.worker=train", "execution.workers_per_trial=2"])
    assert spec.execution.workers_per_trial == 2


@pytest.mark.parametrize("path,overrides,match", [
    ("ftc_capacity.yaml", ["execution.workers_per_trial=0"], r"execution\.workers_per_trial: must be >= 1"),
    ("ftc_capacity.yaml", ["execution.workers_per_trial=2"], r"needs execution\.worker: train"),
    ("ftc_capacity.yaml", ["execution.worker=train", "execution.workers_per_trial=2", "execution.gpus_per_trial=0.5"],
     r"NCCL refuses two ranks on one GPU"),
    ("batch_selection.yaml", ["execution.worker=train", "execution.workers_per_trial=2"], r"couples its batch's rows"),
])
def test_workers_per_trial_refusals_are_one_line(path, overrides, match):
    with pytest.raises(SpecError, match=match) as e:
        load_spec(SWEEPS / path, overrides)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("ex,res,want", [
    (ExecutionSpec(worker="train", workers_per_trial=2), {"CPU": 2}, 1),
    (ExecutionSpec(worker="train", workers_per_trial=2, cpus_per_trial=2), {"CPU": 16}, 4),
    (ExecutionSpec(worker="train", workers_per_trial=4, gpus_per_trial=1), {"CPU": 64, "GPU": 8}, 2),
    (ExecutionSpec(worker="train", workers_per_trial=3), {"CPU": 2}, 0),
])
def test_a_trial_of_n_workers_takes_n_slots(ex, res, want):
    assert slots(ex, res) == want
