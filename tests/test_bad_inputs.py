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


def spec_path(spec: str, tmp_path: Path, encoding: str = "utf-8") -> str:
    if spec == "MISSING":
        return str(tmp_path / "no_such_spec.yaml")
    if spec == "DIR":
        (tmp_path / "a_dir.yaml").mkdir()
        return str(tmp_path / "a_dir.yaml")
    shipped = ROOT / "sweeps" / f"{spec}.yaml"
    if spec and "\n" not in spec and shipped.exists():
        return str(shipped)
    path = tmp_path / "spec.yaml"
    path.write_bytes(spec.encode(encoding))
    return str(path)


def test_corpus_is_large_and_unique():
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 70 and len(set(ids)) == len(ids)


RUNS = [(c, cmd) for c in CASES for cmd in c.get("cmds", ["run"])]


def tree(root: Path) -> dict:
    """Every path under root with its bytes (None for a directory): 'nothing changed' is equality."""
    return {p: (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def argv(cmd: str, case: dict, spec: str, tmp_path: Path) -> list[str]:
    """The command line of `cmd` on the case: run/submit/validate take SPEC and overrides; resume takes a sweep
    directory whose saved spec.yaml is the case's spec (so resume reads it exactly as it would its own)."""
    rest = [*case.get("overrides", []), *case.get("args", [])]
    if cmd == "run":
        return ["run", spec, *rest, "--out", str(tmp_path / "out")]
    if cmd == "validate":
        return ["validate", spec, *rest]
    if cmd == "submit":       # refused before the cluster is contacted (nothing listens there)
        return ["submit", spec, *rest, "--address", "http://127.0.0.1:1", "--out", "/nonexistent/out"]
    assert cmd == "resume" and not rest, case["id"]
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "spec.yaml").write_bytes(Path(spec).read_bytes())
    (sweep / "runs").mkdir()
    return ["resume", str(sweep)]


@pytest.mark.parametrize("case,cmd", RUNS, ids=[f"{c['id']}-{cmd}" for c, cmd in RUNS])
def test_bad_input(case, cmd, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = spec_path(case["spec"], tmp_path, case.get("encoding", "utf-8"))
    args = argv(cmd, case, spec, tmp_path)
    before = tree(tmp_path)
    try:
        code = main(args)
    except SystemExit as e:       # argparse's own usage errors exit 2 too
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("ftsweep: error:") and case["expect"] in err[0], err
    assert tree(tmp_path) == before and not (tmp_path / "out").exists()


CAPS = [("lora_threshold", ["seeds=1001"], "seeds"), ("lora_threshold", ["train.steps=10000001"], "train.steps"),
        ("lora_rank", ["seeds=1000", "search.n_trials=100"], "member runs")]


@pytest.mark.parametrize("spec,overrides,needle", CAPS, ids=[c[2] for c in CAPS])
def test_no_limits_lifts_the_caps(spec, overrides, needle, tmp_path, capsys, monkeypatch):
    """Each size cap refuses without --no-limits (exit 2, one line naming the cap and the flag) and passes with
    it; neither writes anything."""
    monkeypatch.chdir(tmp_path)
    path = str(ROOT / "sweeps" / f"{spec}.yaml")
    assert main(["validate", path, *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "--no-limits" in err[0], err
    assert main(["validate", path, *overrides, "--no-limits"]) == 0
    assert list(tmp_path.iterdir()) == []


def test_shipped_sweeps_use_no_alias_or_interpolation():
    """The strict loader refuses aliases and ${...}: no shipped sweep uses either (their variants included)."""
    from sweeps.spec import _read_yaml
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        assert isinstance(_read_yaml(path), dict), path
