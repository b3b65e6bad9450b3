"""Part names that no other driver can produce: ``<trial_id>.<driver token>`` (``...-failed`` for the rows of a
trial that failed after its retries).

Tune names trials with 8 random hex digits (``Trial.generate_id``), drawn afresh by every driver: a resumed
driver (or a second one on the same directory) can draw a trial id that an earlier driver already used, and
with 10,000 trials in one directory the chance of some repeat is about 1%. Named by the trial id alone, such a
part would replace the earlier driver's part and lose its runs. So every part name also carries a token of the
driver run that wrote it, the same in the driver and in all its workers without being passed around: a hash of
the Ray session (new for every Ray start) and the job id (new for every driver connecting to a cluster). A
retry of a trial (same driver, same trial id) gets the same name and replaces its own part, as the sink's
idempotent retry expects; the sink also refuses to replace a part whose footer names another writer
(`sweeps.sink`). Old part names (the bare trial id) stay valid: readers glob ``part-*.parquet``.

Outside Ray (a test calling the sink or `execute_trial` directly) the token is random per process.
"""
from __future__ import annotations

import functools
import hashlib
import secrets

FAILED_SUFFIX = "-failed"


@functools.lru_cache(maxsize=1)
def _process_token() -> str:
    return secrets.token_hex(4)


def driver_token() -> str:
    """8 hex digits naming this driver run (see the module docstring)."""
    try:
        import ray
        if not ray.is_initialized():
            return _process_token()
        ctx = ray.get_runtime_context()
        key = f"{ctx.get_session_name()}/{ctx.get_job_id()}"
    except Exception:                # a Ray client or an older Ray: still unique per process
        return _process_token()
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def part_name(trial_id: str, failed: bool = False) -> str:
    """The part of trial `trial_id` written by this driver run."""
    return f"{trial_id}.{driver_token()}" + (FAILED_SUFFIX if failed else "")
