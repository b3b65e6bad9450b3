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


# --------------------------------------------------------------------------- a driver to watch and kill
# (tests/test_faults*.py): the CLI as a running process whose output is read line by line.

def start_cli(args: list[str], cwd: Path, **env) -> subprocess.Popen:
    """`python -m sweeps.cli ARGS` running, stdout+stderr merged and line-buffered; `env` added to ours."""
    import os
    return subprocess.Popen([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, text=True, bufsize=1,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **env})


def read_until(proc: subprocess.Popen, pattern: str, timeout: float = 400) -> list[str]:
    """Lines of `proc` up to and including the first one matching `pattern` (AssertionError with the output's
    tail if the process ends or `timeout` passes first)."""
    import re
    import time
    lines, t0 = [], time.time()
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return lines
        assert time.time() - t0 < timeout, "".join(lines[-40:])
    raise AssertionError(f"{pattern!r} never printed; exit {proc.wait()}:\n" + "".join(lines[-40:]))


def finish(proc: subprocess.Popen, timeout: float = 600, code: int = 0) -> str:
    """The rest of `proc`'s output, asserted to end with exit `code`."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == code, out[-4000:]
    return out


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2:].split()[1])        # "pid (comm) state ppid ..."
        kids.setdefault(ppid, []).append(int(stat.parent.name))
    return kids


def process_tree(pid: int) -> dict[int, bytes]:
    """pid -> cmdline of every descendant of `pid` (Linux /proc): what a local Ray driver started (GCS, raylet,
    agents, workers) and nothing of anyone else's."""
    kids, out, todo = _children(), {}, [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            try:
                out[child] = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            todo.append(child)
    return out


def kill_driver(proc: subprocess.Popen, grace_s: float = 2.0) -> None:
    """SIGKILL a driver as a crash would; after `grace_s` (Ray takes its raylet and workers down with it) kill
    what it had started that lives on (Ray's agents), each by pid and only if its command line is unchanged."""
    import os
    import signal
    import time
    tree = process_tree(proc.pid)
    proc.kill()
    proc.communicate()
    time.sleep(grace_s)
    for pid, cmdline in tree.items():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:
                os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
