"""The compute meter of batch selection (ftcore.batching.cost; issue 14 item 4): per step, the distinct
training pairs plus N pairs per logits call of the selection, and OSGD's C(N,B) scored batch losses —
checked per strategy against the closed-form counts on a tiny fit (N = 8, B = 2)."""
import math

import pytest

import ftcore

N, B, STEPS = 8, 2, 8
PER_STEP = {"task": B, "fixed": B, "shuffle": B, "full": N, "all_batches": N, "osgd": B + N,
            "spectral": B + N * B / N}                   # spectral: N pairs embedded once per epoch of N/B steps


def members(selection):
    return [ftcore.member_from_dict({"model": {"name": "embeddings"}, "adapter": {"name": "full"},
                                     "task": {"name": "contrastive", "n": N, "dim": 16, "batch_size": B},
                                     "train": {"method": "sgd", "lr": 0.5, "schedule": "constant", "steps": STEPS,
                                               "eval_every": 4, "batch_selection": selection}, "seed": s})
            for s in (0, 1)]


@pytest.mark.parametrize("selection", sorted(PER_STEP))
def test_cumulative_pair_forwards_per_strategy(selection):
    for r in ftcore.fit(members(selection)):
        rows = {c["step"]: c for c in r.curve}
        assert [rows[s]["cost/forwards"] for s in (0, 4, 8)] == [0.0, 4 * PER_STEP[selection], 8 * PER_STEP[selection]]
        scored = math.comb(N, B) if selection == "osgd" else 0
        assert rows[8]["cost/batch_losses"] == 8 * scored
        assert r.metrics["cost/forwards"] == STEPS * PER_STEP[selection]
