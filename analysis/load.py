"""Read a sweep output directory (DESIGN.md §4): `DIR/runs/part-*.parquet` and `DIR/curves/part-*.parquet`.

Every part file is read on its own and the tables are concatenated with schema promotion, because
parts written at different times may carry different metric columns (a column missing from a part
becomes null there). Names starting with `.` or `_` are the sink's temp files and are skipped.
A part file that cannot be decoded is an error (`CorruptPartError`), never skipped silently: a
dropped part would bias a threshold without anyone noticing.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


class CorruptPartError(ValueError):
    """A part file that pyarrow cannot decode (truncated, not Parquet, bad pages)."""

    def __init__(self, path, reason: str):
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever pyarrow said
        super().__init__(f"corrupt part file {self.path}: {self.reason}")


def part_files(dir: str | Path, table: str) -> list[Path]:
    """The visible part files of `DIR/<table>/`, sorted by name (temp files `.x`/`_x` excluded)."""
    sub = Path(dir) / table
    if not sub.is_dir():
        return []
    return sorted(p for p in sub.glob("part-*.parquet") if p.is_file() and p.name[0] not in "._")


def _read_part(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as e:  # ArrowInvalid: magic bytes / thrift / page errors
        raise CorruptPartError(path, f"{type(e).__name__}: {e}") from e


def _concat(tables: list[pa.Table]) -> pd.DataFrame:
    """Concatenate, null-filling columns a part lacks. Arrow promotion first (int -> double where needed);
    parts whose types cannot be unified in Arrow (bool in one part, all-NaN double in another) go
    through pandas, which keeps such a column as objects."""
    tables = [t.replace_schema_metadata(None) for t in tables]
    for how in ("default", "permissive"):
        try:
            return pa.concat_tables(tables, promote_options=how).to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            continue
    return pd.concat([t.to_pandas() for t in tables], ignore_index=True)


def read_table(dir: str | Path, table: str) -> pd.DataFrame:
    """All part files of `DIR/<table>/` as one DataFrame.

    Raises FileNotFoundError naming the directory when there is no part file, CorruptPartError when
    one cannot be read.
    """
    parts = part_files(dir, table)
    if not parts:
        raise FileNotFoundError(f"no {table} part files (part-*.parquet) in {Path(dir) / table}")
    return _concat([_read_part(p) for p in parts])


def read_runs(dir: str | Path) -> pd.DataFrame:
    """One row per member run: config as dotted columns, metrics as slash columns, `status`, ..."""
    return read_table(dir, "runs")


def read_curves(dir: str | Path) -> pd.DataFrame:
    """One row per (run_id, step) with the metric columns logged at that step.

    Only curves of committed runs: the sink writes a trial's curves part before its runs part (the commit
    marker), so curve rows whose run_id has no row in `runs/` belong to a trial that died in between.
    """
    df = read_table(dir, "curves")
    if "run_id" in df.columns and len(df):
        df = df[df["run_id"].isin(set(read_runs(dir)["run_id"]))]
    keys = [c for c in ("run_id", "step") if c in df.columns]
    return df.sort_values(keys, kind="stable", ignore_index=True) if keys else df


def drop_pruned(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` without the members a pruner stopped early (status `pruned`, sweeps/pruners.py): their metrics are
    those of an early evaluation, not of the budget, so a section that reads final metrics leaves them out."""
    return runs[runs["status"].astype(str) != "pruned"] if "status" in runs.columns else runs
