"""Tests for the exact LoRA construction of Zeng & Lee (ICLR 2024), ftcore/tasks/lora_construction.py."""

import statistics

import pytest
import torch

from ftcore.tasks.lora_construction import construct, group_layers, threshold_rank

DT = torch.float64



def _net(gen, E, D, depth, bias):
    """Random FNN initialised like nn.Linear: U(±1/√D) for weights and biases."""
    bound = 1.0 / D**0.5
    W = [(torch.rand(E, D, D, generator=gen, dtype=DT) * 2 - 1) * bound for _ in range(depth)]
    b = [(torch.rand(E, D, generator=gen, dtype=DT) * 2 - 1) * bound for _ in range(depth)] if bias else None
    return W, b


def _forward(x, W, b, act, last_activation, downs=None, ups=None):
    """h = act(h @ W + b), member-batched; x is (N, D) shared by all members."""
    E = W[0].shape[0]
    h = x.to(DT).unsqueeze(0).expand(E, -1, -1)
    L = len(W)
    for l in range(L):
        w = W[l] if downs is None else W[l] + downs[l] @ ups[l]
        h = h @ w
        if b is not None:
            h = h + b[l].unsqueeze(1)
        if act == "relu" and (l < L - 1 or last_activation):
            h = torch.relu(h)
    return h


def _setup(seed, E, D, L, L_bar, act, bias):
    gen = torch.Generator().manual_seed(seed)
    W, b = _net(gen, E, D, L, bias)
    Wt, bt = _net(gen, E, D, L_bar, bias)
    x_calib = torch.randn(256, D, generator=gen, dtype=DT)
    x_test = torch.randn(2000, D, generator=gen, dtype=DT)
    return W, b, Wt, bt, x_calib, x_test


def _errors(W, b, Wt, bt, x_calib, x_test, R, act, last):
    downs, ups, nb = construct(W, b, Wt, bt, R, act, last, x_calib)
    y_t = _forward(x_test, Wt, bt, act, last)
    y_a = _forward(x_test, W, nb, act, last, downs, ups)
    y_f = _forward(x_test, W, b, act, last)
    rel_max = ((y_a - y_t).abs().max() / y_t.abs().max()).item()
    mse = ((y_a - y_t) ** 2).mean().item()
    mse0 = ((y_f - y_t) ** 2).mean().item()
    return rel_max, mse, mse0, (downs, ups, nb)


CASES = [(8, 2, 1), (16, 4, 2), (6, 3, 1), (5, 4, 2), (7, 5, 2), (4, 3, 2)]
MODES = [("relu", True), ("identity", False)]  # (activation, bias)


@pytest.mark.parametrize("last", [True, False])
@pytest.mark.parametrize("act,bias", MODES)
@pytest.mark.parametrize("D,L,L_bar", CASES)
def test_exact_at_threshold_and_not_below(D, L, L_bar, act, bias, last):
    E = 2
    W, b, Wt, bt, xc, xt = _setup(1000 * D + 10 * L + L_bar, E, D, L, L_bar, act, bias)
    thr = threshold_rank(D, L, L_bar)
    for R in (thr, thr + 1, D + 2):
        rel_max, _, _, (downs, ups, nb) = _errors(W, b, Wt, bt, xc, xt, R, act, last)
        assert rel_max < 1e-8, (R, rel_max)
        assert all(d.shape == (E, D, R) and d.dtype == DT for d in downs)
        assert all(u.shape == (E, R, D) and u.dtype == DT for u in ups)
        if bias:
            assert all(v.shape == (E, D) and v.dtype == DT for v in nb)
        else:
            assert nb is None
    rel_max, mse, mse0, _ = _errors(W, b, Wt, bt, xc, xt, thr - 1, act, last)
    if act == "identity":
        assert mse / mse0 > 1e-4, (mse, mse0)
    else:
        assert rel_max > 1e-6, rel_max


def test_identity_with_bias_exact():
    for D, L, L_bar in [(6, 3, 1), (7, 5, 2), (5, 4, 2)]:
        W, b, Wt, bt, xc, xt = _setup(7, 3, D, L, L_bar, "identity", True)
        rel_max, _, _, (_, _, nb) = _errors(W, b, Wt, bt, None, xt, threshold_rank(D, L, L_bar), "identity", True)
        assert rel_max < 1e-10
        # intermediate frozen biases are kept: only group-final biases are tuned
        for grp in group_layers(L, L_bar):
            for l in grp[:-1]:
                assert torch.equal(nb[l], b[l])


def test_linear_tail_formula():
    """L̄=1, L=2, identity, no bias: error = Σ_{i>2R} σ_i(E)² / D (Eckart–Young optimum)."""
    D, E = 16, 5
    gen = torch.Generator().manual_seed(0)
    W, _ = _net(gen, E, D, 2, False)
    Wt, _ = _net(gen, E, D, 1, False)
    x = torch.randn(20000, D, generator=gen, dtype=DT)
    sig = torch.linalg.svdvals(Wt[0] - W[0] @ W[1])  # (E, D)
    y_t = _forward(x, Wt, None, "identity", True)
    medians = {}
    for R in range(0, 8):
        downs, ups, nb = construct(W, None, Wt, None, R, "identity", True, None)
        assert nb is None
        Wa = (W[0] + downs[0] @ ups[0]) @ (W[1] + downs[1] @ ups[1])
        tail = (sig[:, 2 * R:] ** 2).sum(-1) / D  # (E,)
        # deterministic: Frobenius residual equals the tail exactly
        fro = ((Wa - Wt[0]) ** 2).sum((1, 2)) / D
        torch.testing.assert_close(fro, tail, rtol=1e-9, atol=1e-12)
        # Monte Carlo over Gaussian inputs within 10%
        mse = ((_forward(x, W, None, "identity", True, downs, ups) - y_t) ** 2).mean((1, 2))
        assert torch.all((mse - tail).abs() <= 0.1 * tail), (R, mse, tail)
        medians[R] = statistics.median(tail.tolist())
    # calibration (papers.md §2c, default init, median of 5 draws): R=0 ≈ 0.458, R=4 ≈ 0.043 (±0.015)
    assert 0.35 < medians[0] < 0.55, medians
    assert 0.028 < medians[4] < 0.058, medians
    # the error is monotone in R
    assert all(medians[r + 1] <= medians[r] for r in range(7))


def test_relu_calibration_numbers():
    """ReLU + bias, D=16, L̄=2, L=4, last activation (papers.md §2c [calib], median of 5 seeds):
    R=0: 0.0215, R=4: 0.0061, R=6: 0.0008, R=8: exact."""
    med = {}
    for R in (0, 4, 6, 8):
        rel = []
        for s in range(5):
            W, b, Wt, bt, xc, xt = _setup(s, 1, 16, 4, 2, "relu", True)
            _, mse, mse0, _ = _errors(W, b, Wt, bt, xc, xt, R, "relu", True)
            rel.append(mse)
        med[R] = statistics.median(rel)
    assert 0.012 < med[0] < 0.035, med
    assert 0.003 < med[4] < 0.012, med
    assert 1e-4 < med[6] < 3e-3, med
    assert med[8] < 1e-18, med


def test_rank_zero_bias_only():
    D, L, L_bar, E = 6, 4, 2, 2
    W, b, Wt, bt, xc, xt = _setup(3, E, D, L, L_bar, "relu", True)
    downs, ups, nb = construct(W, b, Wt, bt, 0, "relu", True, xc)
    assert all(d.shape == (E, D, 0) for d in downs) and all(u.shape == (E, 0, D) for u in ups)
    assert len(nb) == L and all(v.shape == (E, D) for v in nb)
    # single-layer groups at R >= D: ΔW = W̄ − W and b' = b̄
    W, b, Wt, bt, xc, xt = _setup(4, E, D, 2, 2, "relu", True)
    downs, ups, nb = construct(W, b, Wt, bt, D, "relu", True, xc)
    for l in range(2):
        torch.testing.assert_close(W[l] + downs[l] @ ups[l], Wt[l], rtol=0, atol=1e-12)
        torch.testing.assert_close(nb[l], bt[l], rtol=0, atol=1e-14)


def test_relu_intermediate_bias_is_large_constant():
    D, L, L_bar, E = 5, 4, 1, 1
    W, b, Wt, bt, xc, xt = _setup(5, E, D, L, L_bar, "relu", True)
    downs, ups, nb = construct(W, b, Wt, bt, threshold_rank(D, L, L_bar), "relu", True, xc)
    # layer 0's bias is c_0 = (100·max|x @ W'_0| + 1)·1
    z = xc @ (W[0] + downs[0] @ ups[0])[0]
    c0 = 100 * z.abs().max() + 1
    torch.testing.assert_close(nb[0][0], c0.expand(D), rtol=1e-12, atol=0)
    # pre-activations of intermediate layers are positive even on inputs 10x wider than the calibration set
    x = 10 * torch.randn(2000, D, dtype=DT, generator=torch.Generator().manual_seed(9))
    h = x
    for l in range(L - 1):
        h = h @ (W[l] + downs[l] @ ups[l])[0] + nb[l][0]
        assert (h > 0).all()


def test_table_threshold_and_groups():
    assert threshold_rank(16, 2, 1) == 8
    assert threshold_rank(16, 4, 2) == 8
    assert threshold_rank(16, 8, 1) == 2
    assert threshold_rank(8, 2, 1) == 4
    assert threshold_rank(6, 3, 1) == 2
    assert threshold_rank(5, 4, 2) == 3
    assert threshold_rank(7, 5, 2) == 4  # ⌈7/2⌉, smallest group has 2 layers
    assert threshold_rank(4, 3, 2) == 4  # smallest group has 1 layer
    assert threshold_rank(16, 1, 1) == 16
    assert threshold_rank(10, 3, 2) == 10
    assert group_layers(4, 2) == [[0, 1], [2, 3]]
    assert group_layers(5, 2) == [[0, 1], [2, 3, 4]]
    assert group_layers(3, 2) == [[0], [1, 2]]
    assert group_layers(7, 3) == [[0, 1], [2, 3], [4, 5, 6]]
    assert group_layers(3, 3) == [[0], [1], [2]]
    assert group_layers(2, 1) == [[0, 1]]


def test_value_errors():
    with pytest.raises(ValueError):
        threshold_rank(8, 2, 3)
    with pytest.raises(ValueError):
        group_layers(2, 3)
    W, b, Wt, bt, xc, _ = _setup(0, 1, 4, 2, 1, "relu", True)
    with pytest.raises(ValueError):  # L̄ > L
        construct(Wt, bt, W, b, 4, "relu", True, xc)
    with pytest.raises(ValueError):  # relu without bias
        construct(W, None, Wt, None, 4, "relu", True, xc)
    with pytest.raises(ValueError):  # negative rank
        construct(W, b, Wt, bt, -1, "relu", True, xc)
    with pytest.raises(ValueError):
        construct(W, b, Wt, bt, 2, "tanh", True, xc)
    with pytest.raises(ValueError):  # relu needs calibration inputs
        construct(W, b, Wt, bt, 2, "relu", True, None)


@pytest.mark.parametrize("act,bias", MODES)
def test_members_independent(act, bias):
    E, D, L, L_bar = 3, 7, 5, 2
    W, b, Wt, bt, xc, _ = _setup(11, E, D, L, L_bar, act, bias)
    R = threshold_rank(D, L, L_bar) - 1
    pack = construct(W, b, Wt, bt, R, act, True, xc)
    for e in range(E):
        def sl(ts, e=e):
            return None if ts is None else [t[e:e + 1] for t in ts]

        one = construct(sl(W), sl(b), sl(Wt), sl(bt), R, act, True, xc)
        for l in range(L):
            torch.testing.assert_close(pack[0][l][e:e + 1] @ pack[1][l][e:e + 1], one[0][l] @ one[1][l],
                                       rtol=1e-10, atol=1e-12)
            if bias:
                torch.testing.assert_close(pack[2][l][e:e + 1], one[2][l], rtol=1e-10, atol=1e-12)
    # per-member calibration inputs (E, N, D) are accepted too
    xce = xc.unsqueeze(0).expand(E, -1, -1)
    pack2 = construct(W, b, Wt, bt, R, act, True, xce)
    for l in range(L):
        torch.testing.assert_close(pack2[0][l] @ pack2[1][l], pack[0][l] @ pack[1][l], rtol=1e-12, atol=1e-14)


def test_float32_inputs_cast():
    W, b, Wt, bt, xc, xt = _setup(2, 2, 8, 2, 1, "relu", True)
    f32 = lambda ts: [t.float() for t in ts]  # noqa: E731
    downs, ups, nb = construct(f32(W), f32(b), f32(Wt), f32(bt), 4, "relu", True, xc.float())
    assert downs[0].dtype == ups[0].dtype == nb[0].dtype == DT
    f64 = lambda ts: [t.double() for t in ts]  # noqa: E731
    y_t = _forward(xt, f64(f32(Wt)), f64(f32(bt)), "relu", True)
    y_a = _forward(xt, [w.double() for w in f32(W)], nb, "relu", True, downs, ups)
    assert ((y_a - y_t).abs().max() / y_t.abs().max()).item() < 1e-8
