"""Every shipped sweep YAML validates; overrides behave as documented; mistakes are one-line SpecErrors."""
from pathlib import Path

import pytest

from analysis.report_kinds import REPORTS
from sweeps.spec import SpecError, group_label, load_spec, validate

SWEEPS = sorted((Path(__file__).parent.parent / "sweeps").glob("*.yaml"))


@pytest.fixture(scope="session")
def sources(tmp_path_factory):
    """What `model.from` / HF sweeps read before they validate (tests/trained_sources.py), built on first use."""
    from trained_sources import make_dirs
    return make_dirs(tmp_path_factory.mktemp("sources"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_shipped_sweep_validates(path, request):
    from trained_sources import needs_sources, source_overrides
    dirs = request.getfixturevalue("sources") if needs_sources(path) else {}
    spec = load_spec(path, source_overrides(path, "", dirs))
    assert validate(spec)
    assert spec.report.kind in REPORTS
    for name in spec.variants:                   # every documented variant (e.g. the GPU-sized run) validates too
        assert validate(load_spec(path, [f"variant={name}", *source_overrides(path, name, dirs)]))


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
    ("adapter.name=nope", "adapter.name"), ("train.method=rmsprop", "train.method"), ("bogus=1", "bogus"),
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


SECTION_AXIS = """
name: archs
model: {n_embd: 16, n_layer: 1}
task: {name: icl_regression, dim: 3, n_points: 5, batch_size: 4, n_eval: 4}
adapter: {name: full}
train: {steps: 2}
axes:
  model: [{name: transformer, n_head: 2, n_positions: 16}, {name: mamba, d_state: 4}]
  model.n_layer: [1, 2]
seeds: 1
"""


def _section_spec(tmp_path, overrides=()):
    path = tmp_path / "archs.yaml"
    path.write_text(SECTION_AXIS)
    return load_spec(path, list(overrides))


def test_section_valued_axis_builds_each_architecture(tmp_path):
    spec = _section_spec(tmp_path)
    members = validate(spec)
    got = sorted((m.model.name, m.model.n_layer, m.model.n_embd) for m in members)
    assert got == [("mamba", 1, 16), ("mamba", 2, 16), ("transformer", 1, 16), ("transformer", 2, 16)]
    assert {type(m.model).__name__ for m in members} == {"TransformerConfig", "MambaConfig"}
    labels = [group_label(p) for p in spec.grid_points()]
    assert labels[0] == "model.name=transformer,model.n_head=2,model.n_positions=16,model.n_layer=1"
    assert len(set(labels)) == 4


def test_override_reaches_every_choice_of_a_section_axis(tmp_path):
    spec = _section_spec(tmp_path, ["model.n_embd=32", "model.n_positions=64"])
    members = validate(spec)
    assert {m.model.n_embd for m in members} == {32}
    assert {m.model.n_positions for m in members if m.model.name == "transformer"} == {64}
    assert "n_positions" not in spec.model                 # not pushed onto mamba through the base section


@pytest.mark.parametrize("axis", ["[transformer, mamba]", "[{}]", "{name: mamba}"])
def test_section_axis_mistakes_are_one_line(tmp_path, axis):
    path = tmp_path / "bad.yaml"
    path.write_text(SECTION_AXIS.replace("  model: [{name: transformer, n_head: 2, n_positions: 16}, {name: mamba, d_state: 4}]",
                                         f"  model: {axis}"))
    with pytest.raises(SpecError, match=r"axes\.model"):
        validate(load_spec(path))


VARIANTS = SECTION_AXIS + """
variants:
  big: {model.n_embd: 64, train.steps: 7, "axes.model.n_layer": [3], seeds: 4}
"""


def test_variant_applies_its_overrides_and_the_command_line_wins(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text(VARIANTS)
    assert load_spec(path).model["n_embd"] == 16
    spec = load_spec(path, ["variant=big", "train.steps=9"])
    assert spec.variant == "big" and spec.model["n_embd"] == 64 and spec.train["steps"] == 9
    assert spec.axes["model.n_layer"] == [3] and spec.seeds == 4
    assert {m.model.n_layer for m in validate(spec)} == {3}
    with pytest.raises(SpecError, match="variant=nope: not a variant of this sweep; valid: big"):
        load_spec(path, ["variant=nope"])


def test_stage_two_must_replay_the_stage_one_corpus(sources):
    """needles_finetune's retention metric replays the stage-1 lm_text corpus: a corpus field that differs from the
    source run's is a one-line error naming it (Task.check_source), not a silently wrong retain/lm_ce."""
    path = Path(__file__).parent.parent / "sweeps" / "needles_finetune.yaml"
    over = [f"model.from.dir={sources['needles_pretrain']}"]
    with pytest.raises(SpecError, match=r"^task\.docs_max: must be the stage-1 run's task\.docs_max = 4 .*got 3"):
        validate(load_spec(path, [*over, "task.docs_max=3"]))
