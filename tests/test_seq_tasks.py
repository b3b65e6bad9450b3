"""The Park et al. sequence tasks (papers.md §5): `sparse_parity` and `mqar`.

Labels are checked by construction from the tokens the model sees (the support S is recovered by brute force;
the MQAR target is the token after the key equal to the query), the metrics on hand-built predictors whose
scores are known (an oracle scores 1, an anti-oracle 0, a blind predictor chance), and a tiny fit lowers the
loss. The shape/determinism contract is in test_ftcore_tasks.py (TASK_CASES).
"""
import itertools
import math

import pytest
import torch

import ftcore
from ftcore.fit import build_pack
from ftcore.tasks.sparse_parity import blind_bayes_correct, last_quarter

MAMBA = {"name": "mamba", "n_embd": 16, "n_layer": 1, "d_state": 4}


def member(task, model=MAMBA, seed=0, **train):
    return ftcore.member_from_dict({"model": model, "adapter": {"name": "full"}, "task": task,
                                    "train": train or {}, "seed": seed})


def parity_pack(seeds=(0, 1), **over):
    task = {"name": "sparse_parity", "n": 5, "k": 2, "n_points": 24, "batch_size": 6, "n_eval": 400, **over}
    return build_pack([member(task, seed=s) for s in seeds], torch.float32)


def mqar_pack(seeds=(0, 1), **over):
    task = {"name": "mqar", "n_pairs": 4, "dim": 6, "batch_size": 6, "n_eval": 2000, **over}
    return build_pack([member(task, seed=s) for s in seeds], torch.float32)


def consistent_supports(xs, ys, k):
    """All S, |S| = k, with Π_{j∈S} x_ij = y_i for every row i of xs (K, n), ys (K,)."""
    n = xs.shape[-1]
    return {S for S in itertools.combinations(range(n), k) if torch.equal(xs[:, list(S)].prod(-1), ys)}


# -- sparse parity ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shared", [True, False])
def test_parity_tokens_and_labels_by_construction(shared):
    task, _ = parity_pack(shared_support=shared)
    x, y, _ = task.batch(0)                                               # (E, B, 2K, n), (E, B, K)
    xs, ytok = x[..., 0::2, :], x[..., 1::2, :]                           # x_i and ỹ_i tokens
    assert set(xs.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(ytok[..., 0], y) and bool((ytok[..., 1:] == 0).all())   # ỹ = (y, 0, …, 0)
    for e in range(x.shape[0]):
        per_prompt = [consistent_supports(xs[e, b], y[e, b], 2) for b in range(x.shape[1])]
        assert all(len(s) >= 1 for s in per_prompt)                       # y is a 2-sparse parity of x
        common = set.intersection(*per_prompt)
        assert bool(common) == shared                                     # one S per batch iff shared (24 points)


def test_parity_eval_prompts_have_their_own_support():
    task, _ = parity_pack()
    xs, ys = task.eval_tokens[0, :40, 0::2], task.eval_ys[0, :40]
    supports = [consistent_supports(xs[p], ys[p], 2) for p in range(40)]
    assert all(len(s) == 1 for s in supports)                             # 24 points pin S down
    assert len({next(iter(s)) for s in supports}) > 3                     # …and S varies over prompts


def oracle_logits(scale_by_position=None):
    """A 'model' that copies the label token ỹ_i into the logit at x_i (it reads one token ahead)."""
    def model(tokens):                                                    # (E, P, 2K, n) -> (E, P, 2K, 1)
        out = torch.zeros(*tokens.shape[:-1], 1)
        y = tokens[..., 1::2, 0]                                          # (E, P, K)
        out[..., 0::2, 0] = y if scale_by_position is None else y * scale_by_position
        return out
    return model


def test_parity_metrics_on_known_predictors():
    task, _ = parity_pack()
    K = task.eval_ys.shape[-1]
    ev = task.evaluate(oracle_logits())
    for k in range(K):
        assert torch.equal(ev[f"acc/k{k:02d}"], torch.ones(2))
    assert torch.equal(ev["val/acc"], torch.ones(2)) and torch.equal(ev["acc/mean"], torch.ones(2))
    torch.testing.assert_close(ev["val/bce"], torch.full((2,), math.log1p(math.exp(-1))))   # BCE at logit ±1
    assert torch.equal(ev["val/acc/chance"], torch.full((2,), 0.5))
    # n = 5, k = 2: E_x max(p, 1 − p) = 0.625 exactly; 400 × 24 eval draws (sd ≈ 0.005)
    assert bool(((ev["acc/blind_bayes"] - 0.625).abs() < 0.02).all()), ev["acc/blind_bayes"]
    assert torch.equal(ev["acc/blind_bayes"], task.evaluate(lambda t: t[..., :1])["acc/blind_bayes"])

    anti = task.evaluate(oracle_logits(-torch.ones(K)))
    assert torch.equal(anti["val/acc"], torch.zeros(2))

    # right only on the last quarter: acc/last = val/acc = 1, acc/mean = ⌈K/4⌉/K
    q = last_quarter(K)
    sign = torch.cat([-torch.ones(K - q), torch.ones(q)])
    part = task.evaluate(oracle_logits(sign))
    assert torch.equal(part["acc/last"], torch.ones(2)) and torch.equal(part["val/acc"], part["acc/last"])
    torch.testing.assert_close(part["acc/mean"], torch.full((2,), q / K))
    assert torch.equal(part[f"acc/k{K - q - 1:02d}"], torch.zeros(2))

    zero = task.evaluate(lambda t: torch.zeros(*t.shape[:-1], 1))         # logit 0: never right, BCE = log 2
    assert torch.equal(zero["val/acc"], torch.zeros(2))
    torch.testing.assert_close(zero["val/bce"], torch.full((2,), math.log(2)))
    blind = task.evaluate(lambda t: torch.ones(*t.shape[:-1], 1))          # always +1: chance, 400 × 24 draws
    assert bool(((blind["acc/mean"] - 0.5).abs() < 0.03).all()), blind["acc/mean"]


@pytest.mark.parametrize("n, k, want", [(4, 2, 0.625), (6, 2, 38 / 64), (5, 3, None)])
def test_blind_bayes_accuracy_by_enumeration(n, k, want):
    """Every x in {±1}^n and every support S: the blind predictor's mean correctness is E_x max(p, 1 − p) with
    p = share of supports whose parity of x is +1 (brute force), 0.625 for n = 4, k = 2."""
    xs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=n)))                # (2^n, n)
    supports = list(itertools.combinations(range(n), k))
    ys = torch.stack([xs[:, list(S)].prod(-1) for S in supports], 1)                 # (2^n, |supports|)
    got = blind_bayes_correct(xs[:, None, :].expand(-1, len(supports), -1), ys, k)
    p = (ys > 0).double().mean(1)                                                    # (2^n,)
    expected = torch.where(p == 0.5, 0.5, torch.maximum(p, 1 - p)).mean()
    torch.testing.assert_close(got.double().mean(), expected)
    if want is not None:
        assert abs(float(expected) - want) < 1e-12


def test_parity_loss_is_bce_on_sigmoid():
    pred = torch.tensor([[[[2.0], [9.0], [-1.0], [9.0]]]])               # (1, 1, 2K=4, 1): logits 2, −1 at x
    y = torch.tensor([[[1.0, 1.0]]])                                       # (1, 1, 2)
    w = torch.ones(1, 1)
    want = (-math.log(torch.sigmoid(torch.tensor(2.0))) - math.log(torch.sigmoid(torch.tensor(-1.0)))) / 2
    torch.testing.assert_close(type(parity_pack()[0]).loss(pred, y, w), torch.tensor([want]))


def test_parity_config_mistakes():
    with pytest.raises(ValueError, match="task.k"):
        member({"name": "sparse_parity", "n": 3, "k": 4})
    with pytest.raises(ValueError, match="model.n_positions"):
        member({"name": "sparse_parity", "n_points": 20},
               model={"name": "transformer", "n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 39})
    member({"name": "sparse_parity", "n_points": 20},
           model={"name": "transformer", "n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 40})


# -- MQAR -------------------------------------------------------------------------------------------------

def test_mqar_target_is_the_value_after_the_queried_key():
    task, _ = mqar_pack()
    x, y, _ = task.batch(0)                                                # (E, B, 2n+1, d), (E, B, d)
    n = 4
    keys, values, q = x[..., 0:2 * n:2, :], x[..., 1:2 * n:2, :], x[..., -1, :]
    torch.testing.assert_close(x.norm(dim=-1), torch.full(x.shape[:-1], 6 ** 0.5))
    hit = (keys == q[..., None, :]).all(-1)                                # (E, B, n): q is a copy of one key
    assert bool((hit.sum(-1) == 1).all())
    assert torch.equal(y, values[hit].view_as(y))
    assert y.shape == (2, 6, 6)


def oracle_mqar(tokens):
    """Reads the prompt: the value token after the key equal to the query (E, P, 2n+1, d) -> same shape."""
    keys, values, q = tokens[..., 0:-1:2, :], tokens[..., 1:-1:2, :], tokens[..., -1, :]
    j = torch.einsum("epnd,epd->epn", keys, q).argmax(-1)                  # (E, P)
    out = torch.zeros_like(tokens)
    out[..., -1, :] = values.gather(2, j[..., None, None].expand(-1, -1, 1, values.shape[-1]))[..., 0, :]
    return out


def test_mqar_metrics_on_known_predictors():
    task, _ = mqar_pack()
    ev = task.evaluate(oracle_mqar)
    assert torch.equal(ev["mqar/error"], torch.zeros(2)) and torch.equal(ev["val/acc"], torch.ones(2))
    assert torch.equal(ev["val/mse"], torch.zeros(2))
    assert torch.equal(ev["val/acc/chance"], torch.full((2,), 0.25))

    # a slightly noisy oracle still retrieves; the value of the next pair never does
    noisy = task.evaluate(lambda t: oracle_mqar(t) + 0.1 * torch.ones_like(t))
    assert torch.equal(noisy["mqar/error"], torch.zeros(2))
    torch.testing.assert_close(noisy["val/mse"], torch.full((2,), 0.01))

    def wrong(tokens):                                                     # roll the values by one pair
        t = tokens.clone()
        t[..., 1:-1:2, :] = tokens[..., 1:-1:2, :].roll(1, dims=-2)
        return oracle_mqar(t)
    assert torch.equal(task.evaluate(wrong)["mqar/error"], torch.ones(2))

    c = torch.randn(6, generator=torch.Generator().manual_seed(3))          # blind: a fixed vector
    blind = task.evaluate(lambda t: c.expand_as(t).clone())
    assert bool(((blind["val/acc"] - 0.25).abs() < 0.04).all()), blind["val/acc"]   # 2000 prompts: sd ≈ 0.01
    torch.testing.assert_close(blind["val/acc"], 1 - blind["mqar/error"])


def test_mqar_config_mistakes():
    with pytest.raises(ValueError, match="task.n_pairs"):
        member({"name": "mqar", "n_pairs": 0})
    hybrid = {"name": "hybrid", "n_embd": 8, "n_layer": 2, "n_head": 2, "n_positions": 16}
    with pytest.raises(ValueError, match="model.n_positions"):
        member({"name": "mqar", "n_pairs": 8}, model=hybrid)                  # needs 17
    member({"name": "mqar", "n_pairs": 7}, model=hybrid)
    member({"name": "mqar", "n_pairs": 64}, model={"name": "mambaformer", "n_embd": 8, "n_layer": 2, "n_head": 2})


# -- training moves the loss ------------------------------------------------------------------------------

def test_tiny_fit_lowers_the_losses():
    """A 1-layer transformer, 150 Adam steps: MQAR's val MSE falls below the 'predict 0' level 1 (a model that
    averages the prompt's values gets (n−1)/n = 0.75), parity's val BCE below its value at step 0."""
    tf = {"name": "transformer", "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 16}
    train = {"steps": 150, "lr": 3e-3, "eval_every": 150, "early_stop": False}
    (res,) = ftcore.fit([member({"name": "mqar", "n_pairs": 4, "dim": 6, "batch_size": 32, "n_eval": 128},
                                model=tf, **train)])
    first, last = res.curve[0]["val/mse"], res.curve[-1]["val/mse"]
    assert res.status == "ok" and last < 0.9 < first, (first, last)
    (res,) = ftcore.fit([member({"name": "sparse_parity", "n": 3, "k": 1, "n_points": 8, "batch_size": 32,
                                 "n_eval": 128}, model=tf, **train)])
    first, last = res.curve[0]["val/bce"], res.curve[-1]["val/bce"]
    assert res.status == "ok" and last < first - 0.02, (first, last)
