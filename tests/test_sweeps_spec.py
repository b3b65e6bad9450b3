"""Every shipped sweep YAML validates; overrides behave as documented; mistakes are one-line SpecErrors."""
from pathlib import Path

import pytest

from sweeps.spec import SpecError, load_spec, validate

SWEEPS = sorted((Path(__file__).parent.parent / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_shipped_sweep_validates(path):
    spec = load_spec(path)
    assert validate(spec)
    assert spec.report.kind in ("capacity", "rank_curve", "icl_curve")


def test_shipped_sweeps_exist():
    names = {p.name for p in SWEEPS}
    assert {"ftc_capacity.yaml", "lora_rank.yaml"} <= names


def test_lora_overrides_from_the_issue():
    spec = load_spec(SWEEPS[0].parent / "lora_rank.yaml",
                     ["train.method=construction", "model.width=6", "model.depth=4", "task.target_depth=2"])
    assert spec.axes["train.method"] == ["construction"]
    assert spec.axes["adapter.rank"] == [1, 2, 3, 4, 5, 6]        # follows model.width
    assert spec.model["depth"] == 4 and spec.task["target_depth"] == 2


def test_list_override_replaces_an_axis():
    spec = load_spec(SWEEPS[0].parent / "ftc_capacity.yaml", ["task.n=[8,16]", "seeds=2"])
    assert spec.axes["task.n"] == [8, 16] and spec.seeds == 2


@pytest.mark.parametrize("override,field", [
    ("adapter.rank=9", "adapter.rank"), ("model.width=abc", "model.width"), ("task.target_depth=5", "task.target_depth"),
    ("adapter.name=nope", "adapter.name"), ("train.method=sgd", "train.method"), ("bogus=1", "bogus"),
    ("task.nope=1", "task.nope"), ("seeds=0", "seeds"), ("train.steps=-1", "train.steps"),
    ("adapter.rank=[]", "axes.adapter.rank"),
])
def test_lora_mistakes_name_the_field(override, field):
    with pytest.raises(SpecError) as e:
        load_spec(SWEEPS[0].parent / "lora_rank.yaml", [override])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(field), msg


@pytest.mark.parametrize("override,field", [
    ("task.n=[600]", None), ("task.k=4", "task.n"), ("adapter.depth=4", "adapter.depth"),
    ("search.quorum=1.5", "search.quorum"), ("search.range=[0,4]", "adapter.width"),
    ("search.param=adapter.rank", "adapter.rank"), ("task.n=[-1]", "task.n"), ("search.kind=random", "search.kind"),
    ("execution.worker=local", "execution.worker"), ("execution.pack_size=-1", "execution.pack_size"),
    ("execution.gpus_per_trial=-0.5", "execution.gpus_per_trial"), ("execution.memory_fraction=0", "execution.memory_fraction"),
    ("execution.pack_overhead=-1", "execution.pack_overhead"), ("execution.worker=train", None),
])
def test_ftc_mistakes_name_the_field(override, field):
    if field is None:        # a valid override: larger N is allowed
        load_spec(SWEEPS[0].parent / "ftc_capacity.yaml", [override])
        return
    with pytest.raises(SpecError) as e:
        load_spec(SWEEPS[0].parent / "ftc_capacity.yaml", [override])
    assert str(e.value).startswith(field), str(e.value)
