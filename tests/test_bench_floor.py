"""benchmarks/floor.py: bench_packing's compute floor. The FLOP model of one FTC member run is checked against a
direct count (torch.utils.flop_counter.FlopCounterMode) of whole short runs, on both sides of the benchmark — the
plain nn.Module run (benchmarks/common.train_plain_member) and ftcore's packed fit — with early stop and a budget
that is not a multiple of eval_every. Both count matmul FLOPs as 2·M·N·P, so the tolerance is zero: the counts must
be equal after the known extra forwards of the frozen f, which the floor leaves out (f(x) is a constant of a
full-batch run): the labels y' = f(x) + r (task setup, both sides) and, on the plain side, f(x) at every step and
evaluation. The throughput measurement runs on a tiny shape set (a smoke test; the numbers are the CPU's)."""
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402
import floor  # noqa: E402

# depth 2 and 3 (odd width: ⌈m/2⌉ ≠ ⌊m/2⌋); 130 steps (not a multiple of eval_every 50) and a wide member
# given 600 steps, which succeeds early (its stop step is an evaluation step).
CASES = [({"task.n": 16, "adapter.depth": 2, "adapter.width": 13}, 130),
         ({"task.n": 16, "adapter.depth": 3, "adapter.width": 13}, 130),
         ({"task.n": 16, "adapter.depth": 2, "adapter.width": 128}, 600)]


def member(point: dict, steps: int):
    from ftcore.config import member_from_dict
    spec = common.load_workload(common.overrides({k: [v] for k, v in point.items()}, 1, steps))
    (p, seed), = common.member_points(spec)
    return member_from_dict(common.plain_member_dict(spec.base_dict(), p, seed))


def counted(fn) -> tuple[int, object]:
    with FlopCounterMode(display=False) as fc:
        out = fn()
    return fc.get_total_flops(), out


@pytest.mark.parametrize("point,steps", CASES)
def test_plain_member_run_matches_a_direct_count(point, steps):
    m = member(point, steps)
    flops, metrics = counted(lambda: common.train_plain_member(m))
    s = metrics["step"]                                         # what the plain side's row records as `steps`
    model = floor.ftc_member_flops(m, s)
    f_fwd = model["base"]
    # the plain loop recomputes f(x) at every step and evaluation; + 1 for the labels y' (task setup)
    extra = (s + floor.n_evals(s, m.train.eval_every)) * f_fwd
    assert flops == model["total"] + extra
    assert model["train"] > 0 and model["eval"] > 0


@pytest.mark.parametrize("point,steps", CASES)
def test_packed_fit_matches_a_direct_count(point, steps, monkeypatch):
    """fit through the reference ops (autograd through packed_mlp_ref: a baddbmm per layer, the math the floor
    models). fit's own CPU step (the analytic step) computes g's one-output layer as broadcast products, the same
    multiply-adds, which FlopCounterMode does not count as matmul FLOPs."""
    import importlib

    import ftkernels.packed_mlp as PM
    from ftcore.fit import fit
    monkeypatch.setattr(importlib.import_module("ftcore.fit"), "analytic_forward", lambda *a: None)
    monkeypatch.setattr(PM, "packed_mlp_torch", PM.packed_mlp_ref)
    m = member(point, steps)
    flops, (res,) = counted(lambda: fit([m]))
    model = floor.ftc_member_flops(m, res.steps)
    assert flops == model["total"] + model["base"]              # + the labels y' = f(x) + r (task setup)
    if steps == 600:
        assert res.steps < steps and res.steps % m.train.eval_every == 0, "the wide member should stop early"


def test_shapes_and_closed_forms():
    assert floor.adapter_dims(8, 13, 2) == [8, 13, 1] and floor.adapter_dims(8, 13, 3) == [8, 7, 6, 1]
    assert floor.mlp_dims(8, 16, 2) == [8, 16, 1] and floor.mlp_dims(8, 16, 1) == [8, 1]
    fwd = floor.forward_flops(32, [8, 4, 1])
    assert fwd == 2 * 32 * (8 * 4 + 4)
    assert floor.train_step_flops(32, [8, 4, 1]) == 3 * fwd - 2 * 32 * 8 * 4
    assert [floor.n_evals(s, 50) for s in (0, 50, 51, 3000)] == [1, 2, 3, 61]


def test_rows_flops_skips_runs_without_steps():
    m = member(CASES[0][0], 100)
    rows = [{"steps": 100}, {"steps": None}, {"steps": float("nan")}, {"steps": 50.0}]
    total = floor.rows_flops(rows, lambda r: m)
    assert total == floor.ftc_member_flops(m, 100)["total"] + floor.ftc_member_flops(m, 50)["total"]


def test_throughput_is_measured_on_one_thread_and_restored():
    before = torch.get_num_threads()
    tp = floor.matmul_throughput([32], 8, [4, 16], batch=4)
    assert torch.get_num_threads() == before
    for k in ("small_batched_gflops", "small_single_gflops", "gemm_512_gflops"):
        assert math.isfinite(tp[k]) and tp[k] > 0, tp
    assert floor.floor_seconds(4e9, 1.0, 2) == pytest.approx(2.0)
