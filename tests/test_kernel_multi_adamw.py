"""multi_adamw: the Triton path (on the GPU when there is one, else interpreted on CPU: `kernel_device`) vs a
float64 evaluation of multi_adamw_ref, the ref vs torch.optim.AdamW + clip_grad_norm_ run member by member, and
which path the public entry takes (recorded by ftkernels.dispatch)."""

import pytest
import torch

import ftkernels.multi_adamw as MA
from ftkernels import dispatch
from ftkernels.multi_adamw import hyper_groups, multi_adamw_, multi_adamw_cpu, multi_adamw_ref, multi_adamw_triton

EPS = 1e-8
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if torch.cuda.is_available() else [])  # bf16: GPU only
LR_FACTORS = (1.0, 0.5, 0.25, 1.0, 0.1)                     # one per step: the schedule multiplier


def hypers(E: int) -> dict[str, torch.Tensor]:
    """Per-member hyperparameters, all different; max_norm has off (0, -1), a tiny clip that always clips,
    one that clips the larger rows, and one that never clips."""
    def pick(vals):
        return torch.tensor([vals[e % len(vals)] for e in range(E)], dtype=torch.float32)

    return {"lr": pick([1e-2, 3e-3, 5e-2, 1e-3, 2e-2]), "beta1": pick([0.9, 0.8, 0.95, 0.5, 0.0]),
            "beta2": pick([0.999, 0.99, 0.9, 0.95, 0.999]), "weight_decay": pick([0.0, 0.1, 0.01, 1.0, 0.5]),
            "max_norm": pick([1e-3, 0.5, 0.0, 1e3, -1.0])}


def active_at(E: int, t: int) -> torch.Tensor:
    return torch.tensor([(7 * e + t) % 4 != 0 for e in range(E)])   # every member sits out some step


def poison(grad: torch.Tensor, active: torch.Tensor) -> None:
    """NaN / inf into the inactive members' gradients: must reach nothing."""
    grad[~active, 0] = float("nan")
    grad[~active, -1] = float("inf")


def run_ref64(state, h, active, t, lr_factor, max_norm):
    p, g, m, v = (x.double() for x in state)
    h64 = {k: x.double() for k, x in h.items()}
    multi_adamw_ref(p, g, m, v, h64["lr"], h64["beta1"], h64["beta2"], EPS, h64["weight_decay"],
                    None if max_norm is None else max_norm.double(), active, t, lr_factor)
    return p, m, v


def assert_rows_close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> None:
    """|a − b| ≤ rtol·(|b| + 1e-2·max|row of b|): relative, with a per-row floor where m or v cancel."""
    a, b = a.double(), b.double()
    floor = 1e-2 * b.abs().amax(1, keepdim=True)
    bad = (a - b).abs() > rtol * (b.abs() + floor) + 1e-300
    assert not bad.any(), f"max err {(a - b).abs().max().item():.3e} at {bad.nonzero()[:4].tolist()}"


def check_step(state, h, active, t, lr_factor, dtype, max_norm, dev, **kw) -> None:
    """One Triton step on `dev` from `state` (CPU, updated in place) vs the float64 ref from the same state."""
    before = [x.clone() for x in (state[0], state[2], state[3])]
    p64, m64, v64 = run_ref64(state, h, active, t, lr_factor, max_norm)
    d = [x.to(dev) for x in state]                                          # the same values on dev
    hd = {k: x.to(dev) for k, x in h.items()}
    multi_adamw_triton(*d, hd["lr"], hd["beta1"], hd["beta2"], EPS, hd["weight_decay"],
                       None if max_norm is None else max_norm.to(dev), active.to(dev), t, lr_factor, **kw)
    for i in (0, 2, 3):
        state[i].copy_(d[i])
    p, m, v = state[0], state[2], state[3]
    for new, old in zip((p, m, v), before):                                # inactive: bit-exact, untouched
        assert torch.equal(new[~active], old[~active])
    on = active
    assert torch.isfinite(p).all() and torch.isfinite(m).all() and torch.isfinite(v).all()
    assert_rows_close(m[on], m64[on], 2e-5)
    assert_rows_close(v[on], v64[on], 2e-5)
    if dtype == torch.float32:
        torch.testing.assert_close(p[on].double(), p64[on], rtol=1e-6, atol=1e-6)
    else:   # p is the float64 result rounded once to 16 bits (half an ulp), up to fp32 math error
        fi = torch.finfo(dtype)
        delta = p64[on] - before[0][on].double()
        bound = p64[on].abs() * (fi.eps / 2 + 1e-6) + 1e-5 * delta.abs() + fi.tiny * fi.eps
        assert ((p[on].double() - p64[on]).abs() <= bound).all()


def new_state(E, P, dtype, gen):
    p = torch.randn(E, P, generator=gen).to(dtype)
    return [p, torch.empty_like(p), torch.zeros(E, P), torch.zeros(E, P)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("E,P", [(1, 1), (5, 7), (5, 2500), (1, 1031)])
def test_triton_matches_f64_ref(E, P, dtype, kernel_device):
    gen = torch.Generator().manual_seed(1000 * E + P)
    h = hypers(E)
    if dtype != torch.float32:
        h["lr"] = h["lr"] * 10                                              # updates well above one 16-bit ulp
    state = new_state(E, P, dtype, gen)
    for t, lr_factor in enumerate(LR_FACTORS, start=1):
        active = active_at(E, t)
        state[1] = (3 * torch.randn(E, P, generator=gen)).to(dtype)         # fresh grads every step
        poison(state[1], active)
        check_step(state, h, active, t, lr_factor, dtype, h["max_norm"], kernel_device)


def test_triton_large_steps_bias_correction(kernel_device):
    """t with many bits set and t ≫ 1/(1 − β2): the fp64 repeated squaring of β^t."""
    gen = torch.Generator().manual_seed(3)
    h = hypers(5)
    state = new_state(5, 7, torch.float32, gen)
    state[2], state[3] = torch.randn(5, 7, generator=gen) * 0.1, torch.rand(5, 7, generator=gen) * 0.01
    for t in (37, 1000, 123457):
        state[1] = torch.randn(5, 7, generator=gen)
        check_step(state, h, torch.ones(5, dtype=torch.bool), t, 1.0, torch.float32, h["max_norm"], kernel_device)


def test_triton_no_clip_is_clip_zero(kernel_device):
    """max_norm=None skips the norm launch; it must equal max_norm = 0 for everyone, bit for bit."""
    gen = torch.Generator().manual_seed(4)
    h = hypers(5)
    a, active = new_state(5, 1031, torch.float32, gen), active_at(5, 2)
    a[1] = torch.randn(5, 1031, generator=gen)
    poison(a[1], active)
    b = [x.clone() for x in a]
    check_step(a, h, active, 2, 0.5, torch.float32, None, kernel_device)
    check_step(b, h, active, 2, 0.5, torch.float32, torch.zeros(5), kernel_device)
    for i in (0, 2, 3):                                                     # p, m, v (the grads hold NaN)
        assert torch.equal(a[i], b[i])


def test_triton_norm_chunked_partials(kernel_device):
    """Few partials per member: every norm program loops over several blocks (the huge-P tiling)."""
    gen = torch.Generator().manual_seed(5)
    h = hypers(3)
    h["max_norm"] = torch.tensor([20.0, 50.0, 1e-2])                         # all clip: ‖g‖ ≈ 2·√5000 ≈ 141
    state = new_state(3, 5000, torch.float32, gen)
    for t in (1, 2):
        state[1] = 2 * torch.randn(3, 5000, generator=gen)
        check_step(state, h, torch.ones(3, dtype=torch.bool), t, 1.0, torch.float32, h["max_norm"], kernel_device,
                   max_partials=2)


def test_triton_rejects_bad_inputs():
    p = torch.zeros(2, 3)
    h = hypers(2)
    args = (h["lr"], h["beta1"], h["beta2"], EPS, h["weight_decay"], h["max_norm"], torch.ones(2, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="fp32"):
        multi_adamw_triton(p, p.clone(), p.half(), p.half(), *args)
    with pytest.raises(ValueError, match="grad"):
        multi_adamw_triton(p, torch.zeros(2, 4), p.clone(), p.clone(), *args)
    with pytest.raises(ValueError, match="step"):
        multi_adamw_triton(p, p.clone(), p.clone(), p.clone(), *args[:-1], 0)


@pytest.mark.parametrize("P", [1, 7, 33])
def test_ref_matches_torch_adamw_per_member(P):
    """The ref in float64 vs torch.optim.AdamW with each member's row as its own parameter (own lr, betas,
    weight decay) and clip_grad_norm_. A member sitting out a step is not stepped by torch; its state step
    is set to t − 1 before each step so torch's bias corrections use the global t, as ours do. torch clips
    with 1e-6 (ours 1e-12) added to the norm: grads are scaled so that this is far below the tolerance."""
    E = 5
    gen = torch.Generator().manual_seed(P)
    h = {k: x.double() for k, x in hypers(E).items()}
    p0 = torch.randn(E, P, generator=gen, dtype=torch.float64)
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    rows = [torch.nn.Parameter(p0[e].clone()) for e in range(E)]
    opts = [torch.optim.AdamW([rows[e]], lr=h["lr"][e].item(), betas=(h["beta1"][e].item(), h["beta2"][e].item()),
                              eps=EPS, weight_decay=h["weight_decay"][e].item(), foreach=False) for e in range(E)]
    for t, lr_factor in enumerate(LR_FACTORS, start=1):
        active = active_at(E, t)
        g = 100 * torch.randn(E, P, generator=gen, dtype=torch.float64)
        for e in range(E):
            if not active[e]:
                continue
            st = opts[e].state[rows[e]]
            if not st:
                st.update(exp_avg=torch.zeros_like(rows[e]), exp_avg_sq=torch.zeros_like(rows[e]))
            st["step"] = torch.tensor(float(t - 1), dtype=torch.float64)
            opts[e].param_groups[0]["lr"] = h["lr"][e].item() * lr_factor
            rows[e].grad = g[e].clone()
            if h["max_norm"][e] > 0:
                torch.nn.utils.clip_grad_norm_([rows[e]], h["max_norm"][e].item())
            opts[e].step()
        poison(g, active)
        multi_adamw_ref(p, g, m, v, h["lr"], h["beta1"], h["beta2"], EPS, h["weight_decay"], h["max_norm"],
                        active, t, lr_factor)
        want = torch.stack([r.detach() for r in rows])
        torch.testing.assert_close(p, want, rtol=1e-6, atol=1e-9)
        for e in range(E):
            st = opts[e].state[rows[e]]
            if st:
                torch.testing.assert_close(m[e], st["exp_avg"], rtol=1e-6, atol=1e-12)
                torch.testing.assert_close(v[e], st["exp_avg_sq"], rtol=1e-6, atol=1e-12)
    assert not torch.equal(p, p0)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_public_entry_takes_and_records_the_policy(impl, kernel_device, monkeypatch):
    """`multi_adamw_` under each FTCORE_KERNELS choice matches the float64 ref, and the dispatch record says which
    path ran; a dtype the kernels lack (fp64) takes the ref even when triton is forced."""
    monkeypatch.setenv("FTCORE_KERNELS", impl)
    gen = torch.Generator().manual_seed(6)
    h = {k: x.to(kernel_device) for k, x in hypers(3).items()}
    for dtype, want in ((torch.float32, impl), (torch.float64, "torch")):
        p = torch.randn(3, 40, generator=gen).to(kernel_device, dtype)
        g = torch.randn(3, 40, generator=gen).to(kernel_device, dtype)
        m, v = torch.zeros(3, 40, device=kernel_device, dtype=dtype), torch.zeros(3, 40, device=kernel_device,
                                                                                  dtype=dtype)
        p64, m64, v64 = run_ref64([x.cpu() for x in (p, g, m, v)], {k: x.cpu() for k, x in h.items()},
                                  torch.ones(3, dtype=torch.bool), 1, 1.0, h["max_norm"].cpu())
        dispatch.reset_ops()
        multi_adamw_(p, g, m.float() if dtype == torch.float32 else m, v.float() if dtype == torch.float32 else v,
                     h["lr"], h["beta1"], h["beta2"], EPS, h["weight_decay"], h["max_norm"],
                     torch.ones(3, dtype=torch.bool, device=kernel_device), 1)
        assert dispatch.ops_ran() == {"multi_adamw": want}, dtype
        torch.testing.assert_close(p.cpu().double(), p64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared", [False, True], ids=["per-member", "shared"])
@pytest.mark.parametrize("E,P", [(1, 1), (5, 7), (6, 1031)])
def test_cpu_path_matches_f64_ref(E, P, shared):
    """multi_adamw_cpu (torch's fused CPU AdamW per hyperparameter group, on runs of active rows) vs the float64
    ref over several steps: members sitting out with poisoned gradients stay bit-exact, per-member clipping on odd
    steps, `groups` given or computed; `shared`: every member the same hyperparameters (one group: the whole buffer
    in one call when every member is active, as at step 2)."""
    gen = torch.Generator().manual_seed(10 * E + P)
    h = hypers(E)
    if shared:
        h = {k: v[:1].expand(E).clone() for k, v in h.items()}
    groups = hyper_groups(h["lr"], h["beta1"], h["beta2"], h["weight_decay"])
    assert len(groups) == (1 if shared else min(E, 5))
    state = new_state(E, P, torch.float32, gen)
    for t, lr_factor in enumerate(LR_FACTORS, start=1):
        active = torch.ones(E, dtype=torch.bool) if t == 2 else active_at(E, t)
        max_norm = h["max_norm"] if t % 2 else None
        state[1] = 3 * torch.randn(E, P, generator=gen)
        poison(state[1], active)
        before = [x.clone() for x in (state[0], state[2], state[3])]
        p64, m64, v64 = run_ref64(state, h, active, t, lr_factor, max_norm)
        multi_adamw_cpu(*state, h["lr"], h["beta1"], h["beta2"], EPS, h["weight_decay"], max_norm, active, t,
                        lr_factor, groups=groups if t % 2 else None)
        p, m, v = state[0], state[2], state[3]
        for new, old in zip((p, m, v), before):
            assert torch.equal(new[~active], old[~active])
        assert_rows_close(m[active], m64[active], 2e-5)
        assert_rows_close(v[active], v64[active], 2e-5)
        torch.testing.assert_close(p[active].double(), p64[active], rtol=1e-6, atol=1e-6)


def test_public_entry_on_cpu_takes_the_fused_path_for_few_groups(monkeypatch):
    """fp32 CPU tensors take multi_adamw_cpu while the members form at most CPU_MAX_GROUPS hyperparameter groups,
    the ref past that (one fused call per group would cost more than the ref's ops) and for fp64."""
    monkeypatch.setenv("FTCORE_KERNELS", "torch")
    took = []
    for name in ("multi_adamw_cpu", "multi_adamw_ref"):
        real = getattr(MA, name)
        monkeypatch.setattr(MA, name, lambda *a, _real=real, _name=name, **k: (took.append(_name), _real(*a, **k)))
    E = MA.CPU_MAX_GROUPS + 1
    for lrs, dtype, want in (([1e-2] * E, torch.float32, "multi_adamw_cpu"),
                             ([1e-3 * (e + 1) for e in range(E)], torch.float32, "multi_adamw_ref"),
                             ([1e-2] * E, torch.float64, "multi_adamw_ref")):
        p = torch.randn(E, 4, dtype=dtype)
        vec = torch.ones(E, dtype=dtype)
        multi_adamw_(p, torch.randn(E, 4, dtype=dtype), torch.zeros(E, 4, dtype=dtype), torch.zeros(E, 4, dtype=dtype),
                     torch.tensor(lrs, dtype=dtype), 0.9 * vec, 0.99 * vec, EPS, 0 * vec, None,
                     torch.ones(E, dtype=torch.bool), 1)
        assert took.pop() == want and not took


def test_triton_reads_step_and_lr_factor_from_the_device(kernel_device):
    """A 0-dim step tensor (and lr_factor tensor) on the device — what a captured CUDA graph replays with — gives
    the same update, bit for bit, as the host scalars, with and without clipping, over steps with many bits set."""
    gen = torch.Generator().manual_seed(8)
    h = {k: x.to(kernel_device) for k, x in hypers(5).items()}
    for clip in (None, h["max_norm"]):
        a = [x.to(kernel_device) for x in new_state(5, 1031, torch.float32, gen)]
        a[1] = torch.randn(5, 1031, generator=gen).to(kernel_device)
        b = [x.clone() for x in a]
        for t, f in ((1, 1.0), (2, 0.5), (37, 0.25), (123457, 0.1)):
            active = active_at(5, t).to(kernel_device)
            multi_adamw_triton(*a, h["lr"], h["beta1"], h["beta2"], EPS, h["weight_decay"], clip, active, t, f)
            multi_adamw_triton(*b, h["lr"], h["beta1"], h["beta2"], EPS, h["weight_decay"], clip, active,
                               torch.tensor(t, device=kernel_device), torch.tensor(f, device=kernel_device))
            for i in (0, 2, 3):
                assert torch.equal(a[i], b[i]), (t, i)
