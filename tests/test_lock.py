"""One driver per output directory (issue 15, item 3): the lock of sweeps/lock.py held by a real other process,
and the real CLI refusing a second driver (exit 1, one line naming host, pid and since when) without changing
the directory; a lock left by a driver that died is taken over, saying whose it was."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweeps.lock import LOCK_NAME, DirLock, Holder, LockHeld

ROOT = Path(__file__).parent.parent
FTC = ROOT / "sweeps" / "ftc_capacity.yaml"

HOLD = """
import sys, time
from sweeps.lock import DirLock
DirLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """hold(d) -> a separate process holding d's lock (killed at the end)."""
    procs = []

    def hold(d: Path) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(d)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p
    yield hold
    for p in procs:
        p.kill()
        p.wait()


def snapshot(d: Path) -> dict:
    return {p.relative_to(d): (None if p.is_dir() else p.read_bytes()) for p in sorted(d.rglob("*"))}


def test_a_held_lock_names_its_holder(tmp_path, holder):
    p = holder(tmp_path)
    with pytest.raises(LockHeld) as e:
        DirLock(tmp_path).acquire()
    msg = str(e.value)
    assert f"host {socket.gethostname()}, pid {p.pid}, since 20" in msg and "one driver per output directory" in msg


def test_a_dead_holders_lock_is_taken_over_and_named(tmp_path, holder):
    """kill -9 the holder: the kernel releases its lock, its file stays; the next driver takes it over and learns
    whose it was. Release removes the file."""
    p = holder(tmp_path)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (tmp_path / LOCK_NAME).exists()
    lock = DirLock(tmp_path)
    stale = lock.acquire()
    assert stale is not None and stale.pid == p.pid and stale.gone()
    assert Holder.parse((tmp_path / LOCK_NAME).read_text()).pid == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_one_lock_at_a_time_then_the_next(tmp_path):
    first, second = DirLock(tmp_path), DirLock(tmp_path)
    assert first.acquire() is None
    with pytest.raises(LockHeld):
        second.acquire()                          # flock conflicts between open files, even in one process
    first.release()
    assert second.acquire() is None and second.held
    second.release()
    assert list(tmp_path.iterdir()) == []


def test_a_symlinked_lock_file_is_not_followed(tmp_path):
    (tmp_path / "elsewhere").write_text("x")
    (tmp_path / LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        DirLock(tmp_path).acquire()
    assert (tmp_path / "elsewhere").read_text() == "x"


def sweep_dir(d: Path) -> Path:
    """A sweep directory as a driver leaves it after a trial failed for good: spec.yaml and a failed part."""
    d.mkdir()
    (d / "spec.yaml").write_bytes(FTC.read_bytes())
    (d / "runs").mkdir()
    pq.write_table(pa.table({"run_id": ["r0"], "status": ["failed"]}), d / "runs" / "part-t0.0badc0de-failed.parquet")
    return d


def test_resume_refuses_a_directory_another_driver_holds(tmp_path, holder, capsys):
    from sweeps.cli import main
    d = sweep_dir(tmp_path / "sweep")
    p = holder(d)
    before = snapshot(d)
    assert main(["resume", str(d)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ftsweep: error:") and f"pid {p.pid}, since" in err[0], err
    assert snapshot(d) == before                 # the failed part is still there, the lock file is the holder's


def test_the_cli_says_whose_stale_lock_it_took(tmp_path, holder, capsys):
    from sweeps.api import lock_dir
    from sweeps.cli import _say
    p = holder(tmp_path)
    p.kill()
    p.wait()
    lock = lock_dir(str(tmp_path), _say)         # as `ftsweep run/resume` take it
    try:
        out = capsys.readouterr().out
        assert f"took over the lock of {tmp_path}" in out and f"pid {p.pid}" in out
    finally:
        lock.release()


@pytest.mark.slow
def test_run_refuses_a_directory_another_driver_holds(tmp_path, holder):
    """`ftsweep run --out DIR` takes the lock once Ray is up (DIR may not exist before): a held DIR exits 1 in one
    line and gets no spec.yaml."""
    d = tmp_path / "out"
    d.mkdir()
    p = holder(d)
    before = snapshot(d)
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(FTC), "--out", str(d), "task.n=[8]",
                        "seeds=1"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and f"pid {p.pid}, since" in err[0] and "Traceback" not in r.stderr, err
    assert snapshot(d) == before and time.time() - t0 < 120
