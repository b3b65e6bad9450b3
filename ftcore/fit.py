"""`fit()`: the packed training loop — one visible loop for E member runs (nanoGPT `train.py` style).

All members of a pack share shapes and take one optimizer step together; each keeps its own seed, lr,
weight decay, early stop and divergence mask:

* a member whose task success metric becomes true (e.g. `fit/success`) stops: frozen from then on,
  its final metrics are those at that evaluation (`train.early_stop`);
* a member whose loss or metrics become NaN/inf is marked `diverged` and frozen; the others go on (a training
  loss that turns non-finite at step s freezes the member from s on, no update at s, on the device: the host
  learns of it at the next evaluation, `settle_divergence`, so no step waits for the host);
* a member that `on_eval` names at an evaluation is marked `pruned` and frozen (a pruner: sweeps/pruners.py);
* the loop ends when no member is active or the step budget is spent.

`train.method: construction` runs the task's exact construction in float64 instead of training; `train.method:
sgd` uses plain SGD. `train.batch_selection` (ftcore.batching) picks each step's mini-batch for tasks that support it.
No Ray here: progress goes through the single `report(step, info)` callable, and each evaluation's rows through
`on_eval(step, rows) -> members to prune` (rows: {member index in `members`: its curve row}, for every member
evaluated at this step, including one that just succeeded or diverged; a returned member that is still training
stops with status `pruned`). `dp` (ftcore.distributed) trains
the pack data-parallel: each rank its rows of every member's batch, gradients and losses summed over ranks.

Each step is `train_step` (no host sync in it). A pack of the additive ReLU adapter under the weighted MSE takes the
analytic step (`analytic_forward`: forward and hand-written reverse mode, no autograd graph; equal to autograd's
step to rounding, tests/test_analytic_step.py); every other pack differentiates with autograd. `cuda_graphs="auto"`
captures an eligible pack's step in a CUDA graph on a GPU and replays it (ftcore.graphs; off by default).

`train.precision` (a pack-level field) picks the training step's arithmetic; parameters, gradients and the optimizer's
moments are fp32 under all three, and evaluation always runs in fp32 (so metrics and success checks do not depend on
it; `matmul_mode`, `autocast`; `train.method: construction` resolves it to fp32 — float64, nothing trains):
* `fp32` — full fp32: on CUDA, TF32 is off for matmuls and cuDNN convolutions for the pack's duration;
* `tf32` — on CUDA, matmuls and convolutions take TF32 tensor-core passes (fp32 range, 10-bit mantissa inputs, fp32
  accumulation; the fused kernels follow torch's setting) for the pack's training steps; on CPU it changes nothing;
* `bf16` — the forward runs under `torch.autocast(device_type, torch.bfloat16)` (CPU and CUDA): matmuls, attention
  (SDPA: flash attention on CUDA) and convolutions on bf16 copies of the fp32 weights; the loss is computed in fp32
  from the upcast predictions and the backward runs outside autocast. No loss scaling: bf16 has fp32's exponent range.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch

import ftcore.adapters  # noqa: F401  (registers adapters)
import ftcore.models  # noqa: F401
import ftcore.tasks  # noqa: F401
from ftcore.batching import make_batcher
from ftcore.checkpoint import member_state
from ftcore.config import MemberConfig
from ftcore.graphs import CHOICES as GRAPH_CHOICES
from ftcore.graphs import GraphedStep, graphable
from ftcore.losses import weighted_mse_and_grad
from ftcore.optim import PackedAdamW
from ftcore.pack import build_pack, check_pack, step_hook  # noqa: F401  (check_pack: part of this module's API)
from ftcore.sgd import PackedSGD
from ftcore.tasks.base import Task
from ftkernels.dispatch import reset_ops


@dataclass
class MemberResult:
    run_id: str
    status: str                       # ok | diverged | pruned (failed: a trial's, set by the sweep layer)
    metrics: dict[str, float]         # final metrics (slash names)
    steps: int                        # optimizer steps this member took
    n_trainable: int
    curve: list[dict] = field(default_factory=list)   # [{"step": s, metric: value, ...}]
    state: dict[str, torch.Tensor] | None = None      # train.save: final: {name: p[e]} of every trainable p (CPU)


def schedule(kind: str, step: int, steps: int) -> float:
    """Learning-rate factor: constant, or cosine decay to 0 over the budget."""
    return 1.0 if kind == "constant" else 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))


def fit(members: list[MemberConfig], report=None, device: torch.device | str = "cpu", dp=None,
        on_eval=None, cuda_graphs: str = "off") -> list[MemberResult]:
    """Train one pack (see the module docstring) under its `train.precision`'s CUDA matmul mode, restored after.
    `cuda_graphs`: "auto" captures an eligible pack's step in a CUDA graph (ftcore.graphs), "off" never."""
    if cuda_graphs not in GRAPH_CHOICES:
        raise ValueError(f"cuda_graphs: one of {', '.join(GRAPH_CHOICES)} (got {cuda_graphs!r})")
    with matmul_mode(members[0].train.precision if members else "fp32", device):
        return _fit(members, report, device, dp, on_eval, cuda_graphs)


def _fit(members: list[MemberConfig], report, device: torch.device | str, dp, on_eval,
         cuda_graphs: str = "off") -> list[MemberResult]:
    check_pack(members)
    reset_ops()                                # ftkernels.dispatch's record of what ran: this pack's alone
    c0, E = members[0], len(members)
    construction = c0.train.method == "construction"
    dtype = torch.float64 if construction else torch.float32
    task, model = build_pack(members, dtype, device)
    steps = 0 if construction else c0.train.steps
    if construction:
        task.construct(model)
    opt = make_optimizer(model, members)
    batcher = make_batcher(task, members)      # None: the task's own batches; else train.batch_selection's
    n_tr = model.n_trainable()
    live = list(range(E))                      # pack position -> index into `members` (changes on compaction)
    active = torch.ones(E, dtype=torch.bool, device=device)
    diverged_at = torch.full((E,), -1, dtype=torch.long, device=device)   # step a member's loss turned non-finite
    status, stopped = ["ok"] * E, [steps] * E
    final: list[dict] = [{} for _ in range(E)]
    curves: list[list[dict]] = [[] for _ in range(E)]
    last_loss = torch.full((E,), float("nan"), device=device)
    success_key = task.success_metric if c0.train.early_stop else None

    def graph_for(task, model, opt, active, diverged_at) -> GraphedStep | None:   # the pack's step in a CUDA graph
        if cuda_graphs == "off" or construction or not graphable(task, model, batcher, dp, device, opt):
            return None
        return GraphedStep(task, model, opt, task.batch(0), active, diverged_at, c0.train.precision, train_step)
    graphed = graph_for(task, model, opt, active, diverged_at)

    for step in range(steps + 1):
        if step % c0.train.eval_every == 0 or step == steps:
            with matmul_mode("fp32", device):                 # evaluation in fp32 whatever train.precision
                metrics = task.evaluate(model.eval())         # eval mode: no adapter dropout (peft's lora_dropout)
            model.train()
            settle_divergence(diverged_at, live, status, stopped, final)
            if "train/loss" not in metrics and step > 0:
                metrics["train/loss"] = last_loss.to(next(iter(metrics.values())))
            finite = torch.stack([v.isfinite() for v in metrics.values()]).all(0).tolist()
            values = {k: v.tolist() for k, v in metrics.items()}          # one device->host copy per metric
            evaluated = {}
            for i in torch.nonzero(active).flatten().tolist():
                e = live[i]
                row = {k: v[i] for k, v in values.items()}
                curves[e].append({"step": step, **row})
                final[e] = evaluated[e] = row
                if not finite[i]:
                    status[e], stopped[e], active[i] = "diverged", step, False
                elif success_key and row.get(success_key, 0.0) > 0.5:
                    stopped[e], active[i] = step, False
            if on_eval is not None and evaluated:
                prune(on_eval(step, {e: {"step": step, **row} for e, row in evaluated.items()}) or (),
                      live, active, status, stopped, step)
            if report is not None:
                report(step, {"active": int(active.sum()), "of": E, "pack": len(live)})
            if step == steps or not bool(active.any()):
                break
            if isinstance(opt, PackedAdamW) and should_compact(task, active, steps - step, steps):   # (SGD: no compaction)
                keep = torch.nonzero(active).flatten().tolist()
                if graphed is not None:
                    graphed.close()
                task, model, opt = compact([members[live[i]] for i in keep], keep, model, opt, dtype, device)
                live, active, last_loss, diverged_at = ([live[i] for i in keep], active[keep], last_loss[keep],
                                                         diverged_at[keep])
                graphed = graph_for(task, model, opt, active, diverged_at)
        if graphed is not None:                                # captured once, replayed (ftcore.graphs)
            last_loss = graphed(step, schedule(c0.train.schedule, step, steps))
            continue
        batch = task.batch(step) if batcher is None else batcher(model, step)
        last_loss = train_step(task, model, opt, batch, active, diverged_at, step,
                               schedule(c0.train.schedule, step, steps), c0.train.precision, dp)

    if graphed is not None:
        graphed.close()
    states = saved_states(members, live, model)
    return [MemberResult(m.run_id(), status[e], final[e], stopped[e], n_tr[e], curves[e], states[e])
            for e, m in enumerate(members)]


def train_step(task, model, opt, batch, active: torch.Tensor, diverged_at: torch.Tensor, step: int,
               lr_factor: float, precision: str = "fp32", dp=None) -> torch.Tensor:
    """One optimizer step of the pack on `batch` = (x, y, w); returns the batch's loss (E,), detached.

    A member whose loss is non-finite is frozen from this step on (`active` cleared, `diverged_at` set to `step`,
    in place on the device: no host sync), and takes no update at it. The backward is of Σ_e active_e · L_e: one
    `loss.backward(active)`, or, for a model with its own reverse mode under the weighted MSE, the analytic step
    (`analytic_forward`: no autograd graph); the optimizer leaves inactive members exactly as they are. `dp`: this
    rank's rows of the batch, the full batch's loss and gradients summed over ranks. `step` and `lr_factor` may be
    0-dim device tensors (a step captured in a CUDA graph: ftcore.graphs)."""
    x, y, w = batch if dp is None else dp.shard(*batch)                      # this rank's rows, weights kept
    manual = analytic_forward(task, model, x, precision)
    if manual is None:
        loss = train_loss(task, model, x, y, w, step, precision)              # (E,)
    else:
        pred, set_grads = manual
        loss, loss_grad = weighted_mse_and_grad(pred, y, w)                   # (E,), g -> ∂(Σ g_e L_e)/∂pred
    last_loss = loss.detach() if dp is None else dp.sum(loss)                # the full batch's loss (E,)
    finite = (last_loss - last_loss) == 0                  # isfinite in 2 ops (x − x: NaN for ±inf, NaN); no sync
    diverged_at.masked_fill_(active & ~finite, step)
    active &= finite                                       # frozen from this step on (no update at it)
    opt.zero_grad()
    weight = active.to(loss.dtype)                         # ∇ Σ_e active_e · L_e (a frozen member: weight 0)
    if manual is None:
        loss.backward(weight)
    else:
        set_grads(loss_grad(weight))
    if dp is not None:                                                        # Σ_r ∇L^(r) = ∇L
        dp.all_reduce_grads(opt.params)
    opt.step(active, lr_factor)
    return last_loss


def analytic_forward(task, model, x: torch.Tensor, precision: str):
    """The analytic step's forward, or None for autograd's: (pred, set_grads) when the task's loss is the base
    weighted MSE (`Task.loss`, ftcore.losses) and the model runs its own reverse mode (`forward_with_vjp`: the
    additive ReLU adapter on the torch path), in fp32/tf32. Then a step records no autograd graph: the loss and
    ∂L/∂pred come from `weighted_mse_and_grad`, the parameters' gradients from `set_grads` — the same math as
    autograd's in fewer ops (benchmarks/bench_step.py), for the launch-bound CPU packs of the FTC sweeps."""
    fwd = getattr(model, "forward_with_vjp", None)
    if fwd is None or precision == "bf16" or type(task).loss is not Task.loss or step_hook(model) is not None:
        return None
    return fwd(x)


def settle_divergence(diverged_at: torch.Tensor, live: list[int], status: list[str], stopped: list[int],
                      final: list[dict]) -> None:
    """At an evaluation, record the members whose training loss turned non-finite since the last one.

    The step path keeps divergence on the device (`diverged_at` (E,) long: the step, -1 for none; the member's
    `active` entry is already False), so a step never waits for the host; this one read, at an evaluation
    (which copies its metrics to the host anyway), marks each such member `diverged`, `steps` = that step, and
    its final `train/loss` NaN (its other final metrics: its last evaluation's), then clears `diverged_at`."""
    at = diverged_at.tolist()
    for i, s in enumerate(at):
        if s >= 0:
            e = live[i]
            status[e], stopped[e] = "diverged", s
            final[e] = {**final[e], "train/loss": float("nan")}
    if any(s >= 0 for s in at):
        diverged_at.fill_(-1)


def prune(members_out, live: list[int], active: torch.Tensor, status: list[str], stopped: list[int],
          step: int) -> None:
    """Stop the members (indices into `members`) that a pruner named, if still training: status `pruned`."""
    position = {e: i for i, e in enumerate(live)}
    for e in members_out:
        i = position.get(e)
        if i is not None and bool(active[i]):
            status[e], stopped[e], active[i] = "pruned", step, False


def saved_states(members: list[MemberConfig], live: list[int], model) -> list[dict | None]:
    """Per member, its trained state when `train.save: final` (ftcore.checkpoint.member_state), else None:
    from the pack at its position, or as it was when compaction dropped it (a stopped member is frozen)."""
    retired = getattr(model, "retired", {})
    return [None if m.train.save != "final" else
            member_state(model, live.index(e)) if e in live else retired[m.run_id()]
            for e, m in enumerate(members)]


def train_loss(task, model, x, y, w, step: int, precision: str = "fp32") -> torch.Tensor:
    """The task's loss (E,) of the model's training forward. A base with `train_kwargs(step)` (the looped
    transformer: loop curriculum and truncated loss) gets them as forward keywords and may return a list of
    predictions; the loss is then the mean of the task's loss over that list (papers.md §4(b)).
    `precision: bf16` runs the forward under autocast; the loss is always computed in fp32 (`upcast` predictions)."""
    hook = step_hook(model)
    with autocast(precision, next(model.parameters()).device):
        out = model(x, **hook(step)) if hook is not None else model(x)
    if not isinstance(out, (list, tuple)):
        return task.loss(upcast(out), y, w)
    return torch.stack([task.loss(upcast(p), y, w) for p in out]).mean(0)


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The forward's autocast for `train.precision`: bf16 -> torch.autocast(device type, torch.bfloat16) (ops on
    autocast's lower-precision list — matmuls, SDPA, convolutions — run in bf16 on bf16 copies of the fp32
    parameters, so gradients reach the fp32 parameters in fp32); fp32 and tf32 -> no autocast."""
    if precision != "bf16":
        return contextlib.nullcontext()
    dev = torch.device(device).type          # no weight-cast cache while a CUDA graph captures (torch's rule)
    capturing = dev == "cuda" and torch.cuda.is_current_stream_capturing()
    return torch.autocast(dev, dtype=torch.bfloat16, cache_enabled=not capturing)


def upcast(t):
    """A bf16/fp16 prediction as fp32 (a loss in fp32 whatever the forward's dtype); anything else unchanged."""
    return t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.bfloat16, torch.float16) else t


@contextlib.contextmanager
def matmul_mode(precision: str, device: torch.device | str):
    """On CUDA, TF32 for matmuls (`torch.backends.cuda.matmul.allow_tf32`, which also sets
    `torch.get_float32_matmul_precision()` to "high", read by the fused Triton kernels) and for cuDNN convolutions
    (`torch.backends.cudnn.allow_tf32`) on iff `precision == "tf32"`, both restored on exit. No effect on CPU:
    torch's CPU matmuls have no TF32 mode here, and fp32 on CPU is what every earlier run did."""
    if torch.device(device).type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def make_optimizer(model, members: list[MemberConfig]) -> PackedAdamW | PackedSGD:
    if members[0].train.method == "sgd":
        return PackedSGD([p for p in model.parameters() if p.requires_grad], lr=[m.train.lr for m in members],
                         weight_decay=[m.train.weight_decay for m in members],
                         grad_clip=[m.train.grad_clip for m in members])
    return PackedAdamW([p for p in model.parameters() if p.requires_grad],
                       lr=[m.train.lr for m in members], weight_decay=[m.train.weight_decay for m in members],
                       grad_clip=[m.train.grad_clip for m in members])


COMPACT_BELOW = 0.5     # compact when at most this share of the pack is still training ...
COMPACT_MIN_LEFT = 0.1  # ... and at least this share of the step budget is left to save


def should_compact(task, active: torch.Tensor, steps_left: int, steps: int) -> bool:
    """Finished members still cost compute in a padded pack; dropping them pays once few remain."""
    n = int(active.sum())
    return (task.static_batch and 0 < n <= COMPACT_BELOW * active.numel() and active.numel() > 1
            and steps_left >= COMPACT_MIN_LEFT * steps)


def _crop(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Top-left block of t (E, ...) with `shape`: padded dims shrink when the widest member has left."""
    return t[(slice(None),) + tuple(slice(0, n) for n in shape[1:])]


def compact(members: list[MemberConfig], keep: list[int], model, opt: PackedAdamW, dtype, device):
    """A pack of the still-active `members` (positions `keep` in the old pack), carrying their trained state.

    The pack is rebuilt from the members' own generators (so data, frozen base and masks are theirs exactly),
    then every trainable parameter and its AdamW moments are copied over, cropped to the new padded sizes
    (entries past a member's capacity are padding, zero for everyone left). Only for tasks whose batches do
    not depend on the step or on generator state (`Task.static_batch`), so the rebuilt task is the old one."""
    task, new_model = build_pack(members, dtype, device)
    new_model.retired = dict(getattr(model, "retired", {}))      # train.save: final keeps the dropped members' state
    if members[0].train.save == "final":
        new_model.retired.update({rid: member_state(model, i) for i, rid in enumerate(model.run_ids) if i not in keep})
    new_opt = make_optimizer(new_model, members)
    old_named = dict(model.named_parameters())
    with torch.no_grad():
        for (name, p), m_new, v_new, m_old, v_old in zip(
                ((n, p) for n, p in new_model.named_parameters() if p.requires_grad),
                new_opt.views(new_opt.m), new_opt.views(new_opt.v), opt.views(opt.m), opt.views(opt.v)):
            p.copy_(_crop(old_named[name][keep], p.shape))
            m_new.copy_(_crop(m_old[keep], p.shape))
            v_new.copy_(_crop(v_old[keep], p.shape))
    new_opt.t = opt.t
    return task, new_model, new_opt
