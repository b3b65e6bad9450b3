"""Atomic file output: write a temp file beside the target, then `os.replace` it into place, so a
reader (or a crash) never sees a half-written report, fits.json or PNG."""
from __future__ import annotations

import io
import os
import uuid
from pathlib import Path


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to `path` atomically (same directory temp file + os.replace); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # hidden, same filesystem
    try:
        with open(tmp, "xb") as f:  # mode from the umask, like any other output file
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Render a matplotlib Figure to PNG bytes and write them atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write(path, buf.getvalue())
