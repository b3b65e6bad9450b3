"""What the end-to-end tests share: the real CLI in a subprocess, and a Parquet dataset of a sweep read back."""
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def ftsweep(*args, cwd=None, timeout=900) -> subprocess.CompletedProcess:
    """`python -m sweeps.cli ARGS`, asserted to exit 0 (its output's tail in the failure message)."""
    r = subprocess.run([sys.executable, "-m", "sweeps.cli", *args], capture_output=True, text=True, cwd=cwd,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def read_dataset(d: Path) -> pa.Table:
    """Every committed part of DIR/runs or DIR/curves as one table (hidden temp files skipped)."""
    parts = sorted(p for p in Path(d).glob("*.parquet") if not p.name.startswith("."))
    assert parts, f"no parts in {d}"
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
