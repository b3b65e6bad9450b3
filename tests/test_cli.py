"""The ftsweep CLI on bad input: exit code 2, one line on stderr naming the problem, no traceback, nothing written."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
FTC = str(ROOT / "sweeps" / "ftc_capacity.yaml")
LORA = str(ROOT / "sweeps" / "lora_rank.yaml")


def ftsweep(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sweeps.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


BAD = [
    (["run", LORA, "adapter.rank=17"], "adapter.rank"),
    (["run", LORA, "model.width=-3"], "model.width"),
    (["run", FTC, "task.k=8"], "task.n"),
    (["run", FTC, "adapter.name=nope"], "adapter.name"),
    (["run", FTC, "unknown.key=1"], "unknown"),
    (["run", FTC, "train.lr=abc"], "train.lr"),
    (["run", FTC, "task.n=[]"], "axes.task.n"),
    (["run", FTC, "noequals"], "override"),
    (["run", str(ROOT / "missing.yaml")], "missing.yaml"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a[2:]) or a[1] for a, _ in BAD])
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, args, needle):
    out = tmp_path / "out"
    r = ftsweep(*args, "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ftsweep: error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_bad_kernel_choice_exit_2_nothing_written(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", FTC, "--out", str(out)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120, check=False, env={**os.environ, "FTCORE_KERNELS": "cuda"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "FTCORE_KERNELS" in lines[0] and "auto, torch, triton" in lines[0], r.stderr
    assert not out.exists()


def test_bad_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: {name: ftc_relabel\n")
    r = ftsweep("validate", str(bad))
    assert r.returncode == 2 and "invalid YAML" in r.stderr and "Traceback" not in r.stderr


def test_validate_ok():
    r = ftsweep("validate", LORA, "model.width=4")
    assert r.returncode == 0 and "OK" in r.stdout


def test_report_on_a_non_sweep_dir(tmp_path):
    r = ftsweep("report", str(tmp_path))
    assert r.returncode == 2 and "runs/" in r.stderr


def test_out_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = ftsweep("run", FTC, "--out", str(f))
    assert r.returncode == 2 and "not a directory" in r.stderr


def test_report_names_a_corrupt_part(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / "runs").mkdir()
    good = tmp_path / "runs" / "part-a.parquet"
    pq.write_table(pa.table({"run_id": ["x"], "status": ["ok"]}), good)
    bad = tmp_path / "runs" / "part-b.parquet"
    bad.write_bytes(good.read_bytes()[:20])                  # truncated
    r = ftsweep("report", str(tmp_path))
    assert r.returncode == 1 and "part-b.parquet" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_report_on_empty_runs(tmp_path):
    (tmp_path / "runs").mkdir()
    r = ftsweep("report", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


def test_run_refuses_an_output_dir_with_results(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / "runs").mkdir()
    pq.write_table(pa.table({"run_id": ["x"]}), tmp_path / "runs" / "part-a.parquet")
    r = ftsweep("run", FTC, "--out", str(tmp_path))
    assert r.returncode == 2 and "already holds results" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]          # nothing added


def test_overrides_may_follow_options(tmp_path):
    r = ftsweep("validate", LORA, "model.width=4", "train.method=construction")
    assert r.returncode == 0 and "8 grid points" in r.stdout, r.stdout + r.stderr
    r = ftsweep("run", LORA, "--out", str(tmp_path / "o"), "model.width=3", "adapter.rank=9")
    assert r.returncode == 2 and "adapter.rank" in r.stderr         # the trailing overrides were applied
    r = ftsweep("run", LORA, "--bogus")
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr


def test_bad_progress_interval_exit_2_nothing_written(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", FTC, "--out", str(out)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120, check=False, env={**os.environ, "FTCORE_PROGRESS_S": "soon"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "FTCORE_PROGRESS_S" in lines[0] and "'soon'" in lines[0], r.stderr
    assert not out.exists()


def test_a_usage_mistake_is_one_line(tmp_path):
    """argparse's own errors follow the contract too: exit 2, one line, the help one command away."""
    r = ftsweep("resume", str(tmp_path), "--bogus")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("ftsweep: error: unrecognized arguments: --bogus") and "--help" in r.stderr
    r = ftsweep("run", FTC, "--out")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "ftsweep run --help" in r.stderr, r.stderr


def test_submit_passes_no_limits_on_to_the_job():
    """`submit --no-limits` lifts the caps here (the spec is checked before anything is sent) and in the job's
    command, for a new sweep and for --resume (the job checks the caps again)."""
    from sweeps.cli import _parser
    from sweeps.submit import entrypoint
    args = _parser().parse_args(["submit", FTC, "--no-limits", "--address", "http://127.0.0.1:1"])
    assert args.no_limits
    assert entrypoint("/data/x", no_limits=True).endswith("--address auto --no-limits")
    assert entrypoint("~/x", resume=True, no_limits=True) == 'python -m sweeps.cli resume "$HOME"/x --address auto --no-limits'
    assert "--no-limits" not in entrypoint("/data/x") + entrypoint("/data/x", resume=True)
    over = ftsweep("submit", FTC, "seeds=5000", "--address", "http://127.0.0.1:1", "--out", "/data/x")
    assert over.returncode == 2 and "--no-limits" in over.stderr
    lifted = ftsweep("submit", FTC, "seeds=5000", "--no-limits", "--address", "http://127.0.0.1:1", "--out", "/data/x")
    assert lifted.returncode == 2 and "cannot reach the Ray Jobs API" in lifted.stderr, lifted.stderr   # got past the cap


def test_out_under_a_symlinked_parent_is_the_real_path(tmp_path):
    """Symlinks among the parents of --out are allowed and resolved once (system layouts such as /tmp ->
    /private/tmp); the directory itself may not be one (tests/bad_inputs/dirs.yaml)."""
    from sweeps.storage import check_output
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert check_output(str(tmp_path / "link" / "out")) == str(tmp_path / "link" / "out")
    (tmp_path / "real" / "out").mkdir()
    assert check_output(str(tmp_path / "link" / "out")) == str(tmp_path / "link" / "out")
    with pytest.raises(ValueError, match="is a symlink"):
        check_output(str(tmp_path / "link"))
