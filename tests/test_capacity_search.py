"""Capacity search against synthetic monotone oracles: exact thresholds with few probes."""
import math
import random

import pytest

from sweeps.search.capacity import CapacitySearch, make_ladder


def run_oracle(search: CapacitySearch, succeed, n_seeds: int = 3) -> int:
    """succeed(group, value, seed) -> bool; every pending group recorded in turn. Returns the number of passes."""
    rounds = 0
    while not search.done:
        rounds += 1
        for g, v in search.pending().items():
            search.record(g, v, [succeed(g, v, s) for s in range(n_seeds)])
    return rounds


@pytest.mark.parametrize("lo,hi", [(1, 1024), (2, 512), (1, 16), (3, 3)])
def test_exact_threshold_for_every_true_value(lo, hi):
    ladder = make_ladder(lo, hi)
    truths = sorted(set([lo, hi] + random.Random(0).sample(ladder, min(40, len(ladder)))))
    groups = [f"g{t}" for t in truths]
    search = CapacitySearch(groups, ladder, quorum=0.5)
    run_oracle(search, lambda g, v, s: v >= int(g[1:]))
    bound = 2 * math.ceil(math.log2(len(ladder))) + 2
    for t, g in zip(truths, groups):
        assert search.threshold(g) == t
        assert len(search.state[g].probes) <= bound, (t, search.state[g].probes)
    # clearly fewer runs than scanning the whole ladder
    assert search.n_probes() < 0.25 * len(ladder) * len(groups) or len(ladder) < 20


def test_censored_when_nothing_succeeds():
    search = CapacitySearch(["a"], make_ladder(1, 100), 0.5)
    run_oracle(search, lambda g, v, s: False)
    assert search.threshold("a") is None
    assert search.state["a"].probes[-1][0] == 100      # the top of the ladder was probed


def test_quorum_counts_seeds():
    # seed s succeeds from value 10*(s+1): with 3 seeds, quorum 2/3 needs value >= 20, quorum 1 needs 30
    for quorum, want in [(0.33, 10), (0.67, 20), (1.0, 30)]:
        search = CapacitySearch(["a"], make_ladder(1, 64), quorum)
        run_oracle(search, lambda g, v, s: v >= 10 * (s + 1))
        assert search.threshold("a") == want


def test_explicit_ladder_and_doubling_order():
    ladder = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    search = CapacitySearch(["a"], ladder, 0.5)
    run_oracle(search, lambda g, v, s: v >= 24)
    values = [p[0] for p in search.state["a"].probes]
    assert values[:6] == [1, 2, 4, 8, 16, 32]          # doubling until the first success
    assert search.threshold("a") == 24


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        CapacitySearch(["a"], [3, 2], 0.5)
    with pytest.raises(ValueError):
        CapacitySearch(["a"], [1, 2], 0.0)
    s = CapacitySearch(["a"], [1, 2, 4], 0.5)
    with pytest.raises(ValueError):
        s.record("a", 4, [True])                        # not the pending probe


def test_search_and_analysis_apply_the_same_quorum_rule():
    """The searcher decides where to bisect, analysis recomputes thresholds: they must agree."""
    from analysis.thresholds import passes
    from sweeps.search.capacity import quorum_met
    for n in range(1, 8):
        for k in range(n + 1):
            for q in (0.33, 0.34, 0.5, 0.6, 0.66, 0.67, 0.7, 0.8, 1.0):
                assert quorum_met(k, n, q) == bool(passes(k / n, q)), (k, n, q)


def test_capacity_search_records_groups_in_any_order():
    """The ladder walk itself: groups recorded in any interleaving give the same walks (each group's state is
    its own)."""
    ladder = make_ladder(1, 64)
    walks = []
    for seed in range(3):
        cap, rng = CapacitySearch(["a", "b", "c"], ladder, 0.5), random.Random(seed)
        truth = {"a": 5, "b": 33, "c": 64}
        while not cap.done:
            g = rng.choice(sorted(cap.pending()))
            v = cap.pending()[g]
            cap.record(g, v, [v >= truth[g]] * 2)
        walks.append({g: st.probes for g, st in cap.state.items()})
        assert {g: cap.threshold(g) for g in truth} == truth
    assert walks[0] == walks[1] == walks[2]
