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

No function here creates anything unless its name says it writes (``mkdir``, ``open_atomic``,
``write_bytes_atomic``, ``delete``).
"""

from __future__ import annotations

import contextlib
import dataclasses
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


def _check_local(path: str, shown: str) -> None:
    if os.path.lexists(path) and not os.path.isdir(path):
        raise _bad(shown, f"{path} exists and is not a directory")
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise _bad(shown, f"{existing} exists and is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _bad(shown, f"{existing} is not writable")


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
            with atomic_open(Path(self.path), tmp_name) as f:
                yield f
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
