"""Batch-selection strategies (ftcore.batching; papers.md §3): every strategy over the registry, then each
one's defining property — partitions are partitions with equal sizes, `fixed` never changes, `shuffle` does,
OSGD picks the maximum-loss batch (checked by brute force with an independent loss), spectral recovers
planted high-loss groups, `all_batches` enumerates every B-subset, and the refusals name their limit."""
import itertools
import math

import pytest
import torch

import ftcore
from ftcore.batching import BATCHINGS, MAX_BATCHES, build_strategy, symmetric_infonce
from ftcore.batching.base import all_combinations, batch_logits
from ftcore.batching.spectral import equal_size_clusters, pair_affinity

SEEDS = [1, 2, 3]


def random_logits(n, seed=0, e=3):
    """Logits of random unit pairs: (E, N, N)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.nn.functional.normalize(torch.randn(e, n, 5, generator=g), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(e, n, 5, generator=g), dim=-1)
    return u @ v.transpose(1, 2)


def clip_loss(z, s):
    """The reference's `clip_batch_loss` on batch s, written out with exp/log (independent of the module)."""
    zs = [[float(z[i, j]) for j in s] for i in s]
    b = len(s)
    rows = sum(-math.log(math.exp(zs[i][i]) / sum(math.exp(x) for x in zs[i])) for i in range(b)) / b
    cols = sum(-math.log(math.exp(zs[i][i]) / sum(math.exp(zs[j][i]) for j in range(b))) for i in range(b)) / b
    return rows + cols


def epoch(strategy, n, b, ep, z):
    """The N/B batches a partition strategy trains on in epoch `ep`: (E, N/B, B)."""
    per = n // b
    return torch.cat([strategy.select(ep * per + p, lambda: z) for p in range(per)], 1)


def assert_partition(batches, n, b):
    """batches (E, N/B, B): every member's batches are disjoint, of size B, and cover range(N)."""
    assert batches.shape[1:] == (n // b, b)
    for e in range(batches.shape[0]):
        assert sorted(batches[e].flatten().tolist()) == list(range(n))


def test_registry_names():
    assert set(BATCHINGS) == {"fixed", "shuffle", "full", "all_batches", "osgd", "spectral"}


@pytest.mark.parametrize("name,k", [("fixed", 0), ("shuffle", 0), ("osgd", 0), ("spectral", 0), ("spectral", 2)])
@pytest.mark.parametrize("n,b", [(8, 2), (12, 3)])
def test_partition_strategies_cover_each_epoch(name, k, n, b):
    s = build_strategy(name, n, b, k, SEEDS)
    z = random_logits(n)
    for ep in range(3):
        batches = epoch(s, n, b, ep, z)
        assert batches.dtype == torch.long
        if name != "osgd":                  # OSGD repeats the max-loss batch: no partition by design
            assert_partition(batches, n, b)
        else:
            assert batches.shape == (3, n // b, b) and all(len(set(r.tolist())) == b for r in batches.flatten(0, 1))


def test_fixed_never_changes_and_shuffle_does():
    n, b, z = 8, 2, random_logits(8)
    fixed, shuffle = build_strategy("fixed", n, b, 0, SEEDS), build_strategy("shuffle", n, b, 0, SEEDS)
    f = [epoch(fixed, n, b, ep, z) for ep in range(4)]
    s = [epoch(shuffle, n, b, ep, z) for ep in range(4)]
    assert all(torch.equal(f[0], x) for x in f[1:])
    assert not all(torch.equal(s[0], x) for x in s[1:])
    assert not torch.equal(f[0][0], f[0][1]), "members draw their own partitions"


def test_same_seeds_same_batches():
    z = random_logits(8)
    a = [epoch(build_strategy("shuffle", 8, 2, 0, SEEDS), 8, 2, ep, z) for ep in range(2)]
    b = [epoch(build_strategy("shuffle", 8, 2, 0, SEEDS), 8, 2, ep, z) for ep in range(2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    alone = [epoch(build_strategy("shuffle", 8, 2, 0, [SEEDS[1]]), 8, 2, ep, z[1:2]) for ep in range(2)]
    assert all(torch.equal(x[1], y[0]) for x, y in zip(a, alone)), "a member's batches do not depend on its pack"


def test_symmetric_infonce_and_gather_match_the_reference_loss():
    z = random_logits(7)
    combos = all_combinations(7, 3)
    idx = combos.expand(3, *combos.shape)
    blocks = batch_logits(z, idx)                                                # (E, C, B, B)
    for e in range(3):
        for c in (0, 5, len(combos) - 1):
            s = combos[c].tolist()
            assert torch.equal(blocks[e, c], z[e][s][:, s])
            assert abs(float(symmetric_infonce(blocks[e, c])) - clip_loss(z[e], s)) < 1e-5


@pytest.mark.parametrize("n,b", [(6, 2), (7, 3), (8, 4)])
def test_osgd_picks_the_max_loss_batch_by_brute_force(n, b):
    z = random_logits(n, seed=n + b)
    s = build_strategy("osgd", n, b, 0, SEEDS)
    for step in range(3):
        pick = s.select(step, lambda: z)                                          # (E, 1, B)
        assert pick.shape == (3, 1, b)
        for e in range(3):
            losses = {c: clip_loss(z[e], c) for c in itertools.combinations(range(n), b)}
            best = max(losses.values())
            assert abs(losses[tuple(pick[e, 0].tolist())] - best) < 1e-5


def test_full_and_all_batches():
    full = build_strategy("full", 6, 2, 0, SEEDS).select(0, None)
    assert torch.equal(full, torch.arange(6).expand(3, 1, 6))
    allb = build_strategy("all_batches", 6, 2, 0, SEEDS).select(0, None)
    assert allb.shape == (3, math.comb(6, 2), 2)
    assert {tuple(r) for r in allb[0].tolist()} == set(itertools.combinations(range(6), 2))


def planted_logits(groups, noise_seed=0):
    """Pairs in the same planted group confuse each other (z_ij = 0.8), others are far apart (z_ij = −0.5)."""
    n = sum(len(g) for g in groups)
    z = torch.full((n, n), -0.5, dtype=torch.float64)
    for g in groups:
        for i in g:
            for j in g:
                z[i, j] = 0.8
    z.fill_diagonal_(1.0)
    gen = torch.Generator().manual_seed(noise_seed)
    return z + 0.01 * torch.randn(n, n, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("b", [2, 3])
def test_spectral_recovers_planted_high_loss_groups(b):
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(b)).tolist()
    groups = [perm[i:i + b] for i in range(0, 12, b)]
    z = planted_logits(groups)
    a = pair_affinity(z, b)
    assert torch.allclose(a, a.T)
    out = equal_size_clusters(z, b, torch.Generator().manual_seed(0))
    assert {frozenset(r) for r in out.tolist()} == {frozenset(g) for g in groups}
    losses = [clip_loss(z, sorted(g)) for g in out.tolist()]
    assert min(losses) > max(clip_loss(z, list(c)) for c in [[groups[0][0], groups[1][0]]])


def test_spectral_clusters_are_equal_size_on_unbalanced_structure():
    """One planted group larger than B: k-means alone would make an oversized cluster; the assignment step
    still returns N/B clusters of exactly B."""
    z = planted_logits([list(range(6)), [6, 7], [8, 9]])
    out = equal_size_clusters(z, 2, torch.Generator().manual_seed(0))
    assert_partition(out.unsqueeze(0), 10, 2)


def test_spectral_kb_variant_stays_within_chunks():
    """k·B variant: with k = 2, B = 2 the 16 samples are cut into chunks of 4, each clustered into 2 batches."""
    s = build_strategy("spectral", 16, 2, 2, SEEDS)
    batches = epoch(s, 16, 2, 0, random_logits(16))
    assert_partition(batches, 16, 2)


def member(task_over=None, **train):
    task = {"name": "contrastive", "n": 8, "dim": 4, "batch_size": 2, **(task_over or {})}
    return ftcore.member_from_dict({"model": {"name": "embeddings"}, "adapter": {"name": "full"}, "task": task,
                                    "train": {"method": "sgd", **train}})


@pytest.mark.parametrize("name", ["osgd", "all_batches"])
def test_enumerating_strategies_refuse_too_many_batches(name):
    with pytest.raises(ValueError, match=rf"^train\.batch_selection: .*C\(40,20\) = \d+ batches \(limit {MAX_BATCHES}\)"):
        member({"n": 40, "batch_size": 20}, batch_selection=name)
    member({"n": 16, "batch_size": 4}, batch_selection=name)                      # C(16,4) = 1820 is fine


def test_config_refusals():
    with pytest.raises(ValueError, match=r"^train\.batch_selection: must be one of task, all_batches"):
        member(batch_selection="random")
    with pytest.raises(ValueError, match=r"^task\.batch_size: must be a divisor of N=8"):
        member({"batch_size": 3}, batch_selection="shuffle")
    with pytest.raises(ValueError, match=r"^task\.batch_size: must be a divisor of N=8"):
        member({"batch_size": 3})                                                  # the default is shuffled too
    member({"batch_size": 3}, batch_selection="full")                             # full ignores B
    with pytest.raises(ValueError, match=r"^train\.batch_selection: must be 'task' for task 'ftc_relabel'"):
        ftcore.member_from_dict({"model": {"name": "mlp"}, "adapter": {"name": "full"},
                                 "task": {"name": "ftc_relabel"}, "train": {"batch_selection": "osgd"}})
    with pytest.raises(ValueError, match=r"^task\.batch_size: must be >= 2 for spectral"):
        member({"batch_size": 1}, batch_selection="spectral")


def fit_gap(name, steps, d=16, seeds=(0, 1)):
    ms = [ftcore.member_from_dict({"model": {"name": "embeddings"}, "adapter": {"name": "full"},
                                   "task": {"name": "contrastive", "n": 8, "dim": d, "batch_size": 2},
                                   "train": {"method": "sgd", "lr": 0.5, "schedule": "constant", "steps": steps,
                                             "eval_every": steps, "batch_selection": name}, "seed": s})
          for s in seeds]
    res = ftcore.fit(ms)
    assert all(r.status == "ok" and r.steps == steps for r in res)
    return [r.metrics["opt/gap"] for r in res], [r.curve[0]["opt/gap"] for r in res]


@pytest.mark.parametrize("name", sorted(BATCHINGS))
def test_tiny_fit_per_strategy(name):
    """N = 8, B = 2, d = 16, SGD lr 0.5 (papers.md §3(b)), 1200 steps: every strategy lowers the full loss; the
    high-loss strategies and full are within 0.01 of the ETF optimum, fixed batches are not."""
    final, first = fit_gap(name, 1200)
    assert all(f < i for f, i in zip(final, first))
    assert all(g > -1e-5 for g in final), "no configuration beats the optimum"
    if name in ("osgd", "spectral", "full"):
        assert max(final) < 0.01, final
    if name == "fixed":
        assert min(final) > 0.05, final
