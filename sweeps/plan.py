"""Pack planner: a wave's member runs -> packs -> Tune trials (DESIGN.md §3). The runner packs each lane on its own
(`plan_packs`) and spreads the packs over the free slots' trials (`spread_packs`); `plan_trials` does both at once.

* A pack holds members with the same pack key (shapes and everything else that is not per-member);
  within a key, members are walked in order of cost (rows per step × capacity), of rows, or of
  capacity — whichever plan has the least modelled step time — and greedily packed while the
  padded cost E · max rows · max capacity stays within `max_waste` × the members' own total cost + O.
  O (`execution.pack_overhead`, in the same rows × capacity units) is what a step of any pack costs
  regardless of its size — Python dispatch, ~60 ATen ops, kernel launches — so padding up to O is free
  next to running a second pack. Measured on the 2-core CPU (additive ReLU packs, fit() step): 0.6 ms
  fixed, then ≈ 8.6 ns per unit (E=16, K=256, width 128: 5.1 ms), so O ≈ 65536 units; after issue 17's
  shorter step (2026-12-07) both fell together — 0.25 ms fixed, ≈ 3.3 ns per unit (E=16, K=512, width 128:
  3.5 ms), O ≈ 75000 — so the default stays. A GPU's fixed cost is launch latency while its per-unit cost
  is far lower, so O is at least as large there. Padding a
  whole wave to the largest (K, width) instead would cost ~10× on the FTC sweep.
* Packs are spread over `n_slots` trials (the concurrent worker slots of the cluster), largest first,
  each trial holding at most `pack_size` members, so every core is busy but there are as few
  Ray Train start-ups (8–16 s each on 2 CPUs) as possible.
"""
from __future__ import annotations

import math

from ftcore.registry import ADAPTERS, TASKS


def member_cost(member) -> tuple[int, int]:
    rows = TASKS.get_entry(member.task.name).rows(member.task)
    size = ADAPTERS.get_entry(member.adapter.name).size(member.adapter)
    return rows, max(size, 1)


ORDERS = {   # the greedy pass walks members in one of these orders; the plan with the least modelled time wins
    "cost": lambda c: (c[0] * c[1], c[0]),
    "rows": lambda c: (c[0], c[1]),
    "capacity": lambda c: (c[1], c[0]),
}


def greedy_packs(idx: list[int], costs: list[tuple[int, int]], max_waste: float, pack_size: int,
                 overhead: float) -> list[list[int]]:
    """Walk `idx` in order, opening a new pack when the padded cost would exceed max_waste × own + overhead."""
    packs, cur, own, mr, ms = [], [], 0, 0, 0
    for i in idx:
        r, s = costs[i]
        nr, ns = max(mr, r), max(ms, s)
        if cur and (len(cur) >= pack_size or (len(cur) + 1) * nr * ns > max_waste * (own + r * s) + overhead):
            packs.append(cur)
            cur, own, nr, ns = [], 0, r, s
        cur.append(i)
        own, mr, ms = own + r * s, nr, ns
    return packs + [cur]


def step_cost(packs: list[list[int]], costs: list[tuple[int, int]], overhead: float) -> float:
    """Modelled time of one step of every pack: Σ (O + E · max rows · max capacity)."""
    return sum(overhead + len(p) * max(costs[i][0] for i in p) * max(costs[i][1] for i in p) for p in packs)


def plan_packs(members: list, max_waste: float = 1.5, pack_size: int = 256, overhead: float = 0.0) -> list[list[int]]:
    """Indices of `members` grouped into packs."""
    costs = [member_cost(m) for m in members]                      # (rows, capacity) per member
    by_key: dict[tuple, list[int]] = {}
    for i, m in enumerate(members):
        by_key.setdefault(m.pack_key(), []).append(i)
    packs = []
    for idx in by_key.values():
        plans = [greedy_packs(sorted(idx, key=lambda i, o=o: (o(costs[i]), i)), costs, max_waste, pack_size, overhead)
                 for o in ORDERS.values()]
        packs += min(plans, key=lambda p: step_cost(p, costs, overhead))
    return packs


def plan_trials(members: list, n_slots: int, pack_size: int = 256, max_waste: float = 1.5,
                overhead: float = 0.0) -> list[list[list[int]]]:
    """-> trials, each a list of packs (lists of member indices)."""
    return spread_packs(plan_packs(members, max_waste, pack_size, overhead), members, n_slots, pack_size)


def spread_packs(packs: list[list[int]], members: list, n_slots: int, pack_size: int) -> list[list[list[int]]]:
    """Packs (lists of indices into `members`) -> trials: largest pack first onto the least loaded of
    max(⌈members / pack_size⌉, min(n_slots, packs)) trials, each holding at most `pack_size` members when it can.
    Which trial a pack lands in changes when it trains, never what it computes."""
    member_costs = [r * s for r, s in map(member_cost, members)]
    pack_costs = {id(p): sum(member_costs[i] for i in p) for p in packs}
    n_members = sum(map(len, packs))
    n_trials = max(math.ceil(n_members / pack_size), min(n_slots, len(packs)), 1)
    trials: list[list[list[int]]] = [[] for _ in range(n_trials)]
    load = [0.0] * n_trials
    for p in sorted(packs, key=lambda p: pack_costs[id(p)], reverse=True):
        fits = [t for t in range(n_trials) if sum(map(len, trials[t])) + len(p) <= pack_size] or list(range(n_trials))
        t = min(fits, key=lambda t: load[t])
        trials[t].append(p)
        load[t] += pack_costs[id(p)]
    return [t for t in trials if t]
