"""Part names and ownership (issue 15, item 3): a part is named `<trial>.<driver token>`, records its writer in
its footer, and is never replaced or deleted by another writer, while a retry by its own writer replaces it.
Real Parquet files, and real separate processes for separate drivers (outside Ray the token is per process)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sweeps.part_names import driver_token, part_name
from sweeps.sink import SCHEMA_VERSION, PartTaken, ResultSink

ROOT = Path(__file__).parent.parent


def _run(run_id: str, **extra) -> dict:
    return {"run_id": run_id, "schema_version": SCHEMA_VERSION, "status": "ok", **extra}


def _curve(run_id: str) -> list[dict]:
    return [{"run_id": run_id, "step": s, "train/loss": 1.0 / (s + 1)} for s in range(3)]


def _snapshot(d: Path) -> dict:
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_write_trial_names_the_part_after_the_trial_and_the_driver(tmp_path):
    sink = ResultSink(tmp_path)
    sink.write_trial("3fa9c0de", [_run("a")], _curve("a"))
    sink.write_trial("3fa9c0de", [_run("b", status="failed")], [], failed=True)
    tok = driver_token()
    assert re.fullmatch(r"[0-9a-f]{8}", tok) and part_name("t") == f"t.{tok}"
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == [f"part-3fa9c0de.{tok}-failed.parquet", f"part-3fa9c0de.{tok}.parquet"]
    for kind in ("runs", "curves"):
        meta = pq.read_schema(tmp_path / kind / f"part-3fa9c0de.{tok}.parquet").metadata
        assert meta[b"ftsweep.writer"] == tok.encode()
    assert sink.drop_parts("-failed") == 1 and sink.run_ids() == {"a"}


def test_a_retry_by_the_same_writer_replaces_its_own_part(tmp_path):
    sink = ResultSink(tmp_path)
    sink.write_trial("t1", [_run("a", x=1)], _curve("a"))
    sink.write_trial("t1", [_run("a", x=2)], _curve("a"))        # the retry of the same trial: same name
    assert [r["x"] for r in sink.read_rows("runs")] == [2]
    assert len(list((tmp_path / "runs").iterdir())) == 1


@pytest.mark.parametrize("owner", ["driverA1", ""], ids=["another-driver", "older-ftsweep"])
def test_another_writer_never_replaces_or_deletes_a_part(tmp_path, owner):
    """A part of another driver (or of an older ftsweep, whose footer names no writer) is neither replaced nor,
    on the empty-pack path (its runs already recorded elsewhere), deleted: PartTaken, nothing changed."""
    sink = ResultSink(tmp_path)
    sink.write_pack("t1", [_run("a")], _curve("a"), writer=owner)
    sink.write_pack("t2", [_run("b")], [], writer="driverB2")
    before = _snapshot(tmp_path)
    with pytest.raises(PartTaken, match="written by another driver"):
        sink.write_pack("t1", [_run("c")], _curve("c"), writer="driverB2")
    with pytest.raises(PartTaken):                                  # all rows elsewhere: would delete t1
        sink.write_pack("t1", [_run("b")], [], writer="driverB2")
    assert _snapshot(tmp_path) == before


WRITER = """
import sys
from sweeps.sink import ResultSink
ResultSink(sys.argv[1]).write_trial("t00000", [{"run_id": sys.argv[2], "status": "ok"}], [])
"""


def test_two_drivers_with_the_same_trial_id_write_two_parts(tmp_path):
    """Tune's trial ids are drawn afresh by every driver and can repeat across drivers/resumes: two drivers
    (processes) writing trial t00000 keep both parts and every row."""
    for run_id in ("a", "b"):
        r = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), run_id], capture_output=True, text=True,
                           cwd=ROOT, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
    parts = sorted((tmp_path / "runs").iterdir())
    assert len(parts) == 2 and all(p.name.startswith("part-t00000.") for p in parts)
    assert {r["run_id"] for r in ResultSink(tmp_path).read_rows("runs")} == {"a", "b"}


def test_old_part_names_stay_readable(tmp_path):
    """Parts named by the bare trial id (before driver tokens) are read, deduplicated against and dropped as
    before."""
    sink = ResultSink(tmp_path)
    sink.write_pack("t1", [_run("a")], _curve("a"))
    sink.write_pack("t1-failed", [_run("b", status="failed")], [])
    sink.write_trial("t9", [_run("a"), _run("c")], [])              # a is recorded in t1: skipped
    assert sorted(r["run_id"] for r in sink.read_rows("runs", skip_suffix="-failed")) == ["a", "c"]
    assert sink.drop_parts("-failed") == 1 and sink.run_ids() == {"a", "c"}


def test_a_reader_creates_nothing(tmp_path):
    sink = ResultSink(tmp_path / "sweep", create=False)
    assert sink.read_rows("runs") == [] and not (tmp_path / "sweep").exists()
