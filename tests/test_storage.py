"""sweeps.storage: paths and URIs through real pyarrow filesystems, no mocks of pyarrow.

file:// URIs go through ``FileSystem.from_uri`` to pyarrow's LocalFileSystem; the object-store
commit path is exercised on pyarrow's own in-memory filesystem (``_MockFileSystem``), the only
non-local filesystem available without a network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from sweeps.sink import ResultSink
from sweeps.storage import (
    Location,
    check_output,
    is_uri,
    join,
    resolve,
    write_bytes_atomic,
)


def _all(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------ strings
@pytest.mark.parametrize("out, expected", [
    ("s3://bucket/prefix", True), ("gs://b/x", True), ("file:///tmp/x", True),
    ("hdfs://nn:8020/x", True), ("nosuch://x", True), ("/abs/path", False),
    ("rel/path", False), ("weird:name/x", False), ("", False), (Path("s3:/x"), False),
])
def test_is_uri(out, expected):
    assert is_uri(out) is expected


def test_join():
    assert join("s3://b/x", "tb", "r0") == "s3://b/x/tb/r0"
    assert join("s3://b/x/", "/tb/") == "s3://b/x/tb"
    assert join("s3://b", "runs") == "s3://b/runs"
    assert join("s3://b/x?region=eu-west-1", "tb", "r0") == "s3://b/x/tb/r0?region=eu-west-1"
    assert join("file:///tmp/x", "runs") == "file:///tmp/x/runs"
    assert join("file:///", "runs") == "file:///runs"
    assert join("/data/x", "tb") == "/data/x/tb"
    assert join(Path("rel"), "tb", "r0") == os.path.join("rel", "tb", "r0")


def test_resolve(tmp_path, monkeypatch):
    fs, path = resolve(f"file://{tmp_path}/sweep")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/sweep"
    monkeypatch.chdir(tmp_path)
    fs, path = resolve("rel/x")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/rel/x"


# ------------------------------------------------------------------ check_output
def _problem(out) -> str:
    with pytest.raises(ValueError) as e:
        check_output(out)
    message = str(e.value)
    assert "\n" not in message and message.startswith("output ")
    return message


def test_check_output_ok_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_output("a/b/c") == f"{tmp_path}/a/b/c"
    assert check_output(f"file://{tmp_path}/a/b") == f"file://{tmp_path}/a/b"
    (tmp_path / "d").mkdir()
    assert check_output(tmp_path / "d") == f"{tmp_path}/d"
    assert _all(tmp_path) == ["d"] and _all(tmp_path / "d") == []


def test_check_output_unknown_scheme():
    assert "unknown scheme 'nosuch'" in _problem("nosuch://x")


def test_check_output_bad_file_uri():
    assert "invalid URI" in _problem("file://relative/x")


@pytest.mark.parametrize("as_uri", [False, True])
def test_check_output_file_in_the_way(tmp_path, as_uri):
    (tmp_path / "f").write_text("x")
    prefix = "file://" if as_uri else ""
    assert "exists and is not a directory" in _problem(f"{prefix}{tmp_path}/f")
    assert f"{tmp_path}/f exists and is not a directory" in _problem(f"{prefix}{tmp_path}/f/sub/x")
    assert _all(tmp_path) == ["f"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any mode bits")
def test_check_output_not_writable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert f"{locked} is not writable" in _problem(locked / "sweep")
        assert "is not writable" in _problem(f"file://{locked}/sweep")
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(os.access("/proc/sys", os.W_OK), reason="/proc/sys is writable here")
def test_check_output_read_only_mount():
    """Not writable even for root (a read-only mount), so this one also runs in containers."""
    assert "/proc/sys is not writable" in _problem("/proc/sys/sweep")


def test_check_output_object_store_like():
    """A non-local filesystem answers get_file_info: reachable, returned unchanged."""
    assert check_output("mock://bucket/sweep") == "mock://bucket/sweep"


# ------------------------------------------------------------------ atomic writes
def test_write_bytes_atomic_local_and_uri(tmp_path):
    write_bytes_atomic(tmp_path / "a.bin", b"one")
    write_bytes_atomic(f"file://{tmp_path}/a.bin", b"two")  # replaces
    write_bytes_atomic(str(tmp_path / "b.bin"), b"three")
    assert (tmp_path / "a.bin").read_bytes() == b"two"
    assert _all(tmp_path) == ["a.bin", "b.bin"]  # no temp files left


def test_local_error_keeps_the_old_file(tmp_path):
    loc = Location.of(f"file://{tmp_path}/a.bin")
    assert loc.local and loc.path == f"{tmp_path}/a.bin"
    loc.write_bytes_atomic(b"old")
    with pytest.raises(RuntimeError), loc.open_atomic() as f:
        f.write(b"half")
        raise RuntimeError
    assert (tmp_path / "a.bin").read_bytes() == b"old" and _all(tmp_path) == ["a.bin"]


def _mock(commit: str = "") -> Location:
    return Location(pafs._MockFileSystem(), "bucket/sweep", "mock://bucket/sweep", commit)


@pytest.mark.parametrize("commit", ["stream", "rename"])
def test_object_store_commit(commit):
    root = _mock(commit)
    assert root.commit == commit
    root.mkdir()
    target = root.child("x.bin")
    target.write_bytes_atomic(b"old")
    with pytest.raises(RuntimeError), target.open_atomic() as f:
        f.write(b"half")
        raise RuntimeError  # nothing uploaded
    with root.fs.open_input_stream(target.path) as f:
        assert f.read() == b"old"
    target.write_bytes_atomic(b"new")
    with root.fs.open_input_stream(target.path) as f:
        assert f.read() == b"new"
    assert [i.base_name for i in root.files()] == ["x.bin"]  # no temp object left
    assert target.where == "mock://bucket/sweep/x.bin" and target.exists()
    assert target.delete() and not target.delete() and not target.exists()


def test_commit_mode_from_filesystem(tmp_path):
    assert Location.of(tmp_path).commit == "local"
    assert _mock().commit == "rename"  # not a known object store: temp + move
    with pytest.raises(ValueError, match="commit"):
        _mock("bogus")


def test_files_listing(tmp_path):
    loc = Location.of(f"file://{tmp_path}")
    for name in ["part-a.parquet", ".part-b.parquet.123.tmp", "part-c.parquet", "other"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "part-dir.parquet").mkdir()
    assert [i.base_name for i in loc.files("part-*.parquet")] == ["part-a.parquet",
                                                                   "part-c.parquet"]
    assert all(i.mtime_ns and i.size == 1 for i in loc.files("part-*.parquet"))
    assert loc.child("missing").files() == []


# ------------------------------------------------------------------ sink on a non-local fs
@pytest.mark.parametrize("commit", ["stream", "rename"])
def test_sink_on_object_store(commit):
    root = _mock(commit)
    sink = ResultSink(root)
    assert sink.out_dir == "mock://bucket/sweep"
    run = {"run_id": "a", "status": "ok"}
    curves = [{"run_id": "a", "step": s, "m": float(s)} for s in range(3)]
    sink.write_pack("p0", [run], curves)
    assert sink.write_pack("p1", [run, {"run_id": "b", "status": "failed"}], []) == 1
    sink.write_pack("t9-failed", [{"run_id": "c", "status": "failed"}], [])
    assert sink.run_ids() == {"a", "b", "c"} and sink.n_runs() == 3
    assert sink.read_table("curves").num_rows == 3
    assert sink.drop_parts("-failed") == 1 and sink.run_ids() == {"a", "b"}
    names = [i.base_name for i in root.child("runs").files()]
    assert names == ["part-p0.parquet", "part-p1.parquet"]
    with root.fs.open_input_file(f"{root.path}/runs/part-p1.parquet") as f:
        assert pq.read_table(f).column("run_id").to_pylist() == ["b"]
