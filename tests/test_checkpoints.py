"""Checkpoints and `model.from` (issue 13 part 1, DESIGN.md §7), without Ray: `train.save: final` writes one
safetensors file per member (also in a shared pack, locally and at a file:// URI), the row names it, a later
sweep's `model.from` (by run_id, or best/mode/where) resolves to that run's model, the merged base reproduces the
trained member exactly, chains load recursively, the shared base stays bit-identical while new members train on
it, and every user mistake is one line and exit 2 with nothing written."""
import dataclasses
import json

import pytest
import torch

from ftcore import checkpoint as ck
from ftcore.config import member_from_dict
from ftcore.fit import build_pack, compact, fit, make_optimizer, saved_states, train_loss
from ftcore.pack import load_base, rebuild
from sweeps.cli import main
from sweeps.sink import ResultSink
from sweeps.spec import SpecError, load_checked
from sweeps.trained_base import row_member
from tests.trained_sources import record_pack as record

MLP = {"name": "mlp", "width": 8, "depth": 2}
TEACHER = {"name": "lora_teacher", "batch_size": 16, "n_val": 32, "n_test": 32}


def cfg(adapter, seed=0, save="final", steps=12, model=MLP, task=TEACHER, **train):
    return {"model": dict(model), "adapter": dict(adapter), "task": dict(task),
            "train": {"steps": steps, "eval_every": 6, "lr": 1e-2, "save": save, "early_stop": False, **train},
            "seed": seed}


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """A recorded sweep: a LoRA pack of two ranks, a full member, an additive_relu member (all saved) and an
    unsaved member."""
    out = tmp_path_factory.mktemp("src") / "out"
    rows = record(out, [cfg({"name": "lora", "rank": 2}), cfg({"name": "lora", "rank": 4}, seed=1)], "t0")
    rows += record(out, [cfg({"name": "full"})], "t1")
    rows += record(out, [cfg({"name": "additive_relu", "width": 4})], "t2")
    rows += record(out, [cfg({"name": "full"}, seed=5, save="none")], "t3")
    return out, {(r["adapter.name"], r["seed"]): r for r in rows}


def spec_file(tmp_path, model_from, model_extra="", adapter="{name: full}", task="{name: lora_teacher, batch_size: 16}",
              extra=""):
    p = tmp_path / "ft.yaml"
    p.write_text(f"name: ft\nmodel: {{from: {json.dumps(model_from)}{model_extra}}}\nadapter: {adapter}\n"
                 f"task: {task}\ntrain: {{steps: 6, eval_every: 3, lr: 1.0e-2}}\nseeds: 2\n{extra}")
    return p


# --------------------------------------------------------------------------- ftcore: state, bytes, merge
@pytest.mark.parametrize("adapter", [{"name": "full"}, {"name": "lora", "rank": 3}, {"name": "bias_only"},
                                     {"name": "last_layers", "n_layers": 1}])
def test_merged_base_reproduces_the_trained_member(adapter):
    members = [member_from_dict(cfg(adapter, seed=s)) for s in (0, 1)]
    results = fit(members)
    for m, r in zip(members, results):
        assert r.state is not None and all(t.device.type == "cpu" for t in r.state.values())
        meta, state = ck.from_bytes(ck.to_bytes(m, r.state))
        assert meta["run_id"] == m.run_id() and member_from_dict(json.loads(meta["config"])) == m
        assert json.loads(meta["base"]) == {"kind": "init", "model": MLP | {"bias": True, "activation": "relu",
                                            "last_activation": True}, "task": "lora_teacher", "seed": m.seed}
        task, adapted = build_pack([m], torch.float32)
        ck.load_state(adapted, state)
        merged = rebuild(meta, state)
        assert all(p.shape[0] == 1 and not p.requires_grad for p in merged.parameters())
        x = task.x_test
        with torch.no_grad():
            y_adapted, y_merged = adapted(x), merged(x)
        if adapter["name"] == "lora":        # h(W + s·down·up) vs hW + s(h·down)up: same function, other rounding
            torch.testing.assert_close(y_merged, y_adapted, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(y_merged, y_adapted)
        # the loaded member is the trained one: its final metrics again
        ours = {k: float(v[0]) for k, v in task.evaluate(adapted).items()}
        for k, v in r.metrics.items():
            if k == "train/loss":                # the last step's batch loss, not an evaluation
                continue
            assert ours[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


def test_generic_full_on_a_transformer_merges_exactly():
    c = cfg({"name": "full"}, model={"name": "transformer", "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 10},
            task={"name": "icl_regression", "dim": 3, "n_points": 5, "batch_size": 8, "n_eval": 16}, steps=4)
    m = member_from_dict(c)
    (r,) = fit([m])
    meta, state = ck.from_bytes(ck.to_bytes(m, r.state))
    task, adapted = build_pack([m], torch.float32)
    ck.load_state(adapted, state)
    x = task.batch(0)[0]
    with torch.no_grad():
        assert torch.equal(rebuild(meta, state)(x), adapted(x))


def test_additive_relu_is_not_mergeable():
    m = member_from_dict(cfg({"name": "additive_relu", "width": 4}))
    _, model = build_pack([m], torch.float32)
    with pytest.raises(ValueError, match="additive_relu"):
        model.merged_base()


def test_members_compacted_away_keep_their_state():
    members = [member_from_dict(cfg({"name": "full"}, seed=s)) for s in (0, 1, 2)]
    task, model = build_pack(members, torch.float32)
    opt = make_optimizer(model, members)
    for step in range(2):
        opt.zero_grad()
        train_loss(task, model, *task.batch(step), step).sum().backward()
        opt.step(torch.ones(3, dtype=torch.bool), 1.0)
    before = [ck.member_state(model, e) for e in range(3)]
    _, small, _ = compact([members[1]], [1], model, opt, torch.float32, "cpu")
    states = saved_states(members, [1], small)
    for e in range(3):
        assert states[e].keys() == before[e].keys()
        assert all(torch.equal(states[e][k], before[e][k]) for k in before[e])


def test_save_none_returns_no_state():
    (r,) = fit([member_from_dict(cfg({"name": "full"}, save="none"))])
    assert r.state is None


def test_train_save_validated_and_not_in_run_id():
    with pytest.raises(ValueError, match="train.save"):
        member_from_dict(cfg({"name": "full"}, save="best"))
    a, b = (member_from_dict(cfg({"name": "full"}, save=s)) for s in ("none", "final"))
    assert a.run_id() == b.run_id() and a.flat()["train.save"] == "none"


def test_model_from_round_trips_and_enters_the_run_id():
    plain = cfg({"name": "full"})
    a = member_from_dict({**plain, "model": {**MLP, "from": {"run_id": "abc", "dir": "/x"}}})
    b = member_from_dict({**plain, "model": {**MLP, "from": {"run_id": "abc", "dir": "/elsewhere"}}})
    c = member_from_dict({**plain, "model": {**MLP, "from": {"run_id": "abd", "dir": "/x"}}})
    assert member_from_dict(a.nested()) == a and a.flat()["model.from.run_id"] == "abc"
    assert a.flat()["model.from.dir"] == "/x" and "model.from.run_id" not in member_from_dict(plain).flat()
    assert a.run_id() == b.run_id() != c.run_id() != member_from_dict(plain).run_id()
    with pytest.raises(ValueError, match="model.from"):
        member_from_dict({**plain, "model": {**MLP, "from": {"best": "val/mse", "dir": "/x"}}})


# --------------------------------------------------------------------------- sweeps: records and model.from
def test_one_checkpoint_per_member_of_a_shared_pack(src):
    out, rows = src
    files = sorted(p.name for p in (out / "checkpoints").iterdir())
    saved = [r for r in rows.values() if r["train.save"] == "final"]
    assert files == sorted(f"{r['run_id']}.safetensors" for r in saved)
    assert not any(p.name.startswith(".") for p in (out / "checkpoints").iterdir())     # no temp left
    for r in saved:
        assert r["checkpoint"] == f"checkpoints/{r['run_id']}.safetensors"
        assert ck.metadata((out / r["checkpoint"]).read_bytes())["run_id"] == r["run_id"]
    assert rows[("full", 5)]["checkpoint"] is None
    lora2, lora4 = rows[("lora", 0)], rows[("lora", 1)]
    assert lora2["pack_size"] == lora4["pack_size"] == 2
    read = {r["run_id"]: r for r in ResultSink(out).read_rows("runs")}
    assert read[lora2["run_id"]]["checkpoint"] == lora2["checkpoint"]
    assert row_member(read[lora4["run_id"]]).adapter.rank == 4


def test_model_from_by_run_id_and_by_best(src, tmp_path):
    out, rows = src
    rid = rows[("lora", 1)]["run_id"]
    spec, members = load_checked(spec_file(tmp_path, {"dir": str(out), "run_id": rid}))
    assert spec.model["from"] == {"dir": str(out), "run_id": rid} and spec.model["width"] == 8
    assert all(m.source.run_id == rid and m.source.dir == str(out) for m in members)
    assert members[0].flat()["model.from.run_id"] == rid
    lora = [r for r in rows.values() if r["adapter.name"] == "lora"]
    for mode, pick in (("min", min), ("max", max)):
        best = pick(lora, key=lambda r: r["val/mse"])["run_id"]
        sel = {"dir": str(out), "best": "val/mse", "mode": mode, "where": {"adapter.name": "lora"}}
        spec, members = load_checked(spec_file(tmp_path, sel))
        assert members[0].source.run_id == best and spec.model["from"] == {"dir": str(out), "run_id": best}
    sel = {"dir": str(out), "best": "val/mse", "mode": "min", "where": {"adapter.rank": 2}}
    assert load_checked(spec_file(tmp_path, sel))[1][0].source.run_id == rows[("lora", 0)]["run_id"]


def test_given_fields_must_agree(src, tmp_path):
    out, rows = src
    sel = {"dir": str(out), "run_id": rows[("full", 0)]["run_id"]}
    load_checked(spec_file(tmp_path, sel, ", width: 8, name: mlp"))                 # agreeing: fine
    with pytest.raises(SpecError, match="model.width"):
        load_checked(spec_file(tmp_path, sel, ", width: 16"))
    with pytest.raises(SpecError, match="model.depth"):
        load_checked(spec_file(tmp_path, sel), ["model.depth=3"])
    with pytest.raises(SpecError, match="axes.model.width"):
        load_checked(spec_file(tmp_path, sel, extra="axes: {model.width: [8, 16]}\n"))


def test_trained_base_is_shared_and_bit_identical_after_training(src):
    out, rows = src
    rid = rows[("lora", 1)]["run_id"]
    members = [member_from_dict(cfg({"name": "lora", "rank": r}, seed=s, steps=3) | {"model": {**MLP, "from": {
        "run_id": rid, "dir": str(out)}}}) for r, s in ((1, 0), (2, 1))]
    task, model = build_pack(members, torch.float32)
    base = {n: p.detach().clone() for n, p in model.base.named_parameters()}
    assert all(p.shape[0] == 1 and not p.requires_grad for p in model.base.parameters())     # one copy per pack
    meta, state = ck.from_bytes((out / rows[("lora", 1)]["checkpoint"]).read_bytes())
    assert all(torch.equal(p, dict(rebuild(meta, state).named_parameters())[n]) for n, p in base.items())
    opt = make_optimizer(model, members)
    for step in range(3):
        opt.zero_grad()
        train_loss(task, model, *task.batch(step), step).sum().backward()
        opt.step(torch.ones(2, dtype=torch.bool), 1.0)
    assert all(torch.equal(p, base[n]) for n, p in model.base.named_parameters())
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith("up."))
    results = fit(members)                       # and through fit: every member trains on it
    assert [r.status for r in results] == ["ok", "ok"]


def test_labels_derived_from_the_base_follow_the_trained_base(tmp_path):
    """ftc_relabel's labels are y' = f(x) + r: over a trained base f is that base (Task.use_base), so the adapted
    model at step 0 misses exactly the residual r."""
    ftc = {"name": "ftc_relabel", "dim": 4, "n": 3, "k": 8}
    src_row = record(tmp_path / "s", [cfg({"name": "full"}, task=ftc, steps=5)])[0]
    m = member_from_dict(cfg({"name": "full"}, task=ftc) | {"model": {**MLP, "from": {
        "run_id": src_row["run_id"], "dir": str(tmp_path / "s")}}})
    task, model = build_pack([m], torch.float32)
    with torch.no_grad():
        assert torch.equal(task.y - model(task.x), task.residual)


def test_chain_of_two_and_a_uri_output(src, tmp_path):
    out, rows = src
    a = rows[("full", 0)]["run_id"]
    b_dir = tmp_path / "b"
    uri = f"file://{b_dir}"
    b_rows = record(uri, [cfg({"name": "lora", "rank": 2}) | {"model": {**MLP, "from": {"run_id": a, "dir": str(out)}}}])
    b = b_rows[0]
    assert b["checkpoint"] and (b_dir / b["checkpoint"]).is_file() and b["model.from.run_id"] == a
    meta_b = ck.metadata((b_dir / b["checkpoint"]).read_bytes())
    assert json.loads(meta_b["base"]) == {"kind": "from", "run_id": a, "dir": str(out)}
    # C over B (resolved through the URI): C's base is B's trained model, itself over A's
    _, members = load_checked(spec_file(tmp_path, {"dir": uri, "run_id": b["run_id"]}))
    c = members[0]
    assert c.source.dir == uri
    base_c = load_base(c.source)
    b_member = row_member(b)
    task, b_model = build_pack([b_member], torch.float32)
    ck.load_state(b_model, ck.from_bytes((b_dir / b["checkpoint"]).read_bytes())[1])
    with torch.no_grad():
        torch.testing.assert_close(base_c(task.x_test), b_model(task.x_test), rtol=1e-5, atol=1e-6)
    (r,) = fit([dataclasses.replace(c, train=dataclasses.replace(c.train, steps=3))])
    assert r.status == "ok" and r.state is None          # train.save: none (the default)


# --------------------------------------------------------------------------- user mistakes: exit 2, one line
def _dup_dir(tmp_path, src_out, rid):
    """A sweep dir whose runs hold the same run_id twice (two parts written outside the sink)."""
    import shutil

    from sweeps.sink import write_table_atomic
    d = tmp_path / "dup"
    shutil.copytree(src_out, d)
    row = [r for r in ResultSink(d).read_rows("runs") if r["run_id"] == rid]
    write_table_atomic(row, d / "runs" / "part-zz.parquet")
    return d


@pytest.mark.parametrize("case", [
    "missing-dir", "no-runs", "no-checkpoint", "no-such-run", "duplicate-run", "best-not-a-column", "bad-mode",
    "where-matches-nothing", "where-not-a-column", "both-selectors", "unknown-key", "not-mergeable", "io-dims",
    "adapter-cannot-adapt", "disagreeing-field"])
def test_model_from_mistakes(case, src, tmp_path, capsys, monkeypatch):
    out, rows = src
    full, lora = rows[("full", 0)]["run_id"], rows[("lora", 0)]["run_id"]
    work = tmp_path / "work"
    work.mkdir()
    sel, extra, adapter, task, expect = {"dir": str(out), "run_id": full}, "", "{name: full}", None, "model.from"
    if case == "missing-dir":
        sel, expect = {"dir": str(tmp_path / "nope"), "run_id": full}, "does not exist"
    elif case == "no-runs":
        (tmp_path / "empty").mkdir()
        sel, expect = {"dir": str(tmp_path / "empty"), "run_id": full}, "holds no runs"
    elif case == "no-checkpoint":
        sel, expect = {"dir": str(out), "run_id": rows[("full", 5)]["run_id"]}, "no checkpoint"
    elif case == "no-such-run":
        sel, expect = {"dir": str(out), "run_id": "0123456789abcdef"}, "no run 0123456789abcdef"
    elif case == "duplicate-run":
        sel, expect = {"dir": str(_dup_dir(tmp_path, out, full)), "run_id": full}, "matches 2 rows"
    elif case == "best-not-a-column":
        sel, expect = {"dir": str(out), "best": "val/nope", "mode": "min"}, "model.from.best"
    elif case == "bad-mode":
        sel, expect = {"dir": str(out), "best": "val/mse", "mode": "lowest"}, "model.from.mode"
    elif case == "where-matches-nothing":
        sel = {"dir": str(out), "best": "val/mse", "mode": "min", "where": {"adapter.name": "bias_only"}}
        expect = "no run"
    elif case == "where-not-a-column":
        sel, expect = {"dir": str(out), "best": "val/mse", "mode": "min", "where": {"adapter.colour": 1}}, "adapter.colour"
    elif case == "both-selectors":
        sel = {"dir": str(out), "run_id": full, "best": "val/mse", "mode": "min"}
    elif case == "unknown-key":
        sel, expect = {"dir": str(out), "run": full}, "model.from.run"
    elif case == "not-mergeable":
        sel, expect = {"dir": str(out), "run_id": rows[("additive_relu", 0)]["run_id"]}, "additive_relu"
    elif case == "io-dims":
        task, expect = "{name: ftc_relabel, dim: 4}", "(in, out)"
    elif case == "adapter-cannot-adapt":
        sel, adapter, expect = {"dir": str(out), "run_id": lora}, "{name: lora, rank: 16}", "adapter.rank"
    elif case == "disagreeing-field":
        extra, expect = ", width: 4", "model.width"
    kw = {"task": task} if task else {}
    spec = spec_file(work, sel, extra, adapter=adapter, **kw)
    monkeypatch.chdir(work)
    before = sorted(tmp_path.rglob("*")), sorted(out.rglob("*"))
    for cmd in (["validate", str(spec)], ["run", str(spec), "--out", str(work / "o")]):
        code = main(cmd)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, err
        assert len(err) == 1 and err[0].startswith("ftsweep: error:") and expect in err[0], err
    assert (sorted(tmp_path.rglob("*")), sorted(out.rglob("*"))) == before


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_a_row_written_before_a_later_field_reads_as_its_default(missing):
    """A part mixing rows from before `train.precision` existed reads the old rows' cell as null: row_member takes
    the field's default, so the member (and its run_id) is the one that row recorded."""
    m = member_from_dict(cfg({"name": "lora", "rank": 2}))
    row = {"run_id": m.run_id(), **m.flat()}
    old = {**row, "train.precision": missing}
    assert row_member(old).train.precision == "fp32" and row_member(old).run_id() == m.run_id()
    with pytest.raises(ValueError, match="train.lr"):
        row_member({**row, "train.lr": None})              # other fields are never silently defaulted
