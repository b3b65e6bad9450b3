"""Where a sweep's files live: a local/NFS directory or a URI of a pyarrow filesystem.

An output location ``out`` is either a plain path (``/data/sweeps/x``, ``runs/x``: local, made
absolute) or a URI that ``pyarrow.fs.FileSystem.from_uri`` understands (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``abfs://...``, ``hdfs://...``, ``file:///abs/path``; query options such
as ``?region=...`` are kept and passed on).  Everything that writes or lists sweep files goes
through a :class:`Location` (a filesystem + a path on it), so one code path serves all of them.

How a whole file is committed (never visible half-written) depends on the filesystem:

* ``local`` (plain paths and ``file://``): hidden temp file in the same directory, fsync,
  ``os.replace``, fsync of the directory (``sweeps.atomic``) - the behaviour the sinks had
  before URIs.
* ``stream`` (S3, GCS, Azure blob): the bytes are built in memory and sent with one
  ``open_output_stream``; an object becomes visible only when its upload completes, and an
  error while *building* the bytes uploads nothing.
* ``rename`` (any other filesystem, e.g. HDFS): hidden temp file + ``FileSystem.move``.

A write that runs out of space (ENOSPC, EDQUOT; EFBIG under a file-size limit) raises
:class:`StorageFull` (an ``OSError`` with the same errno) naming the file; the temp file is gone and an
existing file is untouched, so a full disk never leaves a visible partial file.

What may be an output directory (`check_output`; local paths): a directory, or a path whose nearest
existing ancestor is a writable directory. Refused: a regular file; a read-only directory; a symlink as
the directory itself or as one of the entries ftsweep writes into (``runs``, ``curves``, ``tb``,
``report``, ``checkpoints``, ``spec.yaml``), since a symlink can be re-pointed under a running sweep or
lead its writes into someone else's directory. Symlinks among the *parents* are allowed (system layouts
such as macOS's /tmp -> /private/tmp): the path is resolved once, and the sweep writes to the real path.

No function here creates anything unless its name says it writes (``mkdir``, ``open_atomic``,
``write_bytes_atomic``, ``delete``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fnmatch
import functools
import io
import os
import posixpath
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs

from sweeps.atomic import atomic_open, fsync_dir

_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_OBJECT_STORES = frozenset({"s3", "gcs", "abfs"})  # pyarrow FileSystem.type_name values
COMMIT_MODES = ("local", "stream", "rename")
SWEEP_ENTRIES = ("runs", "curves", "tb", "report", "checkpoints", "spec.yaml")   # what ftsweep writes in DIR
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class StorageFull(OSError):
    """A write found no space (ENOSPC), no quota (EDQUOT) or hit the file-size limit (EFBIG)."""


def storage_full(exc: BaseException | None) -> OSError | None:
    """The out-of-space OSError behind `exc`, following ``__cause__``/``__context__`` and the ``cause`` of
    Ray's task errors (a worker's error reaches the driver wrapped); None if there is none."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
            return exc
        exc = exc.__cause__ or getattr(exc, "cause", None) or exc.__context__
    return None


# --------------------------------------------------------------------------- strings
def is_uri(out: str | Path) -> bool:
    """True for ``scheme://...`` strings; plain paths (and ``Path`` objects) are local."""
    return not isinstance(out, Path) and bool(_URI_RE.match(str(out)))


def join(base: str | Path, *parts: str) -> str:
    """``base/part/...`` for a path or a URI (for URIs no ``os.path``; a ``?query`` stays last).

    ``join("s3://b/x?region=eu-west-1", "tb", "r0") == "s3://b/x/tb/r0?region=eu-west-1"``.
    """
    names = [str(p).strip("/") for p in parts if str(p).strip("/")]
    if not is_uri(base):
        return os.path.join(str(base), *names)
    prefix = _URI_RE.match(str(base)).group(0)
    rest, sep, query = str(base)[len(prefix):].partition("?")
    return prefix + "/".join([rest.rstrip("/"), *names]) + sep + query


def resolve(out: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path on it): ``FileSystem.from_uri`` for URIs, ``LocalFileSystem`` and the
    absolute path for plain paths.  Raises what pyarrow raises (see :func:`check_output` for
    one-line ``ValueError`` messages).  URI resolutions are cached per process: for S3 it
    costs a network round trip (the bucket's region)."""
    if not is_uri(out):
        return pafs.LocalFileSystem(), os.path.abspath(out)
    return _from_uri(str(out))


@functools.lru_cache(maxsize=32)
def _from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(uri)


def check_output(out: str | Path) -> str:
    """Validate an output location without creating anything; return it normalized (the
    absolute path for a plain path, the URI unchanged otherwise).

    Raises ``ValueError`` with one line naming the problem: unknown scheme, filesystem not in
    this pyarrow build, cannot be reached, exists and is not a directory, not writable.
    Writability is checked for local locations only (object-store permissions show up on the
    first write).
    """
    shown = str(out)
    if not shown.strip():
        raise ValueError("output location is empty")
    if not is_uri(out):
        path = os.path.abspath(shown)
        _check_local(path, shown)
        return path
    scheme = _URI_RE.match(shown).group(1)
    try:
        fs, path = resolve(shown)
    except pa.ArrowNotImplementedError as e:
        raise _bad(shown, f"the {scheme!r} filesystem is not available in this pyarrow "
                          f"build ({_line(e)})") from None
    except pa.ArrowInvalid as e:
        if "Unrecognized filesystem type" in str(e):
            raise _bad(shown, f"unknown scheme {scheme!r} (pyarrow filesystems: file, s3, "
                              "gs, abfs, hdfs)") from None
        raise _bad(shown, f"invalid URI ({_line(e)})") from None
    except (OSError, pa.ArrowException) as e:  # credentials, network, libhdfs, ...
        raise _bad(shown, f"cannot be reached ({_line(e)})") from None
    if isinstance(fs, pafs.LocalFileSystem):
        _check_local(path, shown)
        return shown
    try:
        info = fs.get_file_info(path)
    except (OSError, pa.ArrowException) as e:
        raise _bad(shown, f"cannot be reached ({_line(e)})") from None
    if info.type == pafs.FileType.File:
        raise _bad(shown, "exists and is not a directory")
    return shown


def check_existing(out: str | Path) -> str:
    """`check_output` for a directory that must already exist (resume DIR, report DIR)."""
    where = check_output(out)
    loc = Location.of(where)
    try:
        kind = loc.info().type
    except (OSError, pa.ArrowException) as e:
        raise _bad(str(out), f"cannot be reached ({_line(e)})") from None
    if kind == pafs.FileType.NotFound and (loc.local or not loc.child("spec.yaml").exists()):
        raise _bad(str(out), "does not exist")
    return where


def _check_local(path: str, shown: str) -> None:
    if os.path.islink(path):
        raise _bad(shown, f"{path} is a symlink (to {os.readlink(path)}); give the directory itself")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise _bad(shown, f"{path} exists and is not a directory")
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise _bad(shown, f"{existing} exists and is not a directory")
    _check_writable(existing, shown)
    if existing != path:
        return
    for name in SWEEP_ENTRIES:                   # what a sweep writes into DIR must be DIR's own
        entry = os.path.join(path, name)
        if os.path.islink(entry):
            raise _bad(shown, f"{entry} is a symlink (to {os.readlink(entry)}); ftsweep writes only into "
                              "the directory itself")
        if name != "spec.yaml" and os.path.lexists(entry):
            if not os.path.isdir(entry):
                raise _bad(shown, f"{entry} exists and is not a directory")
            _check_writable(entry, shown)


def _check_writable(path: str, shown: str) -> None:
    if not os.access(path, os.W_OK | os.X_OK):
        raise _bad(shown, f"{path} is not writable")


def _bad(shown: str, problem: str) -> ValueError:
    return ValueError(f"output {shown!r}: {problem}")


def _line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --------------------------------------------------------------------------- locations
@dataclasses.dataclass(frozen=True)
class Location:
    """A file or directory on a filesystem: ``fs`` + ``path`` (pyarrow path: absolute for
    local, ``bucket/key`` for object stores), ``where`` (the path or URI to show and to hand
    back to callers), ``commit`` (how whole files are committed; derived from ``fs`` unless
    given, see the module docstring)."""

    fs: pafs.FileSystem
    path: str
    where: str
    commit: str = ""

    def __post_init__(self):
        if not self.commit:
            object.__setattr__(self, "commit", _commit_mode(self.fs))
        if self.commit not in COMMIT_MODES:
            raise ValueError(f"commit must be one of {COMMIT_MODES}, got {self.commit!r}")

    @classmethod
    def of(cls, out: str | Path | Location) -> Location:
        """The location of a path or URI (a Location is returned as is)."""
        if isinstance(out, Location):
            return out
        fs, path = resolve(out)
        return cls(fs, path, str(out) if is_uri(out) else path)

    @property
    def local(self) -> bool:
        return self.commit == "local"

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def child(self, *parts: str) -> Location:
        """``self/part/...`` on the same filesystem (no new resolution)."""
        names = [p.strip("/") for p in parts if p.strip("/")]
        return dataclasses.replace(self, path="/".join([self.path.rstrip("/"), *names]),
                                   where=join(self.where, *names))

    # ---------------------------------------------------------------- reading
    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def files(self, pattern: str = "*") -> list[pafs.FileInfo]:
        """Files directly in this directory whose name matches the glob ``pattern``
        (``fnmatchcase``), sorted by path; a missing directory lists as empty.  Each
        FileInfo has ``path``, ``base_name``, ``size`` and ``mtime_ns``."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted((i for i in infos if i.type == pafs.FileType.File
                       and fnmatch.fnmatchcase(i.base_name, pattern)), key=lambda i: i.path)

    def open_input(self) -> pa.NativeFile:
        """A random-access reader (what ``pq.ParquetFile`` wants)."""
        return self.fs.open_input_file(self.path)

    # ---------------------------------------------------------------- writing
    def mkdir(self) -> None:
        """Create this directory and its parents (a no-op if it exists)."""
        self.fs.create_dir(self.path, recursive=True)

    def delete(self) -> bool:
        """Delete this file; False if it was not there."""
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            return False
        return True

    @contextlib.contextmanager
    def open_atomic(self, tmp_name: str | None = None) -> Iterator[BinaryIO]:
        """Yield a binary handle; on a clean exit the bytes appear at this path all at once
        (an existing file is replaced), on an error nothing changes.  ``tmp_name``: the hidden
        temp file's name for the local and rename modes (default ``.<name>.<random>.tmp``)."""
        if self.local:
            try:
                with atomic_open(Path(self.path), tmp_name) as f:
                    yield f
            except OSError as e:
                if e.errno in FULL_ERRNOS and not isinstance(e, StorageFull):
                    raise StorageFull(e.errno, e.strerror or os.strerror(e.errno), self.where) from e
                raise
            fsync_dir(posixpath.dirname(self.path))
            return
        buf = io.BytesIO()
        yield buf
        data = buf.getvalue()
        if self.commit == "stream":
            with self.fs.open_output_stream(self.path) as stream:
                stream.write(data)
            return
        tmp = posixpath.join(posixpath.dirname(self.path),
                             tmp_name or f".{self.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            with self.fs.open_output_stream(tmp) as stream:
                stream.write(data)
            self.fs.move(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise

    def check_space(self, nbytes: int) -> None:
        """Raise `StorageFull` unless this (local) directory can take a file of `nbytes` now: a hidden file is
        given that many blocks (``posix_fallocate``: real blocks, so ENOSPC/EDQUOT/EFBIG show) and removed.
        A no-op for object stores (no such thing as full)."""
        if not self.local:
            return
        probe = Path(self.path) / f".ftsweep-space-{uuid.uuid4().hex[:12]}.tmp"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(fd, 0, nbytes)
            finally:
                os.close(fd)
        except OSError as e:
            if e.errno in FULL_ERRNOS:
                raise StorageFull(e.errno, e.strerror or os.strerror(e.errno), self.where) from e
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):    # no fallocate there: no check
                raise
        finally:
            probe.unlink(missing_ok=True)

    def write_bytes_atomic(self, data: bytes) -> None:
        """Write ``data`` as this file's whole content, atomically (see :meth:`open_atomic`)."""
        with self.open_atomic() as f:
            f.write(data)


def _commit_mode(fs: pafs.FileSystem) -> str:
    if isinstance(fs, pafs.LocalFileSystem):
        return "local"
    return "stream" if fs.type_name in _OBJECT_STORES else "rename"


def write_bytes_atomic(out: str | Path | Location, data: bytes) -> None:
    """Write ``data`` to the file at a path or URI, atomically; see :meth:`Location.open_atomic`.
    The parent directory must exist (object stores have none)."""
    Location.of(out).write_bytes_atomic(data)
