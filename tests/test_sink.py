"""Contract tests for sweeps.sink: real Parquet files in tmp_path, no mocks."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from sweeps.sink import SCHEMA_VERSION, ResultSink, rows_to_table, write_table_atomic


def _run(run_id: str, **extra) -> dict:
    return {"run_id": run_id, "schema_version": SCHEMA_VERSION, "status": "ok", **extra}


def _curve(run_id: str, steps: int = 3) -> list[dict]:
    return [{"run_id": run_id, "step": s, "train/loss": 1.0 / (s + 1)} for s in range(steps)]


def _all(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------ schema inference
def test_mixed_column_types_round_trip(tmp_path):
    rows = [
        {"run_id": "a", "adapter.rank": None, "train.lr": 1, "fit/success": True, "task.name": "x"},
        {"run_id": "b", "adapter.rank": 4, "train.lr": 2.5e-3, "fit/success": None},
        {"run_id": "c", "adapter.rank": 8, "train.lr": 3, "fit/success": False, "task.name": None},
    ]
    path = write_table_atomic(rows, tmp_path / "t.parquet")
    table = pq.read_table(path)
    schema = table.schema
    assert schema.field("adapter.rank").type == pa.int64()  # None + int stays int (nullable)
    assert schema.field("train.lr").type == pa.float64()  # int + float widens
    assert schema.field("fit/success").type == pa.bool_()
    assert schema.field("task.name").type == pa.string()  # missing key -> null
    got = table.to_pylist()
    assert [r["adapter.rank"] for r in got] == [None, 4, 8]
    assert [r["train.lr"] for r in got] == [1.0, 2.5e-3, 3.0]
    assert [r["fit/success"] for r in got] == [True, None, False]
    assert [r["task.name"] for r in got] == ["x", None, None]


def test_nan_and_all_none_columns(tmp_path):
    rows = [{"run_id": "a", "val/loss": math.nan, "note": None}, {"run_id": "b", "val/loss": 0.5}]
    table = pq.read_table(write_table_atomic(rows, tmp_path / "t.parquet"))
    assert math.isnan(table.column("val/loss")[0].as_py())
    assert table.schema.field("note").type == pa.null()


def test_differing_schemas_across_parts_concat(tmp_path):
    sink = ResultSink(tmp_path)
    sink.write_pack("p0", [_run("a", **{"adapter.rank": 4, "note": None})], _curve("a"))
    sink.write_pack("p1", [_run("b", **{"adapter.width": 16, "note": "hi"})], [])
    parts = [pq.read_table(p) for p in sorted((tmp_path / "runs").glob("*.parquet"))]
    merged = pa.concat_tables(parts, promote_options="default")
    rows = {r["run_id"]: r for r in merged.to_pylist()}
    assert rows["a"]["adapter.rank"] == 4 and rows["a"]["adapter.width"] is None
    assert rows["b"]["adapter.width"] == 16 and rows["b"]["note"] == "hi"
    # the dataset API (what analysis is likely to use) sees the same two committed parts
    assert ds.dataset(tmp_path / "runs", format="parquet").count_rows() == 2
    assert sink.read_table("runs").num_rows == 2 and sink.read_table("curves").num_rows == 3


def test_unconvertible_mix_names_the_column(tmp_path):
    with pytest.raises(TypeError, match="'fit/acc'"):
        rows_to_table([{"fit/acc": 1}, {"fit/acc": "high"}])


# ------------------------------------------------------------------ atomicity
def test_unserialisable_value_leaves_no_file(tmp_path):
    sink = ResultSink(tmp_path)
    with pytest.raises(TypeError):
        sink.write_pack("p0", [_run("a", bad=object())], _curve("a"))
    # both tables are built before either is written: nothing at all, not even hidden
    assert _all(tmp_path / "runs") == [] and _all(tmp_path / "curves") == []
    assert sink.run_ids() == set() and sink.n_runs() == 0


def test_orphan_curves_are_not_committed(tmp_path):
    """A crash between the curves write and the runs write leaves an orphan curves part;
    without its runs marker the pack does not count."""
    sink = ResultSink(tmp_path)
    write_table_atomic(_curve("a"), sink.part_path("curves", "p0"))
    assert sink.run_ids() == set() and sink.read_table("curves").num_rows == 0
    sink.write_pack("p0", [_run("a")], _curve("a", steps=5))  # the retry overwrites it
    assert sink.read_table("curves").num_rows == 5


def test_failed_rewrite_keeps_the_old_file(tmp_path):
    path = write_table_atomic([{"x": 1}], tmp_path / "t.parquet")
    with pytest.raises(TypeError):
        write_table_atomic([{"x": object()}], path)
    assert pq.read_table(path).to_pylist() == [{"x": 1}]
    assert _all(tmp_path) == ["t.parquet"]


_MID_WRITE = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from sweeps.sink import write_table_atomic
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG as an OSError, not a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    rows = [{"run_id": f"r{i}", "blob": "x" * 512 + str(i)} for i in range(200)]
    try:
        write_table_atomic(rows, Path(sys.argv[1]))
    except OSError as e:
        print("raised", type(e).__name__)
    """
)


def test_disk_full_mid_write_leaves_no_file(tmp_path):
    """A real mid-write failure: the file size limit makes the Parquet write hit EFBIG
    after the temp file has been created and partly written."""
    out = subprocess.run(
        [sys.executable, "-c", _MID_WRITE, str(tmp_path / "part-x.parquet")],
        check=False, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1],
    )
    assert "raised" in out.stdout, out.stderr
    assert _all(tmp_path) == []  # neither the part nor the temp file


def test_hidden_crash_leftover_is_ignored(tmp_path):
    """A SIGKILL between write and rename leaves a dot temp file: it must stay invisible."""
    sink = ResultSink(tmp_path)
    sink.write_pack("p0", [_run("a")], _curve("a"))
    (tmp_path / "runs" / ".part-p1.parquet.0123abcd.tmp").write_bytes(b"PAR1 half a file")
    assert sink.run_ids() == {"a"} and sink.n_runs() == 1
    assert ds.dataset(tmp_path / "runs", format="parquet").count_rows() == 1


# ------------------------------------------------------------------ idempotence, dedup
def test_rewrite_same_part_replaces(tmp_path):
    sink = ResultSink(tmp_path)
    assert sink.write_pack("p0", [_run("a"), _run("b")], _curve("a") + _curve("b")) == 0
    assert sink.write_pack("p0", [_run("a"), _run("b")], _curve("a") + _curve("b")) == 0
    assert sink.n_runs() == 2 and sink.run_ids() == {"a", "b"}
    assert sink.read_table("curves").num_rows == 6
    assert _all(tmp_path / "runs") == ["part-p0.parquet"]


def test_duplicate_run_ids_in_other_parts_are_skipped(tmp_path):
    sink = ResultSink(tmp_path)
    sink.write_pack("p0", [_run("a"), _run("b")], _curve("a") + _curve("b"))
    # a resumed sweep re-runs a pack under a new name: a and b are done, c is new
    skipped = sink.write_pack("p1", [_run("a"), _run("b"), _run("c")], _curve("a") + _curve("c"))
    assert skipped == 2
    assert sink.n_runs() == 3 and sink.run_ids() == {"a", "b", "c"}
    curves = sink.read_table("curves").to_pylist()
    assert sorted(r["run_id"] for r in curves) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert pq.read_table(sink.part_path("curves", "p1")).column("run_id").to_pylist() == ["c"] * 3


def test_pack_entirely_recorded_elsewhere_writes_nothing(tmp_path):
    sink = ResultSink(tmp_path)
    sink.write_pack("p0", [_run("a")], _curve("a"))
    assert sink.write_pack("p1", [_run("a")], _curve("a")) == 1
    assert _all(tmp_path / "runs") == ["part-p0.parquet"]
    assert _all(tmp_path / "curves") == ["part-p0.parquet"]


def test_run_ids_cache_sees_rewrites(tmp_path):
    sink = ResultSink(tmp_path)
    sink.write_pack("p0", [_run("a")], [])
    assert sink.run_ids() == {"a"}
    ResultSink(tmp_path).write_pack("p0", [_run("z")], [])  # another process's sink
    assert sink.run_ids() == {"z"}


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("part", ["", "a/b", "../x", "a b", "t:1", "é", None])
def test_bad_part_name(tmp_path, part):
    with pytest.raises(ValueError, match="part name"):
        ResultSink(tmp_path).write_pack(part, [_run("a")], [])
    assert _all(tmp_path / "runs") == []


def test_good_part_names(tmp_path):
    sink = ResultSink(tmp_path)
    for i, part in enumerate(["trial_00001", "a.b-c", "..", "_x"]):
        sink.write_pack(part, [_run(f"r{i}")], [])
    assert sink.n_runs() == 4


@pytest.mark.parametrize(
    "runs, curves, match",
    [
        ([{"status": "ok"}], [], "run_id"),
        ([_run("a"), _run("a")], [], "duplicate"),
        ([_run("a")], [{"run_id": "a"}], "step"),
        ([_run("a")], _curve("b"), "no runs row"),
    ],
)
def test_contract_violations_refused(tmp_path, runs, curves, match):
    with pytest.raises(ValueError, match=match):
        ResultSink(tmp_path).write_pack("p0", runs, curves)
    assert _all(tmp_path / "curves") == [] and _all(tmp_path / "runs") == []


def test_sink_adds_nothing(tmp_path):
    sink = ResultSink(tmp_path)
    sink.write_pack("p0", [{"run_id": "a", "x": 1}], [{"run_id": "a", "step": 0, "m": 2.0}])
    assert sink.read_table("runs").column_names == ["run_id", "x"]
    assert sink.read_table("curves").column_names == ["run_id", "step", "m"]


# ------------------------------------------------------------------ URIs (sweeps.storage)
def _fill(sink: ResultSink) -> None:
    sink.write_pack("p0", [_run("a", **{"adapter.rank": 4}), _run("b")], _curve("a") + _curve("b"))
    sink.write_pack("p1", [_run("b"), _run("c", note="x")], _curve("c", steps=2))
    sink.write_pack("t3-failed", [_run("d", status="failed")], [])


def test_uri_round_trip_equals_path(tmp_path):
    by_path, by_uri = ResultSink(tmp_path / "p"), ResultSink(f"file://{tmp_path}/u")
    _fill(by_path)
    _fill(by_uri)
    assert by_uri.out_dir == f"file://{tmp_path}/u" and by_path.out_dir == tmp_path / "p"
    for kind in ("runs", "curves"):
        assert by_uri.read_table(kind).equals(by_path.read_table(kind))
        assert _all(tmp_path / "u" / kind) == _all(tmp_path / "p" / kind)  # no temp files
    assert by_uri.run_ids() == by_path.run_ids() == {"a", "b", "c", "d"}
    assert by_uri.n_runs() == by_path.n_runs() == 4
    part = by_uri.part_path("runs", "p1")
    assert part == f"file://{tmp_path}/u/runs/part-p1.parquet"
    assert pq.read_table(part).column("run_id").to_pylist() == ["c"]  # b was in p0
    # analysis reads the plain directory the URI named
    assert ds.dataset(tmp_path / "u" / "runs", format="parquet").count_rows() == 4


def test_write_table_atomic_to_uri(tmp_path):
    uri = f"file://{tmp_path}/t.parquet"
    assert write_table_atomic([{"x": 1}], uri) == uri
    with pytest.raises(TypeError):
        write_table_atomic([{"x": object()}], uri)
    assert pq.read_table(tmp_path / "t.parquet").to_pylist() == [{"x": 1}]
    assert _all(tmp_path) == ["t.parquet"]


def test_uri_cache_sees_rewrites(tmp_path):
    sink = ResultSink(f"file://{tmp_path}")
    sink.write_pack("p0", [_run("a")], [])
    assert sink.run_ids() == {"a"}
    ResultSink(tmp_path).write_pack("p0", [_run("z")], [])  # another process, by path
    assert sink.run_ids() == {"z"}


@pytest.mark.parametrize("as_uri", [False, True])
def test_drop_parts(tmp_path, as_uri):
    sink = ResultSink(f"file://{tmp_path}" if as_uri else tmp_path)
    sink.write_pack("t1", [_run("a")], _curve("a"))
    sink.write_pack("t2-failed", [_run("b", status="failed")], _curve("b"))
    sink.write_pack("t3-failed", [_run("c", status="failed")], [])
    write_table_atomic(_curve("e"), sink.part_path("curves", "t4-failed"))  # orphan curves
    assert sink.drop_parts("-failed") == 2
    assert _all(tmp_path / "runs") == ["part-t1.parquet"]
    assert _all(tmp_path / "curves") == ["part-t1.parquet"]
    assert sink.run_ids() == {"a"} and sink.read_table("curves").num_rows == 3
    assert sink.drop_parts("-failed") == 0
    sink.write_pack("t2", [_run("b")], [])  # the resumed trial may now record b
    assert sink.run_ids() == {"a", "b"}


@pytest.mark.parametrize("suffix", ["", "a/b", None])
def test_drop_parts_refuses_bad_suffix(tmp_path, suffix):
    sink = ResultSink(tmp_path)
    sink.write_pack("t1", [_run("a")], [])
    with pytest.raises(ValueError, match="suffix"):
        sink.drop_parts(suffix)
    assert sink.run_ids() == {"a"}
