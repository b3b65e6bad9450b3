"""The fused ops are wired into ftcore: a pack trained on the test's device (`kernel_device`: CUDA when present,
else CPU with Triton's interpreter) with FTCORE_KERNELS=triton gives the metrics of the torch reference path, and
the run rows record the policy (`kernels_impl`) and what each op actually ran (`kernels_ops`): ops outside the
kernels' limits (a LoRA rank of 0 or above 64) run the reference and say so. Tiny packs, few steps: the
interpreter costs ~5 ms per program."""
import json
import math

import pytest
import torch

from ftkernels import dispatch
from sweeps.execute import run_pack
from sweeps.probe import Probe

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() or dispatch.interpreting()),
                                reason="needs CUDA or TRITON_INTERPRET=1")


def ftc(width, seed, depth=2):
    return {"model": {"name": "mlp", "width": 8, "depth": 2},
            "adapter": {"name": "additive_relu", "width": width, "depth": depth},
            "task": {"name": "ftc_relabel", "dim": 5, "n": 6, "tol": 0.1},
            "train": {"steps": 4, "lr": 1e-2, "eval_every": 2, "grad_clip": 1.0}, "seed": seed}


def teacher(rank, seed, width=6):
    return {"model": {"name": "mlp", "width": width, "depth": 2, "last_activation": False},
            "adapter": {"name": "lora", "rank": rank, "tune_bias": True},
            "task": {"name": "lora_teacher", "target_depth": 1, "batch_size": 24, "n_val": 40, "n_test": 40},
            "train": {"steps": 4, "lr": 1e-2, "eval_every": 2, "early_stop": False}, "seed": seed}


PACKS = {   # name: (members, the op that trains the adapter)
    "additive_relu depth 2": ([ftc(3, 0), ftc(20, 1), ftc(7, 2)], "packed_mlp"),
    "additive_relu depth 3": ([ftc(3, 0, 3), ftc(9, 1, 3)], "packed_mlp"),
    "lora mixed ranks": ([teacher(1, 0), teacher(6, 1), teacher(3, 2)], "lora_linear"),
}


def ops_of(rows) -> dict:
    assert len({r["kernels_ops"] for r in rows}) == 1            # one pack, one record
    return json.loads(rows[0]["kernels_ops"])


@pytest.mark.parametrize("name", sorted(PACKS))
def test_triton_path_matches_reference(name, monkeypatch, kernel_device):
    members, op = PACKS[name]
    pack = [Probe.from_payload({"config": c, "meta": {}}) for c in members]
    dispatch.reset_ops()
    monkeypatch.setenv("FTCORE_KERNELS", "torch")
    ref_rows, ref_curves = run_pack(pack, {}, "t", device=kernel_device.type)
    monkeypatch.setenv("FTCORE_KERNELS", "triton")
    tri_rows, tri_curves = run_pack(pack, {}, "t", device=kernel_device.type)
    assert {r["kernels_impl"] for r in ref_rows} == {"torch"} and {r["kernels_impl"] for r in tri_rows} == {"triton"}
    assert {r["device"] for r in tri_rows} == {kernel_device.type}
    assert ops_of(ref_rows) == {op: "torch", "multi_adamw": "torch"}
    assert ops_of(tri_rows) == {op: "triton", "multi_adamw": "triton"}
    assert len(ref_curves) == len(tri_curves)
    for a, b in zip(ref_curves, tri_curves):
        assert a.keys() == b.keys() and a["step"] == b["step"]
        for k in a:
            if k not in ("run_id", "step"):
                assert math.isclose(a[k], b[k], rel_tol=2e-4, abs_tol=1e-6), (k, a[k], b[k])
    assert any(a != b for a, b in zip(ref_curves[1:], ref_curves[:-1])), "training must move the metrics"


@pytest.mark.parametrize("ranks,width", [([0, 0], 6), ([65, 3], 66)])
def test_lora_outside_the_kernels_runs_and_records_the_reference(ranks, width, monkeypatch, kernel_device):
    """Forced triton, a pack whose largest rank is 0 (nothing low-rank to fuse) or above 64 (beyond the kernels'
    four rank slots): lora_linear runs the reference and `kernels_ops` says so; the optimizer still runs Triton."""
    pack = [Probe.from_payload({"config": teacher(r, s, width), "meta": {}}) for s, r in enumerate(ranks)]
    monkeypatch.setenv("FTCORE_KERNELS", "triton")
    dispatch.reset_ops()
    rows, _ = run_pack(pack, {}, "t", device=kernel_device.type)
    assert {r["kernels_impl"] for r in rows} == {"triton"} and {r["status"] for r in rows} == {"ok"}
    assert ops_of(rows) == {"lora_linear": "torch", "multi_adamw": "triton"}


def test_forced_triton_without_interpreter_or_cuda_is_an_error(monkeypatch):
    monkeypatch.setenv("FTCORE_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if torch.cuda.is_available():
        pytest.skip("CUDA present: triton is legitimately available")
    with pytest.raises(ValueError, match="FTCORE_KERNELS=triton"):
        dispatch.impl_for("cpu")


def test_unknown_choice_is_an_error(monkeypatch):
    monkeypatch.setenv("FTCORE_KERNELS", "cuda")
    with pytest.raises(ValueError, match="one of auto, torch, triton"):
        dispatch.impl_for("cpu")
