"""Contract over every registered adapter x model (DESIGN.md §3, §5; peft `TEST_CASES`).

For packs of E=3 members (heterogeneous capacity where the adapter has a capacity field):
init == base exactly; only adapter parameters train; training moves the output; mergeable adapters
round-trip through `delta_weight`; masked (padded) entries get exactly zero gradient; member e of a pack
computes exactly what a pack holding only member e computes; `n_trainable` equals a hand count.
A newly registered adapter or model fails `test_tables_cover_registries` until it gets a row here.
"""

import copy

import pytest
import torch

import ftcore
from ftcore.adapters import build_adapter
from ftcore.fit import build_pack
from ftcore.models import build_model
from ftcore.optim import PackedAdamW
from ftcore.seeding import generators

SEEDS = [3, 4, 5]

MODEL_CASES = {   # name -> model configs every adapter that adapts it is run over
    "mlp": [{"width": 6, "depth": 2},
            {"width": 6, "depth": 3, "last_activation": False}],
    "transformer": [{"n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 16}],
    "looped_transformer": [{"n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 16, "n_loops": 2}],
    "mamba": [{"n_embd": 8, "n_layer": 1, "d_state": 4}],
    "hybrid": [{"n_embd": 8, "n_layer": 2, "n_head": 2, "n_positions": 16}],
    "mambaformer": [{"n_embd": 8, "n_layer": 2, "n_head": 2}],
    "embeddings": [{}],
}

ADAPTER_CASES = {   # name -> [(fixed fields, capacity per member or None)]
    "lora": [({}, [1, 3, 5]),
             ({"alpha": 2.0, "tune_bias": True}, [1, 3, 5]),
             ({"layers": [0]}, [2, 5, 1]),
             ({"alpha": 4.0, "init": "kaiming", "targets": ["read_out", "read_in"]}, [2, 1, 3])],   # module bases
    "additive_relu": [({"depth": 2}, [2, 5, 9]),
                      ({"depth": 3}, [2, 5, 9])],
    "full": [({}, None)],
    "last_layers": [({"n_layers": 1}, None), ({"n_layers": 2}, None)],
    "bias_only": [({}, None)],
}


def _affine(dims, layers, bias=True):
    return sum(dims[l] * dims[l + 1] + (dims[l + 1] if bias else 0) for l in layers)


def _count_lora(cfg, dims):
    layers = cfg.layers or range(len(dims) - 1)
    return sum(cfg.rank * (dims[l] + dims[l + 1]) + (dims[l + 1] if cfg.tune_bias else 0) for l in layers)


def _count_additive_relu(cfg, dims):
    m = cfg.width
    hidden = [m] if cfg.depth == 2 else [(m + 1) // 2, m // 2]
    g = [dims[0]] + hidden + [dims[-1]]
    return _affine(g, range(len(g) - 1))


HAND_COUNT = {   # name -> (adapter cfg, base dims [in, width, ..., out]) -> trainable parameters of one member
    "lora": _count_lora,
    "additive_relu": _count_additive_relu,
    "full": lambda cfg, dims: _affine(dims, range(len(dims) - 1)),
    "last_layers": lambda cfg, dims: _affine(dims, range(len(dims) - 1 - cfg.n_layers, len(dims) - 1)),
    "bias_only": lambda cfg, dims: sum(dims[1:]),
}

BLOCKS = {"transformer": "backbone.blocks", "looped_transformer": "backbone.blocks", "mamba": "layers",
          "hybrid": "layers", "mambaformer": "layers"}   # the block list `last_layers` counts from the end of

HOST_TASKS = {   # the adapted model is built through a real task (in != out for ftc, square for lora_teacher)
    "ftc_relabel": {"name": "ftc_relabel", "dim": 5, "n": 4, "k": 12},
    "lora_teacher": {"name": "lora_teacher", "batch_size": 12, "n_val": 8, "n_test": 8},
}
SEQUENCE_HOST = {"name": "icl_regression", "dim": 3, "n_points": 5, "batch_size": 4, "n_eval": 4}   # the sequence models' host
OTHER_HOSTS = {"embeddings": {"name": "contrastive", "n": 6, "dim": 3, "batch_size": 2}}


MLP_ONLY = {"lora": ("layers", "tune_bias")}        # fields of an adapter that only its mlp path has
MODULE_ONLY = {"lora": ("targets",)}                 # ... and that only its module path (sequence, HF) has
ELSEWHERE = {"hf_causal_lm": "tests/test_hf_lora.py",     # adaptable models whose contract needs a token task
             "hf_vlm": "tests/test_clustering_vlm.py",  # ... or images and prompts
             "hf_backbone": "tests/test_hf_backbone.py"}  # ... or a saved HF model


def applies(aname: str, fixed: dict, mname: str, mcfg: dict) -> bool:
    only = MLP_ONLY.get(aname, ()) if mname != "mlp" else MODULE_ONLY.get(aname, ())
    deep_enough = mname == "mlp" or fixed.get("n_layers", 1) <= mcfg.get("n_layer", 1)
    return not any(f in fixed for f in only) and deep_enough


def _cases():
    out = []
    for aname, rows in ADAPTER_CASES.items():
        for i, (fixed, caps) in enumerate(rows):
            for mname, models in MODEL_CASES.items():
                if mname not in ftcore.ADAPTERS[aname].models:
                    continue
                for j, mcfg in enumerate(models):
                    if not applies(aname, fixed, mname, mcfg):
                        continue
                    out.append(pytest.param(aname, fixed, caps, mname, mcfg, id=f"{aname}{i}-{mname}{j}"))
    return out


CASES = _cases()



def members(aname, fixed, caps, mname, mcfg, host="ftc_relabel", seeds=SEEDS):
    field = ftcore.ADAPTERS[aname].capacity_field
    out = []
    for e, seed in enumerate(seeds):
        adapter = {"name": aname, **fixed}
        if caps is not None:
            adapter[field] = caps[e]
        task = HOST_TASKS[host] if mname == "mlp" else OTHER_HOSTS.get(mname, SEQUENCE_HOST)
        out.append(ftcore.member_from_dict({"model": {"name": mname, **mcfg}, "adapter": adapter,
                                            "task": task, "seed": seed}))
    return out


def trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def randomize(model, seed=0):
    """Every trainable entry, padding included, to a random value (a trained adapter, not the zero init)."""
    g = torch.Generator().manual_seed(seed)
    for p in trainable(model).values():
        p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def own(p_alone):
    """Index of a member's own (unpadded) block inside its packed row: the alone pack's shape."""
    return tuple(slice(0, s) for s in p_alone.shape[1:])


def random_loss(model, x, seed=1):
    y = model(x)
    target = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    return (y - target).pow(2).mean((1, 2))                                     # (E,)


def const_loss(model, x):
    """A loss whose value for member e does not depend on the pack: (E,)."""
    return (model(x) - 0.5).pow(2).mean((1, 2))


def test_tables_cover_registries():
    assert set(ADAPTER_CASES) == set(ftcore.ADAPTERS)
    assert set(HAND_COUNT) == set(ftcore.ADAPTERS)
    adaptable = {m for a in ftcore.ADAPTERS.values() for m in a.models}                  # every adaptable model
    assert set(MODEL_CASES) | set(ELSEWHERE) == adaptable
    for name, rows in ADAPTER_CASES.items():
        has_capacity = ftcore.ADAPTERS[name].capacity_field is not None
        assert any(caps is not None for _, caps in rows) == has_capacity, name
        for _, caps in rows:
            assert caps is None or len(set(caps)) == len(SEEDS), "capacity must differ across the pack"


@pytest.mark.parametrize("host", list(HOST_TASKS))
@pytest.mark.parametrize("aname,fixed,caps,mname,mcfg", CASES)
def test_init_equals_base_exactly(aname, fixed, caps, mname, mcfg, host):
    task, model = build_pack(members(aname, fixed, caps, mname, mcfg, host), torch.float32)
    x = task.batch(0)[0]
    with torch.no_grad():
        assert torch.equal(model(x), model.base(x))


@pytest.mark.parametrize("aname,fixed,caps,mname,mcfg", CASES)
def test_only_adapter_params_train(aname, fixed, caps, mname, mcfg):
    task, model = build_pack(members(aname, fixed, caps, mname, mcfg), torch.float32)
    params = trainable(model)
    assert params and not any(n.startswith("base.") for n in params)
    assert not any(p.requires_grad for p in model.base.parameters())
    random_loss(model, task.batch(0)[0]).sum().backward()
    assert all(p.grad is None for p in model.base.parameters())
    assert all(p.grad is not None for p in params.values())
    assert all(p.shape[0] == len(SEEDS) for p in params.values()), "every parameter carries the member axis"


@pytest.mark.parametrize("aname,fixed,caps,mname,mcfg", CASES)
def test_adapter_freezes_the_base_it_wraps(aname, fixed, caps, mname, mcfg):
    ms = members(aname, fixed, caps, mname, mcfg)
    gens = generators([m.seed for m in ms], "base")
    base = build_model(ms[0].model, 5, 1, gens)                                  # trainable as built
    assert all(p.requires_grad for p in base.parameters())
    model = build_adapter([m.adapter for m in ms], base, 5, 1, generators([m.seed for m in ms], "adapter"))
    assert model.base is base and not any(p.requires_grad for p in base.parameters())


@pytest.mark.parametrize("aname,fixed,caps,mname,mcfg", CASES)
def test_training_moves_every_member(aname, fixed, caps, mname, mcfg):
    task, model = build_pack(members(aname, fixed, caps, mname, mcfg), torch.float32)
    x = task.batch(0)[0]
    with torch.no_grad():
        before = model(x).clone()
    opt = PackedAdamW(list(trainable(model).values()), lr=[1e-2] * 3, weight_decay=[0.0] * 3)
    for _ in range(3):
        opt.zero_grad()
        random_loss(model, x).sum().backward()
        opt.step(torch.ones(3, dtype=torch.bool))
    with torch.no_grad():
        moved = (model(x) - before).abs().flatten(1).amax(1)                    # (E,)
    assert bool((moved > 1e-5).all()), moved


@pytest.mark.parametrize("host", list(HOST_TASKS))
@pytest.mark.parametrize("aname,fixed,caps,mname,mcfg", CASES)
def test_merge_round_trip(aname, fixed, caps, mname, mcfg, host):
    task, model = build_pack(members(aname, fixed, caps, mname, mcfg, host), torch.float32)
    if not hasattr(model.base, "depth"):
        assert model.delta_weight(0) is None
        pytest.skip(f"{aname} on {mname}: no per-layer weights; merged_base() is tested in tests/test_shared_base.py")
    deltas = [model.delta_weight(l) for l in range(model.base.depth)]
    if deltas[0] is None:
        assert all(d is None for d in deltas), "mergeable for some layers only"
        pytest.skip(f"{aname} is not mergeable")
    randomize(model)
    merged = copy.deepcopy(model.base)
    with torch.no_grad():
        for l in range(model.base.depth):
            dW, db = model.delta_weight(l)
            if dW is not None:
                merged.weights[l] += dW
            if db is not None:
                merged.biases[l] += db
        x = task.batch(0)[0]
        torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model(x), model.base(x)), "randomized adapter should differ from base"


@pytest.mark.parametrize("aname,fixed,caps,mname,mcfg", CASES)
def test_packing_independence_and_masks(aname, fixed, caps, mname, mcfg):
    """Member e of the pack == a pack of member e alone: the same init on its own block, zero padding, exactly
    zero gradient on the padding (also when the padding holds garbage: the masks, not the zeros, hide it),
    the same gradient on its own block and the same output."""
    ms = members(aname, fixed, caps, mname, mcfg)
    task, model = build_pack(ms, torch.float32)
    x = task.batch(0)[0]
    packed = trainable(model)
    alone = [build_pack([m], torch.float32)[1] for m in ms]

    def pads():
        for e, a_model in enumerate(alone):
            for name, q in trainable(a_model).items():
                pad = torch.ones_like(packed[name][e], dtype=torch.bool)
                pad[own(q)] = False
                yield e, name, q, pad

    for e, name, q, pad in pads():
        p = packed[name].detach()
        assert torch.equal(p[e][own(q)], q.detach()[0]), f"init of member {e} depends on its pack ({name})"
        assert bool((p[e][pad] == 0).all()), f"padding of {name} is not zero"
    for garbage in (False, True):
        if garbage:
            randomize(model, seed=7)
        model.zero_grad()
        const_loss(model, x).sum().backward()
        for e, name, _q, pad in pads():
            assert bool((packed[name].grad[e][pad] == 0).all()), f"masked entries of {name} get a gradient"
    with torch.no_grad():
        out = model(x)
    for e, a_model in enumerate(alone):
        with torch.no_grad():
            for name, q in trainable(a_model).items():
                q.copy_(packed[name][e][own(q)].unsqueeze(0))
        a_out = a_model(x[e:e + 1])
        torch.testing.assert_close(out[e], a_out[0].detach(), rtol=1e-6, atol=1e-6)
        const_loss(a_model, x[e:e + 1]).sum().backward()
        for name, q in trainable(a_model).items():
            torch.testing.assert_close(packed[name].grad[e][own(q)], q.grad[0], rtol=1e-5, atol=1e-6)
    assert model.n_trainable() == [sum(q[0].numel() for q in trainable(a).values()) for a in alone]


@pytest.mark.parametrize("aname,fixed,caps,mname,mcfg", CASES)
def test_n_trainable_matches_hand_count(aname, fixed, caps, mname, mcfg):
    ms = members(aname, fixed, caps, mname, mcfg)
    task, model = build_pack(ms, torch.float32)
    if mname != "mlp" and aname == "lora":   # r_e · Σ (fan_in + fan_out) over the wrapped layers (peft's count)
        per_rank = sum(model.down[k].shape[1] + model.up[k].shape[2] for k in model.down)
        assert model.n_trainable() == [m.adapter.rank * per_rank for m in ms]
        return
    if mname != "mlp":                   # module-based bases: the parameters of one member it tunes
        named = [(n, p[0].numel()) for n, p in model.base.named_parameters()]
        if aname == "bias_only":
            want = sum(k for n, k in named if n.endswith(".bias"))
        elif aname == "last_layers":     # the last n blocks of the block list, and everything after them
            blocks = model.base.get_submodule(BLOCKS[mname])
            first = f"{BLOCKS[mname]}.{len(blocks) - ms[0].adapter.n_layers}."
            want = sum(k for n, k in named[next(i for i, (n, _) in enumerate(named) if n.startswith(first)):])
        else:
            want = model.base.n_params()
        assert model.n_trainable() == [want] * len(ms)
        return
    dims = model.base.dims
    assert model.n_trainable() == [HAND_COUNT[aname](m.adapter, dims) for m in ms]


@pytest.mark.parametrize("ranks,tune_bias", [([0], False), ([0], True), ([0, 2, 0], False), ([2, 0, 3], True)])
def test_lora_rank_zero(ranks, tune_bias):
    ms = [ftcore.member_from_dict({"model": {"name": "mlp", "width": 6, "depth": 2},
                                   "adapter": {"name": "lora", "rank": r, "tune_bias": tune_bias},
                                   "task": HOST_TASKS["ftc_relabel"], "train": {"steps": 20, "lr": 1e-2},
                                   "seed": s}) for s, r in enumerate(ranks)]
    task, model = build_pack(ms, torch.float32)
    x = task.batch(0)[0]
    with torch.no_grad():
        assert torch.equal(model(x), model.base(x))
    dims = model.base.dims
    assert model.n_trainable() == [HAND_COUNT["lora"](m.adapter, dims) for m in ms]
    results = ftcore.fit(ms)
    for r, res in zip(ranks, results):
        assert res.status == "ok" and res.steps == 20
        first, last = res.curve[0], res.curve[-1]
        if r == 0 and not tune_bias:          # nothing to train: the member's error never moves
            assert last["fit/max_err"] == first["fit/max_err"]
        else:
            assert last["train/loss"] < first["train/loss"]


def test_an_adapter_refuses_a_model_it_cannot_adapt():
    """Adapters declare the models they adapt (`Adapter.models`); other pairs are a config error, not a crash."""
    from ftcore.registry import MODELS

    @MODELS.register("_seq_probe")
    class _Probe:
        from dataclasses import dataclass

        @dataclass
        class Config:
            name: str = "_seq_probe"
            width: int = 4
            depth: int = 2
    try:
        with pytest.raises(ValueError, match=r"^adapter\.name: .*model '_seq_probe'"):
            ftcore.member_from_dict({"model": {"name": "_seq_probe"}, "adapter": {"name": "lora", "rank": 1},
                                     "task": HOST_TASKS["ftc_relabel"]})
    finally:
        del MODELS["_seq_probe"]
