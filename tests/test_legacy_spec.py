"""A sweep started before search kinds had their own configs saved a spec.yaml whose `search:` lists every kind's
fields (tests/data/legacy_spec_*.yaml were written by that version's `spec_to_yaml`). `ftsweep resume` must still
read it, build the same run_ids as the shipped YAML, and refuse a field of another kind set to a non-default value."""
from pathlib import Path

import pytest
from grid_ids import pinned_run_ids

from sweeps.spec import SpecError, load_spec

DATA = Path(__file__).parent / "data"
SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"


@pytest.mark.parametrize("name", ["ftc_capacity", "lora_rank", "mamba_icl"])
def test_legacy_spec_yaml_resumes_with_the_same_run_ids(name):
    legacy = DATA / f"legacy_spec_{name}.yaml"
    assert "n_trials" in legacy.read_text() and "quorum" in legacy.read_text()      # the one-schema form
    assert pinned_run_ids(legacy) == pinned_run_ids(SWEEPS / f"{name}.yaml")


def test_a_field_of_another_kind_with_a_value_is_refused(tmp_path):
    text = (DATA / "legacy_spec_lora_rank.yaml").read_text().replace("quorum: 0.5", "quorum: 0.9")
    (tmp_path / "spec.yaml").write_text(text)
    with pytest.raises(SpecError, match=r"search\.quorum: unknown key"):
        load_spec(tmp_path / "spec.yaml")


def test_switching_the_search_kind_by_override_leaves_the_other_kinds_fields_behind():
    """`search.kind=grid` on a capacity sweep: an override cannot delete the YAML's ladder and quorum."""
    spec = load_spec(SWEEPS / "ftc_capacity.yaml", ["search.kind=grid", "report.kind=", "adapter.width=8", "task.n=[4]"])
    assert spec.search.kind == "grid" and not hasattr(spec.search, "quorum")
