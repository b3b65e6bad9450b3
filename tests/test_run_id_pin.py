"""run_ids of the shipped sweeps are pinned (tests/data/run_ids_pinned.json, written before the issue-15 redesign of
the config boundary; sweeps added later are pinned when they are added): every grid point x seed of every sweep and
variant, with a capacity ladder's first, middle and last value. A change that moves one id would orphan every recorded
result (resume, merges, base checkpoints). Variants that read a recorded run (`model.from`, `task.teacher`:
needles_finetune, feature_retrieval, feature_distill, t2i_icl[finetune]) are left out: their ids hash that run's id; so
are variants on a Hugging Face model by path (its path is in their ids)."""
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from grid_ids import pinned_run_ids
from trained_sources import STAGES, source_overrides

ROOT = Path(__file__).resolve().parent.parent
PINNED = json.loads((Path(__file__).parent / "data" / "run_ids_pinned.json").read_text())


def _cases():
    for key in sorted(PINNED):
        stem, _, variant = key.partition("[")
        yield key, ROOT / "sweeps" / f"{stem}.yaml", variant.rstrip("]")


def test_every_shipped_sweep_is_pinned():
    fake = {name: Path("x") for name in [*STAGES, "hf_tiny"]}
    for p in (ROOT / "sweeps").glob("*.yaml"):
        for v in [""] + list(yaml.safe_load(p.read_text()).get("variants") or {}):
            if not source_overrides(p, v, fake):          # a variant that reads a recorded run is left out
                assert (p.stem + (f"[{v}]" if v else "")) in PINNED, (p.stem, v)


@pytest.mark.parametrize("key,path,variant", list(_cases()), ids=[k for k, _, _ in _cases()])
def test_run_ids_unchanged(key, path, variant):
    ids = pinned_run_ids(path, [f"variant={variant}"] if variant else [])
    want = PINNED[key]
    assert (len(ids), ids[:3]) == (want["n"], want["first"])
    assert hashlib.sha256("\n".join(ids).encode()).hexdigest() == want["sha256"]


def test_search_and_report_columns_unchanged():
    """The search.* and report.* columns every runs row carries (sweeps.runner.sweep_meta), pinned per shipped sweep
    before the search and report sections became their kinds' own configs: same names, order and values."""
    from sweeps.runner import sweep_meta
    from sweeps.spec import load_spec
    pinned = json.loads((Path(__file__).parent / "data" / "sweep_meta_pinned.json").read_text())
    assert len(pinned) >= 10
    for stem, want in pinned.items():
        got = sweep_meta(load_spec(ROOT / "sweeps" / f"{stem}.yaml"))
        assert list(got.items()) == list(want.items()), stem
