"""A full disk (issue 15, item 6): a sweep whose filesystem fills up fails with one line and exit 1, leaves no
visible partial part, and `ftsweep resume` with space completes exactly the spec's run set.

* end to end on a real small filesystem: a tmpfs mounted in a private mount namespace (`unshare -m` as root,
  `unshare -rm` where unprivileged user namespaces are allowed; skipped where neither is), filled while the
  sweep runs (tests/full_disk_scenario.py);
* the atomic write itself under a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored, so writes fail with EFBIG),
  which needs no privilege: StorageFull, no file left (hidden temp files included), an existing part untouched.
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from grid_ids import grid_run_ids

HERE = Path(__file__).parent
PART = re.compile(r"part-([0-9a-f]{8})\.([0-9a-f]{8})\.parquet")

SPEC = """
name: full_disk
model:   {name: mlp, width: 8, depth: 2}
task:    {name: ftc_relabel, dim: 4, k_per_n: 2.0, tol: 0.1}
adapter: {name: additive_relu, depth: 2, width: 8}
train:   {steps: 1500, lr: 2.0e-2, eval_every: 50, early_stop: false}
axes:
  task.n: [8, 12]
seeds: 2
execution: {pack_size: 1, max_failures: 0}
"""


def mount_namespace(tmp_path: Path) -> list[str] | None:
    """A command prefix that runs a program in a private mount namespace where it can mount a tmpfs."""
    if shutil.which("unshare") is None:
        return None
    probe = tmp_path / "probe"
    probe.mkdir()
    for prefix in (["unshare", "-m", "--propagation", "private"], ["unshare", "-rm"]):
        r = subprocess.run([*prefix, "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                           capture_output=True, timeout=30)
        if r.returncode == 0:
            return prefix
    return None


def visible_files(d: Path) -> list[Path]:
    return sorted(p for sub in ("runs", "curves") if (d / sub).is_dir() for p in (d / sub).iterdir())


@pytest.mark.slow
def test_full_disk_fails_in_one_line_and_resume_completes(tmp_path):
    prefix = mount_namespace(tmp_path)
    if prefix is None:
        pytest.skip("cannot mount a tmpfs here (needs root or unprivileged user namespaces)")
    spec = tmp_path / "full_disk.yaml"
    spec.write_text(SPEC)
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([*prefix, sys.executable, str(HERE / "full_disk_scenario.py"), str(spec), str(work)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads((work / "summary.json").read_text())
    out, run, resume = s["out"], s["run"], s["resume"]
    assert "No space left" in s["filled"]

    # the full disk: exit 1, one line naming the problem and the way on, no traceback (Tune's included)
    assert run["rc"] == 1, run["stdout"][-2000:] + run["stderr"][-3000:]
    err = run["stderr"].strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ftsweep: error: no space left on device"), err[-5:]
    assert f"ftsweep resume {out}" in err[0]

    # nothing partial: every file in runs/ and curves/ is a committed, readable part (no temp file left)
    after = work / "after_full"
    files = visible_files(after)
    assert files and all(PART.fullmatch(p.name) for p in files), [p.name for p in files]
    done = {p.name: p.read_bytes() for p in files if p.parent.name == "runs"}
    n_done = sum(pq.read_table(p).num_rows for p in files if p.parent.name == "runs")
    assert 1 <= n_done < 4, n_done
    for p in files:
        pq.read_table(p)
    assert not (after / ".ftsweep.lock").exists()

    # resume with space: exactly the spec's runs, each once, all ok; the first driver's parts untouched
    assert resume["rc"] == 0, resume["stdout"][-2000:] + resume["stderr"][-3000:]
    final = work / "after_resume"
    runs = [pq.read_table(p) for p in sorted((final / "runs").glob("part-*.parquet"))]
    ids = [i for t in runs for i in t.column("run_id").to_pylist()]
    assert sorted(ids) == sorted(grid_run_ids(spec)) and len(set(ids)) == len(ids)
    assert {x for t in runs for x in t.column("status").to_pylist()} == {"ok"}
    for name, data in done.items():
        assert (final / "runs" / name).read_bytes() == data
    # part names carry the driver's token, one token per driver: the resumed driver's parts are its own
    tokens = {PART.fullmatch(p.name).group(2) for p in (final / "runs").iterdir()}
    first = {PART.fullmatch(n).group(2) for n in done}
    assert len(first) == 1 and len(tokens) == 2 and first < tokens
    for p in (final / "runs").iterdir():
        writer = pq.read_schema(p).metadata[b"ftsweep.writer"].decode()
        assert writer == PART.fullmatch(p.name).group(2)
    assert not (final / ".ftsweep.lock").exists()


FSIZE_WRITER = r"""
import os, resource, secrets, signal, sys
from pathlib import Path
from sweeps.sink import ResultSink
from sweeps.storage import StorageFull
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)                # writes past the limit fail with EFBIG instead
out = Path(sys.argv[1])
sink = ResultSink(out)
small = [{"run_id": "a", "status": "ok"}]
sink.write_pack("t1", small, [{"run_id": "a", "step": 0, "loss": 1.0}])
before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
big = [{"run_id": "a", "status": "ok", "blob": secrets.token_hex(40_000)}]   # incompressible, > the limit
resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, 16_384))
other = [{**big[0], "run_id": "b"}]                            # t2: a new part (run b is recorded nowhere)
curve = [{"run_id": "a", "step": 0, "loss": 1.0}]
for attempt in (lambda: sink.write_pack("t1", big, curve),
                lambda: sink.write_pack("t2", other, [{**curve[0], "run_id": "b"}]),
                lambda: sink.write_trial("t3", small, [], failed=True)):
    try:
        attempt()
    except StorageFull as e:
        print("StorageFull", e.errno, e.filename)
    else:
        print("written")
after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
print("unchanged" if after == before else f"changed: {sorted(map(str, set(after) ^ set(before)))}")
"""


def test_writes_past_a_file_size_limit_leave_nothing(tmp_path):
    """Under RLIMIT_FSIZE a part that does not fit raises StorageFull (EFBIG) naming it; nothing is left behind
    (no temp file), an existing part of the same name is untouched, and the driver's failed-trial path (which
    checks that runs/ can still take a part) says the same instead of recording the trial `failed`."""
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", FSIZE_WRITER, str(out)], capture_output=True, text=True, timeout=120,
                       cwd=HERE.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0] == f"StorageFull 27 {out / 'runs' / 'part-t1.parquet'}", lines
    assert lines[1] == f"StorageFull 27 {out / 'runs' / 'part-t2.parquet'}", lines
    assert lines[2] == f"StorageFull 27 {out / 'runs'}", lines
    assert lines[3] == "unchanged", lines
