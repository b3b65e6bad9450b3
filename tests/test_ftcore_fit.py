"""Contract: `fit()` (ftcore/fit.py), the packed loop (DESIGN.md §3).

A pack is E independent member runs trained together: fitting a pack gives each member the metrics it gets
alone; each member stops on its own success, diverges on its own, and is frozen from then on; the
construction oracle is exact above the rank threshold; a pack whose members disagree outside per-member
fields is refused.
"""

import math

import pytest
import torch

import ftcore
from ftcore.tasks.lora_construction import threshold_rank


def ftc(width, seed, n=6, steps=300, lr=1e-2, early_stop=True, tol=0.1, **train):
    return ftcore.member_from_dict({
        "model": {"name": "mlp", "width": 8, "depth": 2},
        "adapter": {"name": "additive_relu", "width": width, "depth": 2},
        "task": {"name": "ftc_relabel", "dim": 4, "n": n, "tol": tol},
        "train": {"steps": steps, "lr": lr, "early_stop": early_stop, "eval_every": 25, **train},
        "seed": seed})


def teacher(rank, seed, D=8, steps=200, lr=1e-2, method="adam", last_activation=True, **train):
    return ftcore.member_from_dict({
        "model": {"name": "mlp", "width": D, "depth": 2, "last_activation": last_activation},
        "adapter": {"name": "lora", "rank": rank, "tune_bias": True},
        "task": {"name": "lora_teacher", "target_depth": 1, "batch_size": 64, "n_val": 256, "n_test": 512},
        "train": {"method": method, "steps": steps, "lr": lr, "eval_every": 50, **train},
        "seed": seed})


def assert_rel_close(a: dict, b: dict, rel=1e-4):
    assert a.keys() == b.keys()
    for k in a:
        assert math.isclose(a[k], b[k], rel_tol=rel, abs_tol=1e-7), (k, a[k], b[k])


def test_packed_equals_unpacked():
    """4 ftc members with different adapter widths, data sizes N and seeds: pack == each alone."""
    pack = [ftc(2, seed=0, n=4), ftc(6, seed=1, n=6), ftc(12, seed=2, n=8), ftc(16, seed=3, n=3)]
    results = ftcore.fit(pack)
    assert {r.status for r in results} == {"ok"}
    assert len({r.steps for r in results}) > 1, "the pack should mix early-stopped and full-budget members"
    for m, r in zip(pack, results):
        (alone,) = ftcore.fit([m])
        assert (r.run_id, r.status, r.steps, r.n_trainable) == (alone.run_id, alone.status, alone.steps,
                                                                alone.n_trainable)
        assert r.run_id == m.run_id()
        assert_rel_close(r.metrics, alone.metrics)
        assert [row["step"] for row in r.curve] == [row["step"] for row in alone.curve]


def test_early_stop_freezes_the_member_that_succeeds():
    easy, hard = ftc(16, seed=0, n=2, tol=0.2), ftc(1, seed=1, n=16, tol=0.2)
    budget = easy.train.steps
    r_easy, r_hard = ftcore.fit([easy, hard])
    assert r_easy.status == r_hard.status == "ok"
    assert r_easy.steps < budget and r_easy.metrics["fit/success"] == 1.0
    assert r_easy.curve[-1]["step"] == r_easy.steps and r_easy.metrics == {
        k: v for k, v in r_easy.curve[-1].items() if k != "step"}
    assert all(row["fit/success"] == 0.0 for row in r_easy.curve[:-1])      # stopped at the first success
    assert r_hard.steps == budget and r_hard.metrics["fit/success"] == 0.0
    assert r_hard.curve[-1]["step"] == budget
    # without early stop both members spend the whole budget
    no_stop = ftcore.fit([ftc(16, seed=0, n=2, tol=0.2, early_stop=False),
                          ftc(1, seed=1, n=16, tol=0.2, early_stop=False)])
    assert [r.steps for r in no_stop] == [budget, budget]


def test_diverging_member_is_marked_and_isolated():
    """lr=1e10 blows member 0 up on its first step (inf loss); the others finish ok, unaffected."""
    others = [teacher(2, seed=1), teacher(4, seed=2)]
    results = ftcore.fit([teacher(2, seed=0, lr=1e10)] + others)
    assert results[0].status == "diverged"
    assert results[0].steps < others[0].train.eval_every      # an inf training loss stops it at once
    assert math.isnan(results[0].metrics["train/loss"])
    for r, alone in zip(results[1:], ftcore.fit(others)):
        assert r.status == "ok" and r.steps == others[0].train.steps
        assert all(math.isfinite(v) for v in r.metrics.values())
        assert_rel_close(r.metrics, alone.metrics)



def test_divergence_is_recorded_at_its_step_and_freezes_the_member_there():
    """Member 0 (lr=1e10) has a finite training loss at step 0 and a non-finite one at step 1, between evaluations
    (0, 50, 100). The step path notes it on the device and the next evaluation records it: `diverged`, steps == 1,
    final metrics == its step-0 evaluation with train/loss NaN, no curve point after step 0, and its parameters
    are those after exactly one update (no update at step 1). The others train on as if alone."""
    pack = [teacher(2, seed=0, lr=1e10, steps=100, save="final"), teacher(2, seed=1, steps=100, save="final")]
    r, other = ftcore.fit(pack)
    assert (r.status, r.steps) == ("diverged", 1)
    assert [row["step"] for row in r.curve] == [0]
    assert math.isnan(r.metrics["train/loss"])
    assert {k: v for k, v in r.metrics.items() if k != "train/loss"} == {
        k: v for k, v in r.curve[0].items() if k not in ("step", "train/loss")}
    (one_update,) = ftcore.fit([teacher(2, seed=0, lr=1e10, steps=1, save="final")])
    assert math.isfinite(one_update.metrics["train/loss"])                   # step 0's training loss was finite
    (no_update,) = ftcore.fit([teacher(2, seed=0, lr=1e10, steps=0, save="final")])
    assert all(torch.equal(r.state[k], one_update.state[k]) for k in r.state)
    assert not all(torch.equal(r.state[k], no_update.state[k]) for k in r.state)   # step 0 did update it
    (alone,) = ftcore.fit([pack[1]])
    assert (other.status, other.steps) == ("ok", 100)
    assert_rel_close(other.metrics, alone.metrics)

def test_report_is_called_with_active_counts():
    calls = []
    ftcore.fit([ftc(16, seed=0, n=2, tol=0.2, steps=100), ftc(1, seed=1, tol=0.2, steps=100)],
               report=lambda step, info: calls.append((step, info)))
    steps = [s for s, _ in calls]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 100
    assert all(info["of"] == 2 and 0 <= info["active"] <= 2 for _, info in calls)
    assert calls[-1][1]["active"] == 1                                        # the easy member stopped


def test_on_eval_hears_every_evaluation_and_prunes_whom_it_names():
    """`on_eval(step, rows)` gets each evaluated member's curve row (keyed by its index in the pack list); a member
    it names stops there with status `pruned`, frozen (no more curve points), and the others train on as if it
    had never been in the pack (compaction drops it like a finished member)."""
    pack = [ftc(8, seed=0, early_stop=False, steps=100), ftc(8, seed=1, early_stop=False, steps=100),
            ftc(4, seed=2, early_stop=False, steps=100)]
    heard = []

    def on_eval(step, rows):
        heard.append((step, sorted(rows)))
        assert all(row["step"] == step and "fit/max_err" in row for row in rows.values())
        return [1, 7] if step == 50 else ()          # 7: no such member, ignored
    results = ftcore.fit(pack, on_eval=on_eval)
    assert heard == [(s, [0, 1, 2]) for s in (0, 25, 50)] + [(s, [0, 2]) for s in (75, 100)]
    assert [r.status for r in results] == ["ok", "pruned", "ok"]
    assert results[1].steps == 50 and results[1].curve[-1]["step"] == 50
    assert [r.steps for r in (results[0], results[2])] == [100, 100]
    for r, alone in zip((results[0], results[2]), ftcore.fit([pack[0], pack[2]])):
        assert_rel_close(r.metrics, alone.metrics)


def test_zero_steps_evaluates_the_base():
    (r,) = ftcore.fit([teacher(2, seed=0, steps=0)])
    assert r.status == "ok" and r.steps == 0 and len(r.curve) == 1
    assert r.metrics["test/mse"] == pytest.approx(r.metrics["test/mse_base"])       # the unadapted model
    assert r.metrics["test/mse_rel"] == pytest.approx(r.metrics["test/mse"] / r.metrics["test/target_var"])


def test_construction_exact_above_threshold():
    """Zeng & Lee: D=8, L=2, L̄=1 -> threshold ⌈D·L̄/L⌉ = 4; ranks 2..6 in one heterogeneous pack."""
    ranks = [2, 3, 4, 5, 6]
    pack = [teacher(r, seed=7, method="construction") for r in ranks]
    assert threshold_rank(8, 2, 1) == 4
    results = ftcore.fit(pack)
    for r, res in zip(ranks, results):
        assert res.status == "ok" and res.steps == 0
        rel = res.metrics["test/mse_rel"]
        if r >= 4:
            assert rel < 1e-6, (r, rel)
        else:
            assert rel > 1e-3, (r, rel)
    rels = [res.metrics["test/mse_rel"] for res in results]
    assert rels[0] > rels[1]                                                  # rank 2 worse than rank 3


def test_gradient_lora_error_decreases_with_rank():
    """Adam-trained LoRA on the same base and target: rank 8 (= D) fits much better than rank 1."""
    ranks = [1, 2, 4, 8]
    results = ftcore.fit([teacher(r, seed=3, steps=300, last_activation=False) for r in ranks])
    mse = {r: res.metrics["test/mse"] for r, res in zip(ranks, results)}
    assert all(res.status == "ok" for res in results)
    assert len({res.metrics["test/mse_base"] for res in results}) == 1       # same seed: same base, same target
    assert mse[8] < 0.5 * mse[1] and mse[4] < mse[1], mse


@pytest.mark.parametrize("other", [
    lambda: ftcore.member_from_dict({
        "model": {"name": "mlp", "width": 12, "depth": 2},                    # model.width differs
        "adapter": {"name": "additive_relu", "width": 4, "depth": 2},
        "task": {"name": "ftc_relabel", "dim": 4, "n": 6}, "train": {"steps": 300, "eval_every": 25}, "seed": 1}),
    lambda: ftc(4, seed=1, steps=100),                                         # train.steps differs
    lambda: ftc(4, seed=1, tol=0.3),                                           # task.tol differs
    lambda: ftc(4, seed=1, schedule="constant"),                               # train.schedule differs
    lambda: teacher(2, seed=1),                                                # another task and adapter
], ids=["model.width", "train.steps", "task.tol", "train.schedule", "task.name"])
def test_fit_rejects_mixed_pack(other):
    with pytest.raises(ValueError, match="per-member"):
        ftcore.fit([ftc(4, seed=0), other()])


def test_fit_accepts_per_member_differences():
    """seed, lr, weight decay, adapter width and task n/k are per-member: one pack."""
    pack = [ftc(2, seed=0, n=3, steps=10), ftc(5, seed=9, n=7, lr=3e-3, weight_decay=0.1, steps=10)]
    assert len(ftcore.fit(pack)) == 2


def test_compaction_drops_finished_members_without_changing_results():
    """Four easy members stop early; once at most half the pack trains, fit() rebuilds the pack from those
    still training (padded sizes shrink when the widest has left) and carries their weights and AdamW moments over.
    Every member still gets exactly the metrics and curve it gets alone."""
    easy = [ftc(24, seed=s, n=2, tol=0.2, steps=400) for s in range(4)]
    hard = [ftc(2, seed=10, n=12, tol=0.2, steps=400), ftc(3, seed=11, n=12, tol=0.2, steps=400)]
    pack = [easy[0], hard[0], easy[1], easy[2], hard[1], easy[3]]
    sizes = []
    results = ftcore.fit(pack, report=lambda step, info: sizes.append(info["pack"]))
    assert sizes[0] == 6 and sizes[-1] <= 3, sizes
    assert all(r.steps < 200 for r, m in zip(results, pack) if m in easy)
    for m, r in zip(pack, results):
        (alone,) = ftcore.fit([m])
        assert (r.status, r.steps) == (alone.status, alone.steps)
        assert_rel_close(r.metrics, alone.metrics)
        assert [row["step"] for row in r.curve] == [row["step"] for row in alone.curve]
        for a, b in zip(r.curve, alone.curve):
            assert_rel_close(a, b)


def test_compact_crops_padding_and_keeps_each_members_function():
    """compact() of a trained pack to members 1 and 2: the padded width shrinks from 24 to 3, the optimizer
    step count and moments carry over, and the kept members compute exactly what they computed before."""
    import torch

    from ftcore.fit import build_pack, compact, make_optimizer
    pack = [ftc(24, seed=0), ftc(2, seed=1), ftc(3, seed=2)]
    task, model = build_pack(pack, torch.float32)
    opt = make_optimizer(model, pack)
    for step in range(5):
        x, y, w = task.batch(step)
        opt.zero_grad()
        task.loss(model(x), y, w).sum().backward()
        opt.step(torch.ones(3, dtype=torch.bool))
    with torch.no_grad():
        before = model(task.x)[[1, 2]]
    task2, model2, opt2 = compact(pack[1:], [1, 2], model, opt, torch.float32, "cpu")
    assert model2.Ws[0].shape == (2, 4, 3) and opt2.t == opt.t == 5
    with torch.no_grad():
        torch.testing.assert_close(model2(task2.x), before, rtol=0, atol=1e-6)
    m_old = opt.views(opt.m)[0][[1, 2]][:, :, :3]
    torch.testing.assert_close(opt2.views(opt2.m)[0], m_old, rtol=0, atol=0)
