"""The bad-input corpus (tests/bad_inputs/corpus.yaml, issues 6 and 15): each malformed spec, override, option or
directory makes the subcommands it is run through (run, validate, resume, submit, report) exit with code 2 and
one line `ftsweep: error: ...` naming the problem, and leaves the tree byte-identical (no file added, removed or
changed: in particular resume keeps its sweep's failed part, which it deletes only once every check passed).
Run in-process through `sweeps.cli.main` (the same code path as the console script; tests/test_cli.py runs a
few as real subprocesses)."""
import os
import shutil
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from sweeps.cli import main

ROOT = Path(__file__).parent.parent
CASES = [c for f in sorted((Path(__file__).parent / "bad_inputs").glob("*.yaml"))
         for c in yaml.safe_load(f.read_text())]


def spec_path(spec: str, tmp_path: Path, encoding: str = "utf-8") -> str:
    spec = "ftc_capacity" if spec is None else spec
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


def _mode_bits_bind() -> bool:
    """Whether a read-only directory stops this process (not so for root with CAP_DAC_OVERRIDE)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, stat.S_IRUSR | stat.S_IXUSR)
        try:
            Path(tmp, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(tmp, stat.S_IRWXU)
        return False


READONLY_BINDS = _mode_bits_bind()


def tree(root: Path) -> dict:
    """Every path under root with its bytes (None for a directory, the target for a symlink, which is not
    followed): 'nothing changed' is equality."""
    def content(p: Path):
        if p.is_symlink():
            return ("->", os.readlink(p))
        return None if p.is_dir() else p.read_bytes()
    return {p: content(p) for p in sorted(root.rglob("*"))}


def failed_part(runs: Path) -> None:
    """A real `-failed` part (as the driver writes for a trial that failed after its retries): resume deletes
    such parts, but only once every check has passed."""
    runs.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"run_id": ["r0"], "status": ["failed"]}), runs / "part-t0.0badc0de-failed.parquet")


def sweep_dir(d: Path, spec: str) -> None:
    """A sweep output directory as `ftsweep run` leaves it after a failed trial: spec.yaml, a failed part."""
    d.mkdir()
    (d / "spec.yaml").write_bytes(Path(spec).read_bytes())
    failed_part(d / "runs")


def report_dir(d: Path) -> None:
    """A directory that `ftsweep report` would report on (one ok run)."""
    (d / "runs").mkdir(parents=True)
    pq.write_table(pa.table({"run_id": ["r0"], "sweep": ["x"], "status": ["ok"]}), d / "runs" / "part-t0.parquet")


def shape(d: Path, how: str | None, tmp_path: Path) -> None:
    """Turn directory `d` (built or not) into the case's `dir` shape."""
    if how is None:
        return
    if how in ("missing", "spec-missing") and d.exists():
        target = d / "spec.yaml" if how == "spec-missing" else d
        target.unlink() if target.is_file() else shutil.rmtree(target)
    elif how == "file":
        if d.exists():
            shutil.rmtree(d)
        d.write_text("not a directory\n")
    elif how == "under-file":          # d's parent is a regular file
        d.parent.rename(tmp_path / "aside")
        d.parent.write_text("a file\n")
    elif how in ("symlink", "dangling-symlink"):
        real = tmp_path / "real"
        if d.exists():
            d.rename(real)
        if how == "symlink" and not real.exists():
            real.mkdir()
        d.symlink_to(real)
    elif how == "symlink-to-file":
        (tmp_path / "a_file").write_text("x\n")
        d.symlink_to(tmp_path / "a_file")
    elif how in ("readonly", "readonly-parent"):
        if how == "readonly":
            d.mkdir(exist_ok=True)
        target = d if how == "readonly" else d.parent
        target.chmod(stat.S_IRUSR | stat.S_IXUSR)
    elif how.endswith("-symlink") or how.endswith("-file") or how.endswith("-dir") or how.endswith("-readonly"):
        name, kind = how.rsplit("-", 1)            # e.g. runs-symlink, report-file, spec.yaml-dir
        d.mkdir(exist_ok=True)
        entry = d / name
        if entry.is_dir() and kind != "readonly":
            entry.rename(tmp_path / f"{name}-moved")
        elif entry.exists():
            entry.unlink() if kind != "readonly" else None
        if kind == "symlink":
            (tmp_path / "elsewhere").mkdir(exist_ok=True)
            entry.symlink_to(tmp_path / "elsewhere")
        elif kind == "file":
            entry.write_text("not a directory\n")
        elif kind == "dir":
            entry.mkdir()
        else:
            entry.mkdir(exist_ok=True)
            entry.chmod(stat.S_IRUSR | stat.S_IXUSR)
    elif how == "has-results":
        report_dir(d)
    elif how == "no-runs":
        shutil.rmtree(d / "runs")
    elif how == "no-parts":
        (d / "runs").mkdir(parents=True, exist_ok=True)
        for p in (d / "runs").iterdir():
            p.unlink()
    elif how == "no-rows":
        for p in (d / "runs").iterdir():
            p.unlink()
        pq.write_table(pa.table({"run_id": pa.array([], pa.string())}), d / "runs" / "part-t0.parquet")
    else:
        raise AssertionError(f"unknown dir shape {how!r}")


def argv(cmd: str, case: dict, spec: str, tmp_path: Path) -> list[str]:
    """The command line of `cmd` on the case: run/submit/validate take SPEC and overrides; resume takes a sweep
    directory whose saved spec.yaml is the case's spec (so resume reads it exactly as it would its own); report
    takes a directory with one run. `dir` reshapes the directory the command writes into (run's --out, resume's
    and report's DIR)."""
    rest = [*case.get("overrides", []), *case.get("args", [])]
    if cmd == "run":
        d = tmp_path / "parent" / "out"
        (tmp_path / "parent").mkdir()
        shape(d, case.get("dir"), tmp_path)
        return ["run", spec, *rest, *([] if "--out" in rest else ["--out", str(d)])]
    if cmd == "validate":
        return ["validate", spec, *rest]
    if cmd == "submit":       # refused before the cluster is contacted (nothing listens there)
        out = [] if "--resume" in rest or "--out" in rest else ["--out", "/nonexistent/out"]
        address = [] if "--address" in rest else ["--address", "http://127.0.0.1:1"]
        return ["submit", *([] if "--resume" in rest else [spec]), *rest, *address, *out]
    d = tmp_path / "parent" / "sweep"
    (tmp_path / "parent").mkdir()
    if cmd == "resume":
        sweep_dir(d, spec)
        shape(d, case.get("dir"), tmp_path)
        return ["resume", str(d), *rest]
    assert cmd == "report" and not case.get("overrides"), case["id"]
    report_dir(d)
    if case.get("dir") == "uri":
        return ["report", "s3://no-such-bucket/sweep", *rest]
    shape(d, case.get("dir"), tmp_path)
    return ["report", str(d), *rest]


@pytest.fixture
def restore_modes(tmp_path):
    """Read-only shapes: give the owner write access back so that pytest can remove tmp_path."""
    yield
    for p in [tmp_path, *tmp_path.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


@pytest.mark.parametrize("case,cmd", RUNS, ids=[f"{c['id']}-{cmd}" for c, cmd in RUNS])
def test_bad_input(case, cmd, tmp_path, capsys, monkeypatch, restore_modes):
    if not READONLY_BINDS and "readonly" in (case.get("dir") or ""):
        pytest.skip("this user writes through mode bits (root)")
    monkeypatch.chdir(tmp_path)
    spec = spec_path(case.get("spec"), tmp_path, case.get("encoding", "utf-8"))
    args = argv(cmd, case, spec, tmp_path)
    before = tree(tmp_path)
    try:
        code = main(args)
    except SystemExit as e:       # argparse's own usage errors exit 2 too
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("ftsweep: error:") and case["expect"] in err[0], err
    assert tree(tmp_path) == before


def test_corpus_covers_every_subcommand_and_dir_shape():
    cmds = {cmd for _, cmd in RUNS}
    assert cmds == {"run", "validate", "resume", "submit", "report"}, cmds
    shapes = {(cmd, c.get("dir")) for c, cmd in RUNS if c.get("dir")}
    for cmd in ("run", "resume", "report"):
        assert {(cmd, s) for s in ("file", "symlink", "readonly")} <= shapes, cmd


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
