"""Atomic file writes for the sinks: a crash never leaves a half-written visible file.

Write to a hidden temp file in the same directory (same filesystem, so the rename is atomic; a leading
dot, so pyarrow dataset discovery and TensorBoard ignore it), fsync, then `os.replace` onto the final
name. On any error the temp file is removed and an existing file is left untouched. (`analysis` keeps its
own twin in `analysis/atomic.py`: it imports nothing from `sweeps`, by design.)

These are the local-disk (and NFS) primitives; `sweeps.storage` picks them for local locations and
uses whole-object uploads for object stores.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


@contextlib.contextmanager
def atomic_open(path: Path, tmp_name: str | None = None):
    """Yield a binary handle; on a clean exit the bytes appear at `path` all at once."""
    path = Path(path)
    tmp = path.with_name(tmp_name or f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(directory: Path | str) -> None:
    """Make a rename in `directory` survive a power loss. Best effort: some filesystems (and all
    of Windows) refuse fsync on a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
