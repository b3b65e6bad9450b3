"""Result sink: the only writer of a sweep's Parquet records (DESIGN.md §4).

A sweep output directory ``DIR`` holds two datasets, one file per pack::

    DIR/curves/part-<part>.parquet   one row per (run_id, step), metric columns
    DIR/runs/part-<part>.parquet     one row per member run (config, final metrics, ...)

``DIR`` is a local/NFS path or a URI of a pyarrow filesystem (``s3://bucket/prefix``,
``gs://...``, ``file:///abs/path``); all file access goes through ``sweeps.storage``.

Why it looks like this:

* One file per pack, written whole, so many Ray Train workers can write to the same
  directory at once without locks or appends (Parquet files cannot be appended to).
* Every file is written to a hidden temp file (leading ".", which pyarrow dataset discovery
  and our own globs ignore), fsynced, then ``os.replace``-d into place: a reader sees the
  old file or the new one, never half of one, even if the writer is killed.  That is for
  local paths and ``file://``; on object stores (S3, GCS, Azure) a part is serialized in
  memory and uploaded as one object, which becomes visible only when the upload completes,
  so the guarantee is the same (other filesystems: hidden temp file + move).
* Curves are written before runs, and the runs part is the commit marker: a pack whose runs
  part is missing did not happen (its curves part, if any, is an orphan that readers skip
  and a retry of the same part overwrites).
* A resumed sweep may re-run a pack under a new part name; rows whose run_id is already
  committed in another part are dropped, so a run_id is recorded once.  This check is
  best-effort against *concurrent* writers of the same run_id; one driver per local directory
  is enforced by ``sweeps.lock``.  On object stores "committed" means "listed": S3 and GCS
  listings are strongly consistent.
* A part never replaces another driver's part.  Drivers name parts ``<trial>.<driver token>``
  (`write_trial`, ``sweeps.part_names``), and every part's Parquet footer records its writer
  (key ``ftsweep.writer``): a write or an empty-pack delete of an existing part whose footer
  names another writer (a part of an older version names none) raises `PartTaken` and changes
  nothing.  A retry of the same trial by the same driver has the same name and writer and
  replaces its own part (idempotent).
* A write that runs out of space (ENOSPC, EDQUOT, or EFBIG under a file-size limit) raises
  ``storage.StorageFull`` naming the file; the temp file is removed, so nothing partial is
  visible, and the pack's runs are simply not committed (a resume runs them).

The sink adds nothing to rows: schema_version, versions etc. are the caller's columns.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweeps.part_names import driver_token, part_name
from sweeps.storage import Location, is_uri, join

SCHEMA_VERSION = 1
WRITER_KEY = b"ftsweep.writer"
SPACE_PROBE_BYTES = 1 << 20          # a failed trial's driver checks DIR can still take a part this large

log = logging.getLogger(__name__)

_PART_RE = re.compile(r"[A-Za-z0-9_.-]+")
_KINDS = ("runs", "curves")


class UnreadablePart(RuntimeError):
    """A committed part file that cannot be decoded (damaged storage: our writes are atomic)."""


class PartTaken(RuntimeError):
    """A write would replace (or delete) a part that another writer committed."""


# --------------------------------------------------------------------------- tables
def rows_to_table(rows: list[dict]) -> pa.Table:
    """Build one table from plain dict rows, inferring each column's type over ALL rows.

    Columns are the union of keys in first-seen order; a missing key is null.  Per column,
    pyarrow's own inference gives: int+None -> int64, int+float -> float64, all-None -> null
    (which ``concat_tables(promote_options="default")`` widens to the other parts' type).
    Values it cannot convert (objects, str mixed with numbers, bool mixed with int) raise a
    TypeError naming the column, before any file is touched.
    """
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return pa.table({name: _column(name, [r.get(name) for r in rows]) for name in names})


def _column(name: str, values: list) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        raise TypeError(f"column {name!r}: values do not fit one Arrow type: {e}") from e


def write_table_atomic(rows: list[dict], path: Path | str) -> Path | str:
    """Write ``rows`` as Parquet at ``path`` (a path or URI) so that it is never visible
    half-written; returns ``path``.

    Local: temp file ".<name>.<random>.tmp" in the same directory (same filesystem, so the
    rename is atomic; hidden, so discovery ignores it) -> fsync -> os.replace -> fsync the
    directory (so the rename itself survives a power loss).  On any error the temp file is
    removed and an existing ``path`` is left untouched.  Object stores: one upload of the
    whole file (see ``sweeps.storage``).
    """
    _write_atomic(rows_to_table(rows), Location.of(path))
    return path if is_uri(path) else Path(path)


def _write_atomic(table: pa.Table, where: Location, writer: str | None = None) -> None:
    # local: our handle, so the fsync hits the very bytes just written
    if writer is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), WRITER_KEY: writer.encode()})
    with where.open_atomic() as f:
        pq.write_table(table, f)


def part_writer(where: Location) -> str | None:
    """The writer recorded in an existing part's footer ("" for a part without one, "?" for a footer that
    cannot be read: never replaced), None if there is no such file."""
    if not where.exists():
        return None
    try:
        with where.open_input() as f:
            meta = pq.read_schema(f).metadata or {}
    except FileNotFoundError:
        return None
    except (pa.ArrowException, OSError):
        return "?"
    return meta.get(WRITER_KEY, b"").decode()


# --------------------------------------------------------------------------- sink
class ResultSink:
    """Writer of ``out_dir/{runs,curves}/part-<part>.parquet``; see the module docstring.

    ``out_dir``: a path, a URI, or a ``storage.Location``.  ``self.out_dir`` is a ``Path``
    for a plain path and the URI string otherwise.  Creates ``runs/`` and ``curves/`` unless
    ``create=False`` (a reader that must not change the directory, e.g. resume's checks).
    """

    def __init__(self, out_dir: Path | str | Location, create: bool = True):
        self._where = Location.of(out_dir)
        self._plain = not isinstance(out_dir, Location) and not is_uri(out_dir)
        self.out_dir: Path | str = Path(out_dir) if self._plain else self._where.where
        if create:
            for kind in _KINDS:
                self._where.child(kind).mkdir()
        # part file name -> ((mtime_ns, size), run_ids): a driver writing thousands of packs
        # should not re-read every runs part for every pack.
        self._ids_cache: dict[str, tuple[tuple[int, int], frozenset[str]]] = {}

    def part_path(self, kind: str, part: str) -> Path | str:
        """Path (URI for a URI sink) of one part file; refuses names that could escape or
        hide the file."""
        name = self._part_name(kind, part)
        return self.out_dir / kind / name if self._plain else join(self.out_dir, kind, name)

    def write_trial(self, trial_id: str, runs: list[dict], curves: list[dict], failed: bool = False) -> int:
        """`write_pack` under this driver's part name for `trial_id` (``sweeps.part_names``), as this
        driver: what the workers and the driver's failed-trial path call.

        ``failed=True`` (the driver, for a trial that failed after its retries) first checks that
        ``runs/`` can take a part (`Location.check_space`): Tune tells the driver only *that* a trial
        failed, and a worker that found the disk full fails every retry; recording its members
        ``failed`` would hide the cause and let the search go on deciding on failures, so a full disk
        raises ``StorageFull`` here and stops the sweep (the CLI: exit 1, one line)."""
        if failed:
            self._where.child("runs").check_space(SPACE_PROBE_BYTES)
        return self.write_pack(part_name(trial_id, failed), runs, curves, writer=driver_token())

    def write_pack(self, part: str, runs: list[dict], curves: list[dict], writer: str = "") -> int:
        """Commit one pack as ``writer``: curves first, then runs (the commit marker).

        Rewriting an existing ``part`` replaces it (idempotent retry) only if its footer names
        the same writer; otherwise `PartTaken` is raised before anything changes.  Runs whose
        run_id is already committed in another part are dropped with their curve rows.
        Returns the number of run rows skipped for that reason.
        """
        runs_loc = self._where.child("runs", self._part_name("runs", part))
        curves_loc = self._where.child("curves", self._part_name("curves", part))
        _check_pack(runs, curves)
        for loc in (runs_loc, curves_loc):
            owner = part_writer(loc)
            if owner is not None and owner != writer:
                raise PartTaken(f"{loc.where} was written by another driver ({owner or 'an older ftsweep'}); "
                                "a part never replaces another")
        elsewhere = set().union(*(ids for p, ids in self._ids_by_part().items() if p != part))
        keep_runs = [r for r in runs if r["run_id"] not in elsewhere]
        skipped = len(runs) - len(keep_runs)
        if skipped:
            log.warning("part %s: skipped %d run(s) already recorded in other parts", part, skipped)
        keep_curves = [c for c in curves if c["run_id"] not in elsewhere]
        if not keep_runs:  # an empty pack replaces this part with nothing
            runs_loc.delete()  # marker first: never a runs part without curves
            curves_loc.delete()
            return skipped
        # convert both before writing either, so a bad value leaves no file at all
        runs_table = rows_to_table(keep_runs)
        curves_table = rows_to_table(keep_curves) if keep_curves else None
        fresh = not runs_loc.exists()
        if curves_table is not None:
            _write_atomic(curves_table, curves_loc, writer)
        else:
            curves_loc.delete()
        try:
            _write_atomic(runs_table, runs_loc, writer)
        except BaseException:
            if fresh and curves_table is not None:     # a new pack commits both files or leaves neither
                curves_loc.delete()
            raise
        return skipped

    def drop_parts(self, suffix: str) -> int:
        """Delete the runs and curves parts whose part name ends with ``suffix`` (e.g. the
        ``<trial>-failed`` parts on resume), runs first (the commit marker).  Returns the
        number of runs parts removed."""
        if not isinstance(suffix, str) or not _PART_RE.fullmatch(suffix):
            raise ValueError(f"suffix must match [A-Za-z0-9_.-]+, got {suffix!r}")
        removed = 0
        for kind in _KINDS:  # runs first
            for info in self._parts(kind):
                gone = (_part_of(info).endswith(suffix)
                        and self._where.child(kind, info.base_name).delete())
                removed += bool(gone and kind == "runs")
        return removed

    def run_ids(self) -> set[str]:
        """All committed run_ids (reads only the run_id column of each runs part)."""
        return set().union(*self._ids_by_part().values())

    def n_runs(self) -> int:
        """Number of committed run rows, from Parquet footers (no data pages read)."""
        total = 0
        for info in self._parts("runs"):
            with self._where.child("runs", info.base_name).open_input() as f:
                total += pq.ParquetFile(f).metadata.num_rows
        return total

    def read_table(self, kind: str) -> pa.Table:
        """Committed rows of ``kind`` as one table (a convenience for tests and debugging;
        analysis has its own reader).  Curves of uncommitted packs are left out."""
        committed = {i.base_name for i in self._parts("runs")}
        infos = [i for i in self._parts(kind) if i.base_name in committed]
        tables = [pq.read_table(i.path, filesystem=self._where.fs) for i in infos]
        return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})

    def read_rows(self, kind: str, skip_suffix: str | None = None) -> list[dict]:
        """Committed rows of ``kind`` as dicts, part by part (no type promotion needed), leaving
        out parts whose name ends with ``skip_suffix`` (resume: ``"-failed"``);
        `UnreadablePart` names a part pyarrow cannot decode."""
        committed = {i.base_name for i in self._parts("runs")}
        rows: list[dict] = []
        for info in self._parts(kind):
            if info.base_name not in committed or (skip_suffix and _part_of(info).endswith(skip_suffix)):
                continue
            try:
                rows += pq.read_table(info.path, filesystem=self._where.fs).to_pylist()
            except (pa.ArrowException, OSError) as e:
                raise UnreadablePart(f"corrupt part file {info.path}: {' '.join(str(e).split())[:200]}") from e
        return rows

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _part_name(kind: str, part: str) -> str:
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        if not isinstance(part, str) or not _PART_RE.fullmatch(part):
            raise ValueError(f"part name must match [A-Za-z0-9_.-]+, got {part!r}")
        return f"part-{part}.parquet"

    def _parts(self, kind: str) -> list[pafs.FileInfo]:
        """Visible part files only: the "part-" prefix excludes hidden temp files."""
        return self._where.child(kind).files("part-*.parquet")

    def _ids_by_part(self) -> dict[str, frozenset[str]]:
        """part name -> its run_ids, re-reading a file only when its mtime/size changed."""
        out: dict[str, frozenset[str]] = {}
        for info in self._parts("runs"):
            try:
                ids = self._cached_ids(info)
            except FileNotFoundError:  # removed by a concurrent empty rewrite since the listing
                continue
            out[_part_of(info)] = ids
        return out

    def _cached_ids(self, info: pafs.FileInfo) -> frozenset[str]:
        key = (info.mtime_ns, info.size)
        cached = self._ids_cache.get(info.base_name)
        if cached is None or cached[0] != key or info.mtime_ns is None:  # no mtime: no caching
            table = pq.read_table(info.path, columns=["run_id"], filesystem=self._where.fs)
            cached = self._ids_cache[info.base_name] = (key, frozenset(table["run_id"].to_pylist()))
        return cached[1]


def _part_of(info: pafs.FileInfo) -> str:
    """"part-<part>.parquet" -> "<part>"."""
    return info.base_name[len("part-") : -len(".parquet")]


def _check_pack(runs: list[dict], curves: list[dict]) -> None:
    """Refuse packs that would break the record contract, before anything is written."""
    ids = [r.get("run_id") for r in runs]
    if any(not isinstance(i, str) or not i for i in ids):
        raise ValueError("every runs row needs a non-empty str 'run_id'")
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate run_id within one pack's runs rows")
    if any(c.get("run_id") is None or c.get("step") is None for c in curves):
        raise ValueError("every curves row needs 'run_id' and 'step'")
    orphans = {c["run_id"] for c in curves} - set(ids)
    if orphans:
        raise ValueError(f"curves rows for run_ids with no runs row: {sorted(orphans)[:5]}")
