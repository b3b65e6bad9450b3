"""Pack planner: packs share a pack key, padding stays within the waste budget, trials fill the slots."""
from ftcore import member_from_dict
from sweeps.plan import member_cost, plan_packs, plan_trials


def ftc(n, width, depth, seed=0):
    return member_from_dict({"model": {"name": "mlp", "width": 8}, "task": {"name": "ftc_relabel", "dim": 4, "n": n},
                             "adapter": {"name": "additive_relu", "width": width, "depth": depth},
                             "train": {"steps": 10}, "seed": seed})


def test_packs_share_keys_and_bound_waste():
    members = [ftc(n, w, d, s) for n in (8, 16, 64) for w in (2, 8, 40) for d in (2, 3) for s in range(3)]
    packs = plan_packs(members, max_waste=1.5)
    assert sorted(i for p in packs for i in p) == list(range(len(members)))
    for p in packs:
        assert len({members[i].pack_key() for i in p}) == 1
        costs = [member_cost(members[i]) for i in p]
        padded = len(p) * max(r for r, _ in costs) * max(s for _, s in costs)
        assert padded <= 1.5 * sum(r * s for r, s in costs) + 1e-9
    # equal shapes pack together: the 3 seeds of each (n, width, depth) never split
    assert len(packs) <= len(members) // 3


def test_trials_fill_slots_and_respect_pack_size():
    members = [ftc(n, w, 2, s) for n in (8, 16) for w in (2, 4) for s in range(4)]
    trials = plan_trials(members, n_slots=2, pack_size=8)
    assert len(trials) >= 2
    assert all(sum(map(len, t)) <= 8 for t in trials)
    assert sorted(i for t in trials for p in t for i in p) == list(range(len(members)))


def test_overhead_lets_small_members_share_a_pack_and_the_cheapest_order_wins():
    from sweeps.plan import ORDERS, greedy_packs, step_cost
    members = [ftc(n, w, 2, s) for n in (8, 16, 64) for w in (2, 8, 40) for s in range(3)]
    costs = [member_cost(m) for m in members]
    O = 65536
    without, with_overhead = plan_packs(members, 1.5), plan_packs(members, 1.5, overhead=O)
    assert len(with_overhead) < len(without)
    for p in with_overhead:        # the bound, overhead included
        c = [costs[i] for i in p]
        assert len(p) * max(r for r, _ in c) * max(s for _, s in c) <= 1.5 * sum(r * s for r, s in c) + O
    idx = list(range(len(members)))
    singles = [greedy_packs(sorted(idx, key=lambda i, o=o: (o(costs[i]), i)), costs, 1.5, 256, O) for o in ORDERS.values()]
    assert step_cost(with_overhead, costs, O) == min(step_cost(p, costs, O) for p in singles)
    assert step_cost(with_overhead, costs, O) < step_cost(without, costs, O)
