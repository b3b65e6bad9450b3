"""Contract: PackedAdamW (ftcore/optim.py) is torch.optim.AdamW run per member, with per-member lr, weight
decay and global-norm clipping (torch.nn.utils.clip_grad_norm_), and leaves inactive members untouched.
(clip_grad_norm_ divides by norm + 1e-6, PackedAdamW by norm + 1e-12: a relative 1e-6/‖g‖ difference.)"""

import pytest
import torch

from ftcore.optim import PackedAdamW

SHAPES = [(4, 3), (3,), (2, 5, 2)]          # per-member parameter shapes (the packed ones get a leading E)
STEPS = 20
DT = torch.float64   # float64: a 1e-6 match is then a statement about the algorithm, not about float32 rounding



def problem(E, seed=0):
    """Packed params (E, ...) and a per-member loss whose gradient norm changes from step to step."""
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(E, *s, generator=g, dtype=DT) for s in SHAPES]
    targets = [torch.randn(E, *s, generator=g, dtype=DT) * 2 for s in SHAPES]
    scales = [torch.rand(E, *s, generator=g, dtype=DT) + 0.5 for s in SHAPES]

    def loss_e(params, e):
        """Member e's loss of its own slices (a quartic: gradient norms vary a lot along the run)."""
        return sum(((p - t[e]) ** 2 * c[e]).sum() + 0.1 * ((p - t[e]) ** 4).sum()
                   for p, t, c in zip(params, targets, scales))

    return init, loss_e


def run_packed(E, lr, wd, clip=None, steps=STEPS, active=None, nan_grad_for=None, eps=1e-8, betas=(0.9, 0.999)):
    init, loss_e = problem(E)
    params = [p.clone().requires_grad_(True) for p in init]
    opt = PackedAdamW(params, lr=lr, weight_decay=wd, betas=betas, eps=eps, grad_clip=clip)
    act = torch.ones(E, dtype=torch.bool) if active is None else active
    for _ in range(steps):
        opt.zero_grad()
        sum(loss_e([p[e] for p in params], e) for e in range(E)).backward()
        if nan_grad_for is not None:
            for p in params:
                p.grad[nan_grad_for] = float("nan")
        opt.step(act)
    return init, [p.detach() for p in params]


def run_torch(E, e, lr, wd, clip=0.0, steps=STEPS, eps=1e-8, betas=(0.9, 0.999)):
    """torch.optim.AdamW (+ clip_grad_norm_) on member e alone."""
    init, loss_e = problem(E)
    params = [p[e].clone().requires_grad_(True) for p in init]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas, eps=eps)
    for _ in range(steps):
        opt.zero_grad()
        loss_e(params, e).backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
    return [p.detach() for p in params]


def test_single_member_matches_torch_adamw():
    _, packed = run_packed(1, lr=[3e-2], wd=[0.1])
    ref = run_torch(1, 0, lr=3e-2, wd=0.1)
    for p, q in zip(packed, ref):
        torch.testing.assert_close(p[0], q, rtol=0, atol=1e-6)


def test_members_with_own_lr_and_wd_match_torch_adamw():
    lrs, wds = [1e-2, 5e-2, 2e-3], [0.0, 0.3, 0.01]
    init, packed = run_packed(3, lr=lrs, wd=wds, betas=(0.8, 0.99))
    for e in range(3):
        ref = run_torch(3, e, lr=lrs[e], wd=wds[e], betas=(0.8, 0.99))
        for p, q, p0 in zip(packed, ref, init):
            torch.testing.assert_close(p[e], q, rtol=0, atol=1e-6)
            assert not torch.equal(p[e], p0[e])


def test_lr_factor_scales_the_step():
    """step(active, lr_factor) == AdamW with lr * lr_factor (the schedule)."""
    init, loss_e = problem(1)
    params = [p.clone().requires_grad_(True) for p in init]
    opt = PackedAdamW(params, lr=[4e-2], weight_decay=[0.05])
    for _ in range(STEPS):
        opt.zero_grad()
        loss_e([p[0] for p in params], 0).backward()
        opt.step(torch.ones(1, dtype=torch.bool), lr_factor=0.25)
    ref = run_torch(1, 0, lr=1e-2, wd=0.05)          # as a torch LR scheduler: decay lr*wd scales too
    for p, q in zip(params, ref):
        torch.testing.assert_close(p.detach()[0], q, rtol=0, atol=1e-6)


@pytest.mark.parametrize("eps", [1e-8, 10.0])
def test_per_member_grad_clipping_matches_clip_grad_norm(eps):
    """Member 0 clipped hard, member 1 unclipped (0 = off), member 2 clipped loosely. With a large eps Adam is
    close to SGD, so the update is sensitive to the clipped gradient's size, not only its direction."""
    clips, wds = [0.5, 0.0, 5.0], [0.0, 0.0, 0.1]
    lrs = [lr * max(eps, 1.0) for lr in [1e-2, 2e-2, 1e-2]]                      # eps=10: lr/eps ~ an SGD step
    _, packed = run_packed(3, lr=lrs, wd=wds, clip=clips, eps=eps)
    _, unclipped = run_packed(3, lr=lrs, wd=wds, clip=None, eps=eps)
    for e in range(3):
        ref = run_torch(3, e, lr=lrs[e], wd=wds[e], clip=clips[e], eps=eps)
        for p, q in zip(packed, ref):
            torch.testing.assert_close(p[e], q, rtol=0, atol=1e-6)
    assert all(torch.equal(p[1], u[1]) for p, u in zip(packed, unclipped)), "clip 0 must be off"
    if eps > 1:
        assert not all(torch.allclose(p[0], u[0], atol=1e-4) for p, u in zip(packed, unclipped)), \
            "the test problem must make clipping matter"


def test_inactive_members_unchanged_even_with_nan_grads():
    active = torch.tensor([True, False, True])
    lrs, wds = [1e-2, 1e-2, 3e-2], [0.1, 0.1, 0.0]
    init, packed = run_packed(3, lr=lrs, wd=wds, clip=[1.0, 1.0, 1.0], active=active, nan_grad_for=1)
    for p, p0 in zip(packed, init):
        assert torch.equal(p[1], p0[1])                                          # bitwise unchanged
        assert bool(p.isfinite().all())                                          # no NaN leaks
    for e in (0, 2):                                                             # the others: as if alone
        ref = run_torch(3, e, lr=lrs[e], wd=wds[e], clip=1.0)
        for p, q in zip(packed, ref):
            torch.testing.assert_close(p[e], q, rtol=0, atol=1e-6)


def test_frozen_member_stays_frozen_while_others_train():
    """A member deactivated mid-run (early stop) keeps exactly its parameters from that step on."""
    init, loss_e = problem(2)
    params = [p.clone().requires_grad_(True) for p in init]
    opt = PackedAdamW(params, lr=[1e-2, 1e-2], weight_decay=[0.1, 0.1])
    active = torch.ones(2, dtype=torch.bool)
    for step in range(STEPS):
        if step == 5:
            active = torch.tensor([True, False])
            frozen = [p.detach()[1].clone() for p in params]
        opt.zero_grad()
        sum(loss_e([p[e] for p in params], e) for e in range(2)).backward()
        opt.step(active)
    assert all(torch.equal(p.detach()[1], f) for p, f in zip(params, frozen))
    ref = run_torch(2, 0, lr=1e-2, wd=0.1)
    for p, q in zip(params, ref):
        torch.testing.assert_close(p.detach()[0], q, rtol=0, atol=1e-6)


def run_steps(opt, params, loss_e, E, steps=STEPS):
    for _ in range(steps):
        opt.zero_grad()
        sum(loss_e([p[e] for p in params], e) for e in range(E)).backward()
        opt.step(torch.ones(E, dtype=torch.bool), 0.7)
    return [p.detach() for p in params]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("clips", [[0.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
def test_clipping_off_skips_the_norm_without_changing_a_bit(monkeypatch, optimizer, clips):
    """"Every clip is 0" is decided once at construction: then no gradient norm is computed in a step (the fused
    update gets max_norm=None) and the parameters are bit-identical to the norm path's with all-0 clips (scale 1).
    One clip > 0 keeps the norm path for the pack (members with clip 0 get scale 1 there)."""
    import ftcore.optim
    from ftcore.sgd import PackedSGD
    seen = []
    real = ftcore.optim.multi_adamw_

    def spy(*args, **kw):
        seen.append(args[9])                                                     # max_norm
        return real(*args, **kw)
    monkeypatch.setattr(ftcore.optim, "multi_adamw_", spy)
    init, loss_e = problem(3)

    def run(force_norm):
        params = [p.clone().requires_grad_(True) for p in init]
        opt = PackedAdamW(params, lr=[1e-2, 2e-2, 1e-2], weight_decay=[0.0, 0.1, 0.0], grad_clip=clips) \
            if optimizer == "adamw" else PackedSGD(params, lr=[1e-2, 2e-2, 1e-2], weight_decay=[0.0, 0.1, 0.0],
                                                   grad_clip=clips)
        assert opt.clipping == any(c > 0 for c in clips)
        opt.clipping = opt.clipping or force_norm
        return run_steps(opt, params, loss_e, 3)
    fast, norm_path = run(False), run(True)
    assert all(torch.equal(a, b) for a, b in zip(fast, norm_path))
    if optimizer == "adamw":
        assert len(seen) == 2 * STEPS
        assert (seen[0] is None) == (not any(clips)) and all(isinstance(m, torch.Tensor) for m in seen[STEPS:])
    if any(clips):                                                              # the clip mattered for member 1
        params = [p.clone().requires_grad_(True) for p in init]
        opt = PackedAdamW(params, lr=[1e-2, 2e-2, 1e-2], weight_decay=[0.0, 0.1, 0.0]) if optimizer == "adamw" \
            else PackedSGD(params, lr=[1e-2, 2e-2, 1e-2], weight_decay=[0.0, 0.1, 0.0], grad_clip=[0.0] * 3)
        unclipped = run_steps(opt, params, loss_e, 3)
        assert all(torch.equal(a[0], b[0]) for a, b in zip(fast, unclipped))
        assert not all(torch.equal(a[1], b[1]) for a, b in zip(fast, unclipped))
