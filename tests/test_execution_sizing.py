"""Pack size and concurrency from the machine: slots from CPUs/GPUs, auto pack size from the slots, and a
worker cutting a pack to its memory share using the measured per-member footprint (ftcore/footprint.py)."""

import pytest

from ftcore import member_from_dict
from ftcore.footprint import max_members, member_bytes
from ftcore.models.hf_causal_lm import HFCausalLM
from sweeps.execute import split_for_memory
from sweeps.probe import Probe
from sweeps.runner import auto_pack_size, slots
from sweeps.spec import ExecutionSpec


def ftc(n, width, seed=0):
    return member_from_dict({"model": {"name": "mlp", "width": 8}, "task": {"name": "ftc_relabel", "dim": 4, "n": n},
                             "adapter": {"name": "additive_relu", "width": width}, "train": {"steps": 10}, "seed": seed})


@pytest.mark.parametrize("ex,res,want", [
    (ExecutionSpec(cpus_per_trial=1), {"CPU": 2}, 2),
    (ExecutionSpec(cpus_per_trial=2), {"CPU": 16}, 8),
    (ExecutionSpec(cpus_per_trial=1, gpus_per_trial=0.25), {"CPU": 16, "GPU": 1}, 4),
    (ExecutionSpec(cpus_per_trial=4, gpus_per_trial=1), {"CPU": 16, "GPU": 8}, 4),
    (ExecutionSpec(cpus_per_trial=1, gpus_per_trial=1), {"CPU": 16}, 0),
])
def test_slots_from_resources(ex, res, want):
    assert slots(ex, res) == want


def test_auto_pack_size_spreads_a_round_over_the_slots():
    assert auto_pack_size(256, 2) == 128 and auto_pack_size(5, 2) == 3 and auto_pack_size(1, 8) == 1


def test_footprint_grows_with_the_member_and_bounds_the_pack():
    small, big = member_bytes(ftc(8, 4)), member_bytes(ftc(64, 256))
    assert 0 < small < big
    assert max_members(ftc(64, 256), 10 * big) == 10 and max_members(ftc(64, 256), 1) == 1


def test_worker_cuts_a_pack_to_its_memory_share():
    members = [ftc(8, 4, s) for s in range(5)] + [ftc(64, 256, 9)]
    pack = [Probe(m, {}) for m in members]
    budget = 3.5 * member_bytes(members[-1])        # the largest member sets the padded footprint
    parts = split_for_memory(pack, budget)
    assert [len(p) for p in parts] == [3, 3] and sum(parts, []) == pack
    assert split_for_memory(pack, None) == [pack]


def test_a_shared_base_is_paid_once_per_pack(tiny_hf):
    """An HF base is one copy per pack (DESIGN.md §7): the footprint splits it from the per-member bytes, and the
    pack cap is (budget − base) // per member, not budget // (base + per member)."""
    from ftcore.footprint import footprint
    m = member_from_dict({"model": {"name": "hf_causal_lm", "path": tiny_hf("gpt2")},
                                 "adapter": {"name": "lora", "rank": 2, "targets": ["c_attn"]},
                                 "task": {"name": "lm_text", "batch_size": 2, "n_eval": 2}})
    shared, each = footprint(m)
    base = sum(p.numel() * 4 for p in HFCausalLM(m.model, 300, 300, []).parameters())
    assert shared == base and 0 < each and member_bytes(m) == shared + each
    assert max_members(m, shared + 3 * each) == 3 > (shared + 3 * each) // (shared + each)   # base counted once
