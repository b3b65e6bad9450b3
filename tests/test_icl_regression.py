"""`icl_regression` (Garg et al. 2022; papers.md §0.1): shapes, seeding, curriculum, loss, baselines, training."""

import pytest
import torch

import ftcore
from ftcore.fit import build_pack
from ftcore.tasks.icl_baselines import BASELINES
from ftcore.tasks.icl_functions import (
    Curriculum,
    Schedule,
    error_normalizer,
)
from ftcore.tasks.icl_regression import (
    IclRegressionConfig,
    curriculum_at,
    position_keys,
    sample_prompts,
)

MODEL = {"name": "transformer", "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 64}
TASK = {"name": "icl_regression", "dim": 4, "n_points": 9, "batch_size": 8, "n_eval": 32,
        "dims_start": 2, "dims_inc": 1, "dims_interval": 3, "points_start": 5, "points_inc": 2, "points_interval": 2}


def members(seeds, train=None, **over):
    return [ftcore.member_from_dict({"model": MODEL, "adapter": {"name": "full"}, "task": {**TASK, **over},
                                     "seed": s, **({"train": train} if train else {})}) for s in seeds]


def test_shapes_and_curriculum_lengths():
    task, model = build_pack(members([1, 2, 3]), torch.float32)
    for step in range(8):
        x, y, w = task.batch(step)
        n_dims, K = curriculum_at(task.cfgs[0], step)
        assert x.shape == (3, 8, 2 * K, 4) and y.shape == (3, 8, K) and w.shape == (3, 8)
        assert bool((x[..., 0::2, n_dims:] == 0).all())                          # truncated coordinates
        if n_dims < 4:
            assert bool((x[..., 0::2, :n_dims] != 0).all())
        torch.testing.assert_close(x[..., 1::2, 0], y)                              # y tokens carry y
        assert bool((x[..., 1::2, 1:] == 0).all())
        torch.testing.assert_close(w.sum(1), torch.ones(3))
        pred = model(x)
        assert pred.shape == (3, 8, 2 * K, 1)
        assert task.loss(pred, y, w).shape == (3,)
    ev = task.evaluate(model)
    keys = position_keys("nse/model", 9)
    assert keys[0] == "nse/model/k00" and keys[-1] == "nse/model/k08"
    for name in ("model", "least_squares", "knn", "averaging"):
        for k in [*position_keys(f"nse/{name}", 9), f"nse/{name}/mean"]:
            assert ev[k].shape == (3,)
    assert ev["val/mse"].shape == (3,)
    assert position_keys("nse/model", 101)[5] == "nse/model/k005"


def test_curriculum_pure_function_matches_garg():
    cfg = IclRegressionConfig(dim=20, n_points=41, dims_interval=2000, points_interval=2000)   # Garg's
    cur = Curriculum(Schedule(5, 20, 1, 2000), Schedule(11, 41, 2, 2000))
    for step in range(40001):
        if step % 997 == 0 or step % 2000 in (0, 1, 1999):
            assert curriculum_at(cfg, step) == (cur.n_dims_truncated, cur.n_points), step
        cur.update()
    assert curriculum_at(cfg, 10**6) == (20, 41)
    assert curriculum_at(IclRegressionConfig(dim=7, n_points=13, dims_interval=0, points_interval=0), 0) == (7, 13)
    # order of calls does not matter: step 5 first, then 0, gives the shapes of the schedule
    task, _ = build_pack(members([1]), torch.float32)
    assert task.batch(5)[1].shape[-1] == curriculum_at(task.cfgs[0], 5)[1] == 9
    assert task.batch(0)[1].shape[-1] == 5


def test_same_seed_same_data_and_pack_equals_alone():
    ms = members([4, 5, 6])
    t1, m1 = build_pack(ms, torch.float32)
    t2, _ = build_pack(ms, torch.float32)
    alone = [build_pack([m], torch.float32) for m in ms]
    for step in range(4):
        b1, b2 = t1.batch(step), t2.batch(step)
        for a, b in zip(b1, b2):
            assert torch.equal(a, b)
        for e, (ta, _) in enumerate(alone):
            for a, b in zip(b1, ta.batch(step)):
                assert torch.equal(a[e], b[0])
    assert not torch.equal(b1[0][0], b1[0][1])                                   # members differ
    assert torch.equal(t1.eval_xs, t2.eval_xs) and torch.equal(t1.eval_ys, t2.eval_ys)
    ev = t1.evaluate(m1)
    for e, (ta, ma) in enumerate(alone):
        assert torch.equal(t1.eval_xs[e], ta.eval_xs[0])
        with torch.no_grad():                                                    # the pack's weights for member e
            for p, q in zip(m1.parameters(), ma.parameters()):
                q.copy_(p[e:e + 1])
        ev_a = ta.evaluate(ma)
        assert ev.keys() == ev_a.keys()
        for k in ev:
            torch.testing.assert_close(ev[k][e], ev_a[k][0], rtol=1e-5, atol=1e-6)
    t3, _ = build_pack(members([7, 8, 9]), torch.float32)
    assert not torch.equal(t3.batch(0)[0], t2.batch(0)[0])
    assert not torch.equal(t3.eval_xs, t1.eval_xs)


def test_loss_is_hand_mse_at_x_tokens():
    E, B, K = 2, 3, 4
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(E, B, 2 * K, 1, generator=g)
    y = torch.randn(E, B, K, generator=g)
    w = torch.tensor([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]])
    from ftcore.tasks.icl_regression import IclRegression
    got = IclRegression.loss(pred, y, w)
    want = torch.zeros(E)
    for e in range(E):
        for b in range(B):
            want[e] += w[e, b] * sum((pred[e, b, 2 * k, 0] - y[e, b, k]) ** 2 for k in range(K)) / K
    torch.testing.assert_close(got, want)
    pred2 = pred.clone()
    pred2[..., 1::2, 0] += 100.0                                                # y-token outputs are ignored
    torch.testing.assert_close(IclRegression.loss(pred2, y, w), want)


@pytest.mark.parametrize("function", ["linear", "sparse_linear", "decision_tree"])
def test_baselines_and_zero_model(function):
    ms = members([3, 4], function=function, sparsity=2)
    task, _ = build_pack(ms, torch.float32)
    zero = task.evaluate(lambda x: torch.zeros(*x.shape[:-1], 1))
    norm = error_normalizer(function, 4, 2)
    for e, m in enumerate(ms):
        from ftcore.seeding import member_generator
        xs, ys = sample_prompts(m.task, member_generator(m.seed, "eval"), 32, 9, None)
        assert torch.equal(xs, task.eval_xs[e]) and torch.equal(ys, task.eval_ys[e])
        for name in ("least_squares", "knn", "averaging"):
            want = (BASELINES[name](xs, ys) - ys).pow(2).mean(0) / norm               # (K,)
            got = torch.stack([zero[k][e] for k in position_keys(f"nse/{name}", 9)])
            torch.testing.assert_close(got, want)
            torch.testing.assert_close(zero[f"nse/{name}/mean"][e], want.mean())
        want0 = ys.pow(2).mean(0) / norm                                          # the zero predictor
        got0 = torch.stack([zero[k][e] for k in position_keys("nse/model", 9)])
        torch.testing.assert_close(got0, want0)
        torch.testing.assert_close(zero["val/mse"][e], ys.pow(2).mean())
    if function == "linear":     # least squares is exact once k >= d
        assert float(zero["nse/least_squares/k08"].max()) < 1e-6
        assert float(zero["nse/least_squares/k02"].min()) > 1e-3


def test_bad_config_messages():
    with pytest.raises(ValueError, match="task.function"):
        IclRegressionConfig(function="cubic")
    with pytest.raises(ValueError, match="task.dims_start"):
        IclRegressionConfig(dim=4, dims_interval=10)                            # dims_start 5 > dim 4
    IclRegressionConfig(dim=4)                                                  # no curriculum: start unused
    with pytest.raises(ValueError, match="task.sparsity"):
        IclRegressionConfig(function="sparse_linear", dims_start=2, dims_interval=5, sparsity=3)
    with pytest.raises(ValueError, match="n_positions"):
        members([0], n_points=40)                                               # 80 tokens > 64 positions


def test_training_lowers_model_error():
    """Tiny GPT-2 (16/1/2), d=4, K=9, no curriculum: the model sits on the zero-predictor plateau (nse ≈ 1)
    for several hundred steps, then starts to learn in context; 1500 steps at lr 1e-3 get clearly below it."""
    train = {"steps": 1500, "lr": 1e-3, "eval_every": 1500, "schedule": "constant"}
    res = ftcore.fit(members([0, 1], train=train, dims_interval=0, points_interval=0, batch_size=64, n_eval=128))
    for r in res:
        assert r.status == "ok"
        first, last = r.curve[0]["nse/model/mean"], r.curve[-1]["nse/model/mean"]
        assert last < 0.9 * first, (first, last)
        assert r.curve[0]["nse/least_squares/mean"] == r.curve[-1]["nse/least_squares/mean"]
