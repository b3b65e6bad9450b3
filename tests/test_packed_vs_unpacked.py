"""Done-criterion of the speed issue: the shipped FTC and LoRA sweeps run packed by default and give the same
results as one member per pack (same seeds -> same metrics within float tolerance, and so the same searches:
the capacity bisection and the Optuna proposals depend on the metrics, so any drift would change the probes).

Both runs go through the real planner (`plan_trials` with the spec's `execution`) and the same `run_pack` the
Ray workers use; only the pack size differs (0 = auto, the default, vs 1)."""
import math
from pathlib import Path

import pytest

from sweeps.execute import run_pack
from sweeps.plan import plan_trials
from sweeps.runner import auto_pack_size, sweep_meta
from sweeps.search.kinds import make_search
from sweeps.spec import load_spec

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
SMALL = {   # the shipped YAMLs, shrunk to CI size (fewer groups and steps; every search round still runs)
    "ftc_capacity.yaml": ["task.n=[8,10]", "train.steps=400", "seeds=3", "search.range=[2,64]"],
    "lora_rank.yaml": ["model.width=4", "train.steps=60", "task.n_val=128", "task.n_test=256", "task.batch_size=32",
                       "seeds=2", "search.n_trials=4", "search.batch=2"],
}


def run_sweep_in_process(spec, out: Path, n_slots=2) -> tuple[dict, list[int]]:
    search, rows, sizes = make_search(spec, out), {}, []
    ex = spec.execution
    while (probes := search.next_round()) is not None:
        round_rows = []
        for trial in plan_trials([p.member for p in probes], n_slots,
                                 ex.pack_size or auto_pack_size(len(probes), n_slots), ex.max_waste,
                                 ex.pack_overhead):
            for pack in trial:
                sizes.append(len(pack))
                round_rows += run_pack([probes[i] for i in pack], sweep_meta(spec), f"r{search.round}")[0]
        search.record(round_rows)
        rows.update({r["run_id"]: r for r in round_rows})
    return rows, sizes


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shipped_sweep_packed_equals_unpacked(name, tmp_path):
    packed_spec = load_spec(SWEEPS / name, SMALL[name])
    assert packed_spec.execution.pack_size == 0, "the shipped sweeps must pack by default"
    packed, sizes = run_sweep_in_process(packed_spec, tmp_path / "packed")
    single, single_sizes = run_sweep_in_process(load_spec(SWEEPS / name, SMALL[name] + ["execution.pack_size=1"]),
                                                tmp_path / "single")
    assert max(sizes) >= 4 and set(single_sizes) == {1}, (sizes, single_sizes)
    assert packed.keys() == single.keys(), "packing changed which runs the search asked for"
    for run_id, row in packed.items():
        other = single[run_id]
        assert (row["status"], row["steps"], row["n_trainable"]) == (other["status"], other["steps"], other["n_trainable"])
        metrics = [k for k in row if "/" in k]          # metric names are slash-named (DESIGN.md §4)
        assert metrics and metrics == [k for k in other if "/" in k]
        for k in metrics:
            a, b = row[k], other[k]
            if isinstance(a, float) and isinstance(b, float):
                assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b)), (run_id, k, a, b)
