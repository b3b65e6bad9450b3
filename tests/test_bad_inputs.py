"""The bad-input corpus (tests/bad_inputs/corpus.yaml, issue 6): each malformed spec or override makes
`ftsweep run` exit with code 2 and one line `ftsweep: error: ...` naming the problem, and writes nothing.
Run in-process through `sweeps.cli.main` (the same code path as the console script; tests/test_cli.py runs a
few as real subprocesses)."""
from pathlib import Path

import pytest
import yaml

from sweeps.cli import main

ROOT = Path(__file__).parent.parent
CASES = yaml.safe_load((Path(__file__).parent / "bad_inputs" / "corpus.yaml").read_text())


def spec_path(spec: str, tmp_path: Path) -> str:
    if spec == "MISSING":
        return str(tmp_path / "no_such_spec.yaml")
    if spec == "DIR":
        (tmp_path / "a_dir.yaml").mkdir()
        return str(tmp_path / "a_dir.yaml")
    shipped = ROOT / "sweeps" / f"{spec}.yaml"
    if spec and "\n" not in spec and shipped.exists():
        return str(shipped)
    path = tmp_path / "spec.yaml"
    path.write_text(spec)
    return str(path)


def test_corpus_is_large_and_unique():
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = spec_path(case["spec"], tmp_path)
    before = sorted(tmp_path.rglob("*"))
    out = tmp_path / "out"
    try:
        code = main(["run", spec, *case.get("overrides", []), *case.get("args", []), "--out", str(out)])
    except SystemExit as e:       # argparse's own usage errors exit 2 too
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("ftsweep: error:") and case["expect"] in err[0], err
    assert sorted(tmp_path.rglob("*")) == before and not out.exists()
