"""The fused ops are wired into ftcore: a pack trained with FTCORE_KERNELS=triton (Triton's interpreter on CPU,
real kernels on CUDA) gives the metrics of the torch reference path, and the run rows record which
implementation ran. Tiny packs, few steps: the interpreter costs ~5 ms per program."""
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


def teacher(rank, seed):
    return {"model": {"name": "mlp", "width": 6, "depth": 2, "last_activation": False},
            "adapter": {"name": "lora", "rank": rank, "tune_bias": True},
            "task": {"name": "lora_teacher", "target_depth": 1, "batch_size": 24, "n_val": 40, "n_test": 40},
            "train": {"steps": 4, "lr": 1e-2, "eval_every": 2, "early_stop": False}, "seed": seed}


PACKS = {
    "additive_relu depth 2": [ftc(3, 0), ftc(20, 1), ftc(7, 2)],
    "additive_relu depth 3": [ftc(3, 0, 3), ftc(9, 1, 3)],
    "lora mixed ranks": [teacher(1, 0), teacher(6, 1), teacher(3, 2)],
}


@pytest.mark.parametrize("name", sorted(PACKS))
def test_triton_path_matches_reference(name, monkeypatch):
    pack = [Probe.from_payload({"config": c, "meta": {}}) for c in PACKS[name]]
    monkeypatch.setenv("FTCORE_KERNELS", "torch")
    ref_rows, ref_curves = run_pack(pack, {}, "t")
    monkeypatch.setenv("FTCORE_KERNELS", "triton")
    tri_rows, tri_curves = run_pack(pack, {}, "t")
    assert {r["kernels_impl"] for r in ref_rows} == {"torch"} and {r["kernels_impl"] for r in tri_rows} == {"triton"}
    assert len(ref_curves) == len(tri_curves)
    for a, b in zip(ref_curves, tri_curves):
        assert a.keys() == b.keys() and a["step"] == b["step"]
        for k in a:
            if k not in ("run_id", "step"):
                assert math.isclose(a[k], b[k], rel_tol=2e-4, abs_tol=1e-6), (k, a[k], b[k])
    assert any(a != b for a, b in zip(ref_curves[1:], ref_curves[:-1])), "training must move the metrics"


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
