"""analysis.load: part files with different columns, temp files, corrupt parts, missing dirs."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import CorruptPartError, read_curves, read_runs
from analysis.synthetic import capacity_runs, curves_for, write_parts


def _write(df, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


def test_parts_with_different_columns_are_promoted(tmp_path):
    _write(pd.DataFrame({"run_id": ["a", "b"], "seed": [0, 1], "fit/success": [True, False]}),
           tmp_path / "runs" / "part-00000.parquet")
    _write(pd.DataFrame({"run_id": ["c"], "seed": [2], "val/mse": [0.5]}), tmp_path / "runs" / "part-00001.parquet")
    runs = read_runs(tmp_path)
    assert list(runs["run_id"]) == ["a", "b", "c"]
    assert runs["val/mse"].isna().tolist() == [True, True, False]
    assert runs["fit/success"].iloc[:2].tolist() == [True, False] and pd.isna(runs["fit/success"].iloc[2])


def test_int_and_float_parts_widen(tmp_path):
    _write(pd.DataFrame({"run_id": ["a"], "train.lr": [1]}), tmp_path / "runs" / "part-0.parquet")
    _write(pd.DataFrame({"run_id": ["b"], "train.lr": [0.5]}), tmp_path / "runs" / "part-1.parquet")
    assert read_runs(tmp_path)["train.lr"].tolist() == [1.0, 0.5]


def test_temp_files_are_ignored(tmp_path):
    df = capacity_runs(ns=(8,), seeds=2)
    write_parts(df, tmp_path, n_parts=2)
    (tmp_path / "runs" / ".part-00002.parquet").write_bytes(b"half a file")
    (tmp_path / "runs" / "_part-00003.parquet.tmp").write_bytes(b"half a file")
    assert len(read_runs(tmp_path)) == len(df)


def test_truncated_part_raises_naming_the_file(tmp_path):
    paths = write_parts(capacity_runs(ns=(8, 16), seeds=2), tmp_path, n_parts=2)
    raw = paths[1].read_bytes()
    paths[1].write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptPartError) as e:
        read_runs(tmp_path)
    assert isinstance(e.value, ValueError)
    assert e.value.path == paths[1]
    msg = str(e.value)
    assert "part-00001.parquet" in msg and "\n" not in msg


def test_garbage_part_raises(tmp_path):
    (tmp_path / "curves").mkdir()
    (tmp_path / "curves" / "part-00000.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(CorruptPartError, match="part-00000.parquet"):
        read_curves(tmp_path)


@pytest.mark.parametrize("make", [lambda p: None, lambda p: (p / "runs").mkdir()])
def test_missing_or_empty_runs_dir(tmp_path, make):
    make(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "runs")):
        read_runs(tmp_path)


def test_read_curves_sorted(tmp_path):
    runs = capacity_runs(ns=(8,), seeds=2)
    write_parts(runs, tmp_path, "runs", n_parts=1)
    write_parts(curves_for(runs).iloc[::-1], tmp_path, "curves", n_parts=3)
    curves = read_curves(tmp_path)
    assert len(curves) == 3 * len(runs)
    for _, c in curves.groupby("run_id"):
        assert np.all(np.diff(c["step"].to_numpy()) > 0)


def test_parts_arrow_cannot_unify_go_through_pandas(tmp_path):
    """fit/success bool in one part, all-NaN float in another (a part of only diverged runs)."""
    _write(pd.DataFrame({"run_id": ["a", "b"], "fit/success": [True, False]}), tmp_path / "runs" / "part-0.parquet")
    _write(pd.DataFrame({"run_id": ["c"], "fit/success": [np.nan]}), tmp_path / "runs" / "part-1.parquet")
    runs = read_runs(tmp_path)
    assert runs["fit/success"].iloc[:2].tolist() == [True, False] and pd.isna(runs["fit/success"].iloc[2])
    from analysis.thresholds import success_flags
    assert success_flags(runs, "fit/success").tolist() == [True, False, False]


def test_curves_of_uncommitted_runs_are_ignored(tmp_path):
    """A trial that died between its curves part and its runs part (the commit marker) leaves orphan curves."""
    runs = capacity_runs(ns=(8,), seeds=2)
    committed, orphan = runs.iloc[: len(runs) // 2], runs.iloc[len(runs) // 2:]
    write_parts(committed, tmp_path, "runs", n_parts=1)
    write_parts(curves_for(runs), tmp_path, "curves", n_parts=2)
    curves = read_curves(tmp_path)
    assert set(curves["run_id"]) == set(committed["run_id"])
    assert not set(curves["run_id"]) & set(orphan["run_id"])


def test_drop_pruned_leaves_out_only_pruned_members():
    import pandas as pd

    from analysis.load import drop_pruned
    runs = pd.DataFrame({"run_id": list("abcd"), "status": ["ok", "pruned", "diverged", "failed"]})
    assert drop_pruned(runs)["run_id"].tolist() == ["a", "c", "d"]
    assert drop_pruned(runs.drop(columns="status")).shape == (4, 1)      # rows without a status column: kept
