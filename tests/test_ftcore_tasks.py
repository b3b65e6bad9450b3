"""Contract over every registered task (DESIGN.md §3, §5; dtsip `get_task_sampler`, minGPT adder).

Every task: batch shapes (E, B, in) / (E, B, out) / (E, B) with weights summing to 1 per member; the same
seeds give the same data and base, other seeds other data; a member's data do not depend on the pack it is
in; `evaluate` returns (E,) tensors with slash names. Then the task-specific facts of ftc_relabel and
lora_teacher. A newly registered task fails `test_table_covers_registry` until it gets a row here.
"""

import math

import pytest
import torch

import ftcore
from ftcore.fit import build_pack

TASK_CASES = {   # name -> small member config, and a per-member field varied across the pack (or None)
    "ftc_relabel": {"model": {"name": "mlp", "width": 6, "depth": 2},
                    "adapter": {"name": "additive_relu", "width": 4},
                    "task": {"name": "ftc_relabel", "dim": 3, "n": 4},
                    "vary": ("n", [3, 8, 5])},
    "lora_teacher": {"model": {"name": "mlp", "width": 4, "depth": 2},
                     "adapter": {"name": "lora", "rank": 2},
                     "task": {"name": "lora_teacher", "batch_size": 16, "n_val": 32, "n_test": 48},
                     "vary": None},
    "icl_regression": {"model": {"name": "transformer", "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 64},
                       "adapter": {"name": "full"},
                       "task": {"name": "icl_regression", "dim": 4, "n_points": 9, "batch_size": 8, "n_eval": 16,
                                "dims_start": 2, "dims_interval": 2, "points_start": 5, "points_interval": 2},
                       "vary": None},
    "sparse_parity": {"model": {"name": "mamba", "n_embd": 16, "n_layer": 1, "d_state": 4},
                      "adapter": {"name": "full"},
                      "task": {"name": "sparse_parity", "n": 5, "k": 2, "n_points": 6, "batch_size": 8, "n_eval": 16},
                      "vary": None},
    "mqar": {"model": {"name": "hybrid", "n_embd": 16, "n_layer": 2, "n_head": 2, "d_state": 4, "n_positions": 16},
             "adapter": {"name": "full"},
             "task": {"name": "mqar", "n_pairs": 4, "dim": 6, "batch_size": 8, "n_eval": 16},
             "vary": None},
    "kv_retrieval": {"model": {"name": "transformer", "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 64},
                     "adapter": {"name": "full"},
                     "task": {"name": "kv_retrieval", "n_dicts": 3, "gold_dict_size": 1, "dict_size_min": 1,
                              "dict_size_max": 2, "key_digits_max": 3, "batch_size": 8, "n_eval": 12},
                     "vary": None},
    "lm_text": {"model": {"name": "transformer", "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 160},
                "adapter": {"name": "full"},
                "task": {"name": "lm_text", "docs_max": 2, "facts_max": 2, "batch_size": 4, "n_eval": 6},
                "vary": None},
    "needles_finetune": {"model": {"name": "transformer", "n_embd": 16, "n_layer": 1, "n_head": 2,
                                   "n_positions": 160},
                         "adapter": {"name": "full"},
                         "task": {"name": "needles_finetune", "n_dicts": 3, "mdqa_docs": 3, "n_eval": 6,
                                  "n_eval_kv": 6, "n_retain": 4, "docs_max": 2, "batch_size": 4},
                         "vary": None},
    "dual_modes": {"model": {"name": "transformer", "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 16},
                   "adapter": {"name": "full"},
                   "task": {"name": "dual_modes", "dim": 2, "n_points": 6, "batch_size": 8, "n_eval": 16,
                            "long_k": 64},
                   "vary": None},
    "t2i_icl": {"model": {"name": "transformer", "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 8},
                "adapter": {"name": "full"},
                "task": {"name": "t2i_icl", "k_max": 3, "cot": True, "batch_size": 4, "n_eval": 8},
                "vary": None},
    "contrastive": {"model": {"name": "embeddings"}, "adapter": {"name": "full"},
                    "task": {"name": "contrastive", "n": 16, "dim": 8, "batch_size": 4}, "vary": None},
    "feature_retrieval": {"model": {"name": "mlp", "width": 16, "depth": 2, "last_activation": False},
                          "adapter": {"name": "full"},
                          "task": {"name": "feature_retrieval", "n": 32, "hash_dim": 64, "dim": 8, "batch_size": 8},
                          "vary": None},
    "digits_contrastive": {"model": {"name": "mlp", "width": 16, "depth": 2, "last_activation": False},
                           "adapter": {"name": "full"},
                           "task": {"name": "digits_contrastive", "n": 32, "n_test": 16, "dim": 8, "batch_size": 8},
                           "vary": None},
    "criterion_clustering": {"model": {"name": "mlp", "width": 8, "depth": 2, "last_activation": False},
                             "adapter": {"name": "full"},
                             "task": {"name": "criterion_clustering", "side": 8, "batch_size": 8, "n_eval": 32,
                                      "kmeans_init": 1},
                             "vary": ("n_clusters", [2, 3, 5])},
}
SEEDS = [10, 11, 12]



def members(name, seeds=SEEDS, **task_over):
    case = TASK_CASES[name]
    out = []
    for e, seed in enumerate(seeds):
        task = dict(case["task"])
        if case["vary"] is not None:
            fld, values = case["vary"]
            task[fld] = values[e % len(values)]
        task.update(task_over)
        out.append(ftcore.member_from_dict({"model": case["model"], "adapter": case["adapter"],
                                            "task": task, "seed": seed}))
    return out


def batches(task, n=2):
    return [task.batch(step) for step in range(n)]


TASKS = list(TASK_CASES)


def test_table_covers_registry():
    assert set(TASK_CASES) == set(ftcore.TASKS)
    for name, case in TASK_CASES.items():
        if case["vary"] is not None:
            assert case["vary"][0] in ftcore.TASKS[name].Config.per_member


@pytest.mark.parametrize("name", TASKS)
def test_batch_shapes_and_weights(name):
    ms = members(name)
    task, model = build_pack(ms, torch.float32)
    in_dim, out_dim = task.io_dims(ms[0].task, ms[0].model)
    rows = max(type(task).rows(m.task) for m in ms)
    for x, y, w in batches(task):
        assert x.shape[:2] == y.shape[:2] == w.shape == (3, rows) and x.shape[-1] == in_dim
        if ms[0].model.name == "mlp":        # sequence tasks add a position axis: x (E, B, T, in), y per position
            assert x.shape == (3, rows, in_dim) and y.shape == (3, rows, out_dim)
        assert x.dtype == y.dtype == w.dtype == torch.float32
        assert bool((w >= 0).all())
        torch.testing.assert_close(w.sum(1), torch.ones(3))
        assert bool(task.loss(model(x), y, w).isfinite().all())
        assert task.loss(model(x), y, w).shape == (3,)


@pytest.mark.parametrize("name", TASKS)
def test_same_seeds_same_data_and_base(name):
    t1, m1 = build_pack(members(name), torch.float32)
    t2, m2 = build_pack(members(name), torch.float32)
    for b1, b2 in zip(batches(t1, 3), batches(t2, 3)):
        for a, b in zip(b1, b2):
            assert torch.equal(a, b)
    for p, q in zip(m1.base.parameters(), m2.base.parameters()):
        assert torch.equal(p, q)
    e1, e2 = t1.evaluate(m1), t2.evaluate(m2)
    assert e1.keys() == e2.keys()
    for k in e1:
        assert torch.equal(e1[k], e2[k]), k


@pytest.mark.parametrize("name", TASKS)
def test_other_seeds_other_data_and_base(name):
    t1, m1 = build_pack(members(name), torch.float32)
    t2, m2 = build_pack(members(name, seeds=[s + 100 for s in SEEDS]), torch.float32)
    (x1, y1, _), (x2, y2, _) = t1.batch(0), t2.batch(0)
    for e in range(3):
        assert not torch.equal(x1[e], x2[e]) and not torch.equal(y1[e], y2[e])
        assert not torch.equal(next(m1.base.parameters())[e], next(m2.base.parameters())[e])
    # and the members of one pack differ from each other
    w1 = next(m1.base.parameters())
    assert not torch.equal(x1[0], x1[1]) and not torch.equal(w1[0], w1[1])


@pytest.mark.parametrize("e", [0, 1, 2])
@pytest.mark.parametrize("name", TASKS)
def test_member_data_independent_of_pack(name, e):
    ms = members(name)
    task, model = build_pack(ms, torch.float32)
    a_task, a_model = build_pack([ms[e]], torch.float32)
    for (x, y, w), (ax, ay, aw) in zip(batches(task, 3), batches(a_task, 3)):
        n = ax.shape[1]
        assert torch.equal(x[e, :n], ax[0]) and torch.equal(w[e, :n], aw[0])
        assert bool((w[e, n:] == 0).all()), "padding rows must weigh 0"
        torch.testing.assert_close(y[e, :n], ay[0], rtol=1e-6, atol=1e-7)   # through the base: BLAS rounding
    for p, q in zip(model.base.parameters(), a_model.base.parameters()):
        assert torch.equal(p[e], q[0])
    ev, a_ev = task.evaluate(model), a_task.evaluate(a_model)
    for k in a_ev:
        torch.testing.assert_close(ev[k][e], a_ev[k][0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", TASKS)
def test_evaluate_returns_member_vectors_with_slash_names(name):
    task, model = build_pack(members(name), torch.float32)
    ev = task.evaluate(model)
    assert ev
    for k, v in ev.items():
        assert "/" in k and k == k.strip() and " " not in k, k
        assert isinstance(v, torch.Tensor) and v.shape == (3,) and v.is_floating_point(), k
        assert not v.requires_grad
    if task.success_metric is not None:          # what fit() stops members on
        assert task.success_metric in ev
        assert set(ev[task.success_metric].tolist()) <= {0.0, 1.0}


# -- ftc_relabel ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels", ["gaussian", "rademacher"])
def test_ftc_exactly_n_relabelled_points(labels):
    ms = members("ftc_relabel", labels=labels)
    task, model = build_pack(ms, torch.float32)
    with torch.no_grad():
        fx = model.base(task.x)                                                 # the frozen f
    for e, m in enumerate(ms):
        k, n = m.task.k, m.task.n
        assert k == math.ceil(m.task.k_per_n * n)
        res = (task.y[e, :k] - fx[e, :k]).squeeze(-1)                          # (K,)
        changed = res != 0
        assert int(changed.sum()) == n
        assert torch.equal(task.y[e, :k][~changed], fx[e, :k][~changed])      # unchanged: label is f(x) exactly
        if labels == "rademacher":
            torch.testing.assert_close(res[changed].abs(), torch.ones(n), rtol=0, atol=1e-5)
        assert bool(task.valid[e, :k].all()) and not bool(task.valid[e, k:].any())


def test_ftc_k_resolution_and_explicit_k():
    (m,) = members("ftc_relabel", seeds=[0], n=5, k_per_n=1.5)
    assert m.task.k == 8
    task, _ = build_pack([m], torch.float32)
    assert task.batch(0)[0].shape[1] == 8
    (m,) = members("ftc_relabel", seeds=[0], n=5, k=7)
    assert m.task.k == 7


def test_ftc_success_is_max_err_below_tol():
    ms = members("ftc_relabel", tol=0.1)
    task, _ = build_pack(ms, torch.float32)
    y = task.y.clone()
    valid = task.valid

    def oracle(delta_real, delta_pad=1e3):
        """A model output = labels + delta on real rows, garbage on padding rows (must be ignored)."""
        return lambda x: torch.where(valid.unsqueeze(-1), y + delta_real, y + delta_pad)

    delta = torch.zeros_like(y)
    delta[0, 1] = 0.05       # within tol
    delta[1, 2] = -0.2       # outside tol
    delta[2, 0] = 0.0999     # just within
    ev = task.evaluate(oracle(delta))
    torch.testing.assert_close(ev["fit/max_err"], torch.tensor([0.05, 0.2, 0.0999]), rtol=1e-5, atol=1e-6)
    assert ev["fit/success"].tolist() == [1.0, 0.0, 1.0]
    assert torch.equal(ev["fit/success"], (ev["fit/max_err"] < 0.1).float())
    bad = delta.clone()
    bad[1, 0] = float("inf")
    ev = task.evaluate(oracle(bad))
    assert math.isnan(ev["fit/max_err"][1]) and ev["fit/success"][1] == 0.0
    assert ev["fit/success"][0] == 1.0


def test_ftc_success_consistent_along_a_fit():
    ms = [ftcore.member_from_dict({"model": TASK_CASES["ftc_relabel"]["model"],
                                   "adapter": {"name": "additive_relu", "width": w},
                                   "task": {"name": "ftc_relabel", "dim": 3, "n": 4, "tol": 0.2},
                                   "train": {"steps": 150, "lr": 1e-2, "eval_every": 10, "early_stop": False},
                                   "seed": s}) for s, w in enumerate([1, 16])]
    for res in ftcore.fit(ms):
        assert res.curve
        for row in res.curve:
            assert row["fit/success"] == float(row["fit/max_err"] < 0.2)


# -- lora_teacher -----------------------------------------------------------------------------------------

def test_lora_teacher_relative_and_base_mse():
    ms = members("lora_teacher")
    task, model = build_pack(ms, torch.float32)
    with torch.no_grad():
        base_mse = (model.base(task.x_test) - task.target(task.x_test)).pow(2).mean((1, 2))
        ev = task.evaluate(model)
    torch.testing.assert_close(ev["test/mse_base"], base_mse)
    torch.testing.assert_close(ev["test/mse"], base_mse)                       # adapter at init == base
    target_var = task.y_test.var(1, unbiased=False).mean(1)                    # the MSE of predicting the mean
    torch.testing.assert_close(ev["test/target_var"], target_var)
    torch.testing.assert_close(ev["test/mse_rel"], ev["test/mse"] / target_var)
    zero = task.evaluate(lambda x: torch.zeros_like(x))                        # any model: mse against the target
    torch.testing.assert_close(zero["test/mse"], task.y_test.pow(2).mean((1, 2)))
    torch.testing.assert_close(zero["val/mse"], task.y_val.pow(2).mean((1, 2)))
    torch.testing.assert_close(zero["test/mse_rel"], zero["test/mse"] / target_var)
    mean = task.evaluate(lambda x: task.y_test.mean(1, keepdim=True).expand_as(x) if x.shape == task.x_test.shape
                         else torch.zeros_like(x))
    torch.testing.assert_close(mean["test/mse_rel"], torch.ones(3))            # predicting the mean: 1
    torch.testing.assert_close(zero["test/mse_base"], base_mse)                # mse_base never moves


def test_lora_teacher_fresh_batches_from_the_target():
    task, _ = build_pack(members("lora_teacher"), torch.float32)
    (x0, y0, _), (x1, y1, _) = batches(task)
    assert not torch.equal(x0, x1)                                              # infinite data: a new batch each step
    with torch.no_grad():
        assert torch.equal(y1, task.target(x1))


def test_lora_teacher_pretraining_lowers_base_error():
    """pretrained=True: Adam on the target until the val MSE < initial / pretrain_level, member by member.
    (D=8: at D=4 a ReLU output unit of the base is often dead and the level is out of reach.)"""
    def pack(seeds, pretrained):
        return build_pack([ftcore.member_from_dict({
            "model": {"name": "mlp", "width": 8, "depth": 2}, "adapter": {"name": "lora", "rank": 2},
            "task": {"name": "lora_teacher", "batch_size": 32, "n_val": 64, "n_test": 64, "pretrained": pretrained,
                     "pretrain_lr": 3e-2, "pretrain_max_steps": 500}, "seed": s}) for s in seeds], torch.float32)

    plain, plain_model = pack([1, 2, 3], False)
    pre, pre_model = pack([1, 2, 3], True)
    assert torch.equal(plain.x_val, pre.x_val) and torch.equal(plain.y_val, pre.y_val)
    with torch.no_grad():
        init_val = (plain_model.base(plain.x_val) - plain.y_val).pow(2).mean((1, 2))
        pre_val = (pre_model.base(pre.x_val) - pre.y_val).pow(2).mean((1, 2))
    assert bool((pre_val < init_val / 3.0).all()), (pre_val, init_val)          # pretrain_level default 3
    assert bool((pre.base_mse < plain.base_mse).all())
    torch.testing.assert_close(pre.evaluate(pre_model)["test/mse_base"], pre.base_mse)
    assert not any(p.requires_grad for p in pre_model.base.parameters())
    # a pretrained member is the same alone as in its pack (it stops on its own criterion)
    _, alone_model = pack([2], True)
    for p, q in zip(pre_model.base.parameters(), alone_model.base.parameters()):
        torch.testing.assert_close(p[1], q[0], rtol=1e-5, atol=1e-6)
