"""The Python API (issue 16, item 2): `sweeps.run` on a dict spec on a real local Ray, `sweeps.load` of the directory
and of its file:// URI, `.fits` read from the report or computed, and a bad spec raising `sweeps.SweepError` with
the very line `ftsweep` prints, nothing written."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import sweeps
from analysis import write_report
from analysis.synthetic import capacity_runs, curves_for, write_parts
from sweeps.cli import main
from tests.grid_ids import grid_run_ids

ROOT = Path(__file__).parent.parent
FTC = ROOT / "sweeps" / "ftc_capacity.yaml"
TINY = {"name": "api_tiny",
        "model": {"name": "mlp", "width": 8, "depth": 2},
        "task": {"name": "lora_teacher", "batch_size": 16, "n_val": 32, "n_test": 32},
        "adapter": {"name": "full"},
        "train": {"steps": 20, "lr": 1.0e-2, "eval_every": 10, "early_stop": False},
        "axes": {"train.lr": (1.0e-2, 3.0e-2)},            # a tuple: written out as a YAML list
        "seeds": 2}


def tree(root: Path) -> dict:
    return {p: (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def test_import_sweeps_is_light():
    """`import sweeps` and the API's names load no Ray, torch or pandas; the names resolve to sweeps.api."""
    code = ("import sys, sweeps; e = sweeps.SweepError; sweeps.run; sweeps.load; sweeps.SweepResult; "
            "assert issubclass(e, ValueError); "
            "print(sorted(m for m in ('ray', 'torch', 'pandas', 'pyarrow') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    with pytest.raises(AttributeError):
        sweeps.no_such_name                                 # noqa: B018


@pytest.mark.slow
def test_run_a_dict_then_load_it_back(tmp_path, capsys):
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump({**TINY, "axes": {"train.lr": list(TINY["axes"]["train.lr"])}}))
    expected = sorted(grid_run_ids(spec_file))
    assert len(expected) == 4
    out = tmp_path / "out"
    result = sweeps.run(TINY, overrides=["train.steps=20"], out=str(out))
    printed = capsys.readouterr()
    # not a terminal here: the plain lines of `ftsweep run`, no status line
    assert "[ftsweep] done: 4 member runs" in printed.out and "\x1b" not in printed.out + printed.err
    assert sorted(result.runs["run_id"]) == expected
    assert set(result.runs["status"]) == {"ok"} and set(result.runs["train.lr"]) == {1.0e-2, 3.0e-2}
    steps = result.curves.groupby("run_id")["step"].apply(list)
    assert sorted(steps.index) == expected and all(s == [0, 10, 20] for s in steps)     # every eval_every = 10
    assert result.counts["runs"] == 4 and result.report == out / "report" / "report.md"
    assert result.report.is_file() and isinstance(result.fits, pd.DataFrame) and result.fits.empty  # a grid: no fit
    assert yaml.safe_load((out / "spec.yaml").read_text())["axes"] == {"train.lr": [1.0e-2, 3.0e-2]}

    for where in (out, f"file://{out}"):
        back = sweeps.load(where)
        assert back.dir == str(where) and back.counts is None
        pd.testing.assert_frame_equal(back.runs.sort_values("run_id", ignore_index=True),
                                      result.runs.sort_values("run_id", ignore_index=True))
        pd.testing.assert_frame_equal(back.curves, result.curves)

    lines = []                                              # the same directory again: refused, nothing changed
    before = tree(out)
    with pytest.raises(sweeps.SweepError, match="already holds results"):
        sweeps.run(TINY, out=str(out), progress=lines.append)
    assert tree(out) == before and lines == []


def cli_line(args: list[str], capsys) -> str:
    """The one line `ftsweep ARGS` prints for a user mistake (exit 2), without its "ftsweep: error: " prefix."""
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ftsweep: error: "), err
    return err[0][len("ftsweep: error: "):]


def ftc_dict() -> dict:
    return yaml.safe_load(FTC.read_text())


BAD = {   # id: (spec as a dict, overrides)
    "override makes N > K": (ftc_dict, ["task.k=8"]),
    "unknown section": (lambda: {**ftc_dict(), "bogus": {"x": 1}}, []),
    "unknown registry name": (ftc_dict, ["adapter.name=nope"]),
    "NaN learning rate": (lambda: {**ftc_dict(), "train": {**ftc_dict()["train"], "lr": float("nan")}}, []),
    "name with a path": (lambda: {**ftc_dict(), "name": "../up"}, []),
    "repeated axis value": (lambda: {**ftc_dict(), "axes": {**ftc_dict()["axes"], "task.n": [8, 8]}}, []),
    "seeds over the cap": (ftc_dict, ["seeds=5000"]),
    "override without =": (ftc_dict, ["noequals"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_dict_spec_raises_the_line_ftsweep_validate_prints(case, tmp_path, capsys, monkeypatch):
    make, overrides = BAD[case]
    spec = make()
    as_file = tmp_path / "spec.yaml"
    as_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    line = cli_line(["validate", str(as_file), *overrides], capsys)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)                                 # out=None: results/<name> would land here
    with pytest.raises(sweeps.SweepError) as e:
        sweeps.run(spec, overrides=overrides, progress=False)
    assert str(e.value) == line and isinstance(e.value, ValueError)
    assert list(work.iterdir()) == []                       # nothing written


def test_a_bad_path_spec_or_out_raises_the_line_ftsweep_run_prints(tmp_path, capsys):
    missing = str(tmp_path / "missing.yaml")
    with pytest.raises(sweeps.SweepError) as e:
        sweeps.run(missing, out=str(tmp_path / "o"))
    assert str(e.value) == cli_line(["run", missing, "--out", str(tmp_path / "o")], capsys)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(sweeps.SweepError) as e:
        sweeps.run(str(FTC), out=str(a_file))
    assert str(e.value) == cli_line(["run", str(FTC), "--out", str(a_file)], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.parametrize("spec,overrides,needle", [
    ({"name": "x", "train": {"lr": object()}}, [], "object value"),
    (TINY, "seeds=2", "a list of 'key=value' strings"),
    (42, [], "a path to a YAML file or a dict"),
])
def test_what_is_not_a_spec_is_a_sweep_error(spec, overrides, needle, tmp_path):
    with pytest.raises(sweeps.SweepError, match=needle) as e:
        sweeps.run(spec, overrides=overrides, out=str(tmp_path / "o"))
    assert "\n" not in str(e.value) and not (tmp_path / "o").exists()


def test_load_of_what_is_not_a_sweep_is_a_sweep_error(tmp_path):
    with pytest.raises(sweeps.SweepError, match="not a directory"):
        sweeps.load(tmp_path / "missing")
    with pytest.raises(sweeps.SweepError, match="no runs part files"):
        sweeps.load(tmp_path)
    with pytest.raises(sweeps.SweepError, match="no runs part files"):
        sweeps.load(f"file://{tmp_path}")


def test_fits_are_the_reports_or_computed_without_writing(tmp_path):
    """No report yet: the fits are computed (the known exponents 1 and 1/2 recovered), DIR untouched. A fresh
    fits.json is what `.fits` returns, as saved; once a runs part is newer than it, the fits are computed again."""
    runs = capacity_runs(seeds=3, rng=3)
    write_parts(runs, tmp_path, "runs", n_parts=2)
    write_parts(curves_for(runs.iloc[:6]), tmp_path, "curves", n_parts=1)
    before = tree(tmp_path)
    computed = sweeps.load(tmp_path).fits
    assert tree(tmp_path) == before
    full = computed[computed["range"] == "all"].set_index("group")
    assert abs(full.loc["adapter.depth=2", "exponent"] - 1.0) < 0.1
    assert abs(full.loc["adapter.depth=3", "exponent"] - 0.5) < 0.1

    write_report(tmp_path)
    saved = tmp_path / "report" / "fits.json"
    records = json.loads(saved.read_text())
    assert len(records) == len(computed) == 4
    saved.write_text(json.dumps(records[:1]))               # the report says one fit: that is what load returns
    pd.testing.assert_frame_equal(sweeps.load(tmp_path).fits, pd.DataFrame.from_records(records[:1]))

    later = write_parts(runs.iloc[:3], tmp_path / "more", "runs", n_parts=1)[0]
    newer = later.rename(tmp_path / "runs" / "part-later.parquet")
    t = saved.stat().st_mtime_ns + 10**9
    os.utime(newer, ns=(t, t))
    assert len(sweeps.load(tmp_path).fits) == 4             # stale report: computed from the runs again
