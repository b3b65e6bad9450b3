"""Contract: config validation (DESIGN.md §5). Every invalid member config is refused at construction with a
ValueError whose message starts with the dotted field name (`adapter.rank: ...`), so a sweep fails at spec
expansion, not inside a Ray worker; an unknown registry name lists the valid ones; unknown keys are errors."""

import copy
import dataclasses

import pytest

import ftcore
from ftcore.config import MemberConfig

VALID = {   # one valid member per task; each bad case below edits one of them
    "ftc": {"model": {"name": "mlp", "width": 8, "depth": 2},
            "adapter": {"name": "additive_relu", "width": 4, "depth": 2},
            "task": {"name": "ftc_relabel", "dim": 4, "n": 4},
            "train": {"steps": 10}, "seed": 0},
    "teacher": {"model": {"name": "mlp", "width": 8, "depth": 2},
                "adapter": {"name": "lora", "rank": 2, "tune_bias": True},
                "task": {"name": "lora_teacher", "target_depth": 1},
                "train": {"steps": 10}, "seed": 0},
}



def edited(base: str, edits: dict) -> dict:
    """VALID[base] with dotted edits applied; value `DROP` removes the key."""
    d = copy.deepcopy(VALID[base])
    for key, value in edits.items():
        *path, last = key.split(".")
        node = d
        for p in path:
            node = node[p]
        if value is DROP:
            node.pop(last)
        else:
            node[last] = value
    return d


DROP = object()

CONSTRUCTION = {"train.method": "construction"}

BAD = [  # (base, edits, field the message must start with)
    # capacity vs shape
    ("teacher", {"adapter.rank": 9}, "adapter.rank"),                          # rank > width
    ("teacher", {"adapter.rank": -1}, "adapter.rank"),
    ("teacher", {"adapter.layers": [2]}, "adapter.layers"),
    ("teacher", {"adapter.layers": [-1]}, "adapter.layers"),
    ("teacher", {"adapter.layers": [1, 1]}, "adapter.layers"),                # would count layer 1 twice
    ("teacher", {"adapter.alpha": 0.0}, "adapter.alpha"),
    ("ftc", {"task.n": 9, "task.k": 8}, "task.n"),                           # N > K
    ("ftc", {"task.n": 0}, "task.n"),
    ("ftc", {"task.n": -3}, "task.n"),
    ("ftc", {"task.k": -1}, "task.k"),
    ("ftc", {"task.dim": 0}, "task.dim"),
    ("ftc", {"task.k_per_n": 0.5}, "task.k_per_n"),
    ("ftc", {"task.tol": 0.0}, "task.tol"),
    ("ftc", {"task.labels": "uniform"}, "task.labels"),
    ("ftc", {"model.width": 0}, "model.width"),
    ("ftc", {"model.width": -4}, "model.width"),
    ("ftc", {"model.depth": 0}, "model.depth"),
    ("ftc", {"model.activation": "gelu"}, "model.activation"),
    ("ftc", {"adapter.width": 0}, "adapter.width"),
    ("ftc", {"adapter.width": 1, "adapter.depth": 3}, "adapter.width"),
    ("ftc", {"adapter.depth": 4}, "adapter.depth"),                           # additive_relu depth 4
    ("ftc", {"adapter": {"name": "last_layers", "n_layers": 3}}, "adapter.n_layers"),
    ("ftc", {"adapter": {"name": "last_layers", "n_layers": 0}}, "adapter.n_layers"),
    ("ftc", {"adapter": {"name": "bias_only"}, "model.bias": False}, "adapter.name"),
    ("teacher", {"task.target_depth": 3}, "task.target_depth"),
    ("teacher", {"task.target_depth": 0}, "task.target_depth"),
    ("teacher", {"task.batch_size": 0}, "task.batch_size"),
    ("teacher", {"task.n_test": -1}, "task.n_test"),
    ("teacher", {"task.n_val": 0}, "task.n_val"),
    ("teacher", {"task.pretrain_level": 1.0}, "task.pretrain_level"),
    ("teacher", {"task.pretrain_max_steps": -1}, "task.pretrain_max_steps"),
    # train section
    ("ftc", {"train.method": "rmsprop"}, "train.method"),
    ("ftc", {"train.schedule": "linear"}, "train.schedule"),
    ("ftc", {"train.steps": -1}, "train.steps"),
    ("ftc", {"train.lr": 0.0}, "train.lr"),
    ("ftc", {"train.lr": -1e-3}, "train.lr"),
    ("ftc", {"train.weight_decay": -0.1}, "train.weight_decay"),
    ("ftc", {"train.grad_clip": -1.0}, "train.grad_clip"),
    ("ftc", {"train.eval_every": 0}, "train.eval_every"),
    ("ftc", {"seed": -1}, "seed"),
    # unknown keys (in every section, and at the top level)
    ("ftc", {"model.widht": 8}, "model.widht"),
    ("ftc", {"adapter.rank": 2}, "adapter.rank"),                             # a lora key on additive_relu
    ("ftc", {"task.N": 4}, "task.N"),
    ("ftc", {"train.learning_rate": 1e-3}, "train.learning_rate"),
    ("ftc", {"trian": {"steps": 5}}, "trian"),
    # missing sections / names
    ("ftc", {"adapter.name": DROP}, "adapter.name"),
    ("ftc", {"model": DROP}, "model.name"),
    # construction: an exact oracle for LoRA on lora_teacher only
    ("teacher", {**CONSTRUCTION, "adapter": {"name": "additive_relu", "width": 4}}, "adapter.name"),
    ("teacher", {**CONSTRUCTION, "adapter": {"name": "full"}}, "adapter.name"),
    ("teacher", {**CONSTRUCTION, "adapter.tune_bias": False}, "adapter.tune_bias"),
    ("teacher", {**CONSTRUCTION, "adapter.alpha": 2.0}, "adapter.alpha"),
    ("teacher", {**CONSTRUCTION, "adapter.layers": [0]}, "adapter.layers"),
    ("teacher", {**CONSTRUCTION, "model.bias": False}, "model.bias"),
    ("ftc", {**CONSTRUCTION, "adapter": {"name": "lora", "rank": 2}}, "adapter.name"),   # ftc's construction: additive_relu
]


def test_valid_bases_are_valid():
    for d in VALID.values():
        assert isinstance(ftcore.member_from_dict(d), MemberConfig)


@pytest.mark.parametrize("base,edits,fld", BAD, ids=[f"{f}-{i}" for i, (_, _, f) in enumerate(BAD)])
def test_invalid_config_names_the_field(base, edits, fld):
    with pytest.raises(ValueError) as err:
        ftcore.member_from_dict(edited(base, edits))
    assert str(err.value).startswith(fld + ":"), str(err.value)


@pytest.mark.parametrize("section,registry", [("model", ftcore.MODELS), ("adapter", ftcore.ADAPTERS),
                                              ("task", ftcore.TASKS)])
def test_unknown_name_lists_valid_names(section, registry):
    with pytest.raises(ValueError) as err:
        ftcore.member_from_dict(edited("ftc", {f"{section}.name": "no_such_entry"}))
    msg = str(err.value)
    assert msg.startswith(f"{section}.name:"), msg
    for name in registry:
        assert name in msg, (name, msg)


def test_registry_lookup_lists_valid_names():
    with pytest.raises(ValueError, match="valid: .*lora"):
        ftcore.ADAPTERS.get_entry("nope")


@pytest.mark.parametrize("registry", [ftcore.MODELS, ftcore.ADAPTERS, ftcore.TASKS], ids=lambda r: r.kind)
def test_registry_entries_have_a_config_schema(registry):
    """Each entry: a dataclass Config whose defaults are valid, named after its key; per_member names real fields."""
    assert len(registry) > 0
    for name, cls in registry.items():
        assert cls.registry_name == name
        required = getattr(cls.Config, "required", ())     # fields with no sensible default (a model's path)
        if required:
            with pytest.raises(ValueError, match=rf"^{registry.kind}\.{required[0]}: "):
                cls.Config()
            continue
        cfg = cls.Config()
        assert dataclasses.is_dataclass(cfg) and cfg.name == name
        fields = {f.name for f in dataclasses.fields(cfg)}
        assert set(getattr(cls.Config, "per_member", ())) <= fields - {"name"}, name
        assert set(getattr(cls, "per_member", ())) <= fields - {"name"}, name
        if getattr(cls, "capacity_field", None):
            assert cls.capacity_field in cls.Config.per_member, name


def test_registering_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        ftcore.ADAPTERS.register("lora")(type("Dup", (), {}))


def test_ftc_k_resolves_from_k_per_n():
    m = ftcore.member_from_dict(edited("ftc", {"task.n": 5, "task.k_per_n": 1.5}))
    assert m.task.k == 8                                           # ceil(1.5 * 5)
    m = ftcore.member_from_dict(edited("ftc", {"task.n": 5, "task.k": 11}))
    assert m.task.k == 11


def test_flat_run_id_and_pack_key():
    a = ftcore.member_from_dict(edited("teacher", {"adapter.rank": 2, "seed": 0, "train.lr": 1e-2}))
    b = ftcore.member_from_dict(edited("teacher", {"adapter.rank": 5, "seed": 3, "train.lr": 1e-3}))
    c = ftcore.member_from_dict(edited("teacher", {"model.depth": 3}))
    flat = a.flat()
    assert flat["adapter.rank"] == 2 and flat["train.lr"] == 1e-2 and flat["seed"] == 0
    assert all("." in k for k in flat if k != "seed")
    assert a.run_id() == ftcore.member_from_dict(edited("teacher", {})).run_id()
    assert len({a.run_id(), b.run_id(), c.run_id()}) == 3
    assert a.pack_key() == b.pack_key()                            # rank, seed, lr are per-member
    assert a.pack_key() != c.pack_key()
