"""One driver per output directory: an exclusive lock on a local (or NFS) sweep directory.

Two drivers writing one directory would race on its parts and on the search's decisions (a capacity search
reads the rows of its rounds), so `ftsweep run`, `ftsweep resume` and the job that `ftsweep submit --resume`
starts hold ``DIR/.ftsweep.lock`` from before their first write until they exit.

Why it is built this way:

* ``fcntl.flock`` on the open lock file: the kernel releases it when the holder's process ends, however it
  ends (kill -9 included), so a crashed driver never blocks the next one. On NFS, Linux maps flock to a
  POSIX byte-range lock that the server arbitrates between hosts (NFSv4, or v3 with lockd).
* The file says who holds it (host, pid, since when, command) so that a refused driver can name the holder.
  A file that is there but not locked is *stale*: its holder ended without releasing it (crashed, killed).
  The next driver takes it over and says whose it was (`DirLock.acquire` returns that holder).
* The file exists only while a driver holds it (removed on release), so a driver that stops on a failed
  check leaves the directory as it found it. Removing a lock file races with a driver that opened it just
  before: after locking, the holder checks that its descriptor is still the file at the path, else retries.
* Object-store URIs (s3://, gs://, ...) have no lock that a crash releases: they are not locked (the CLI says
  so). Part names carry a per-driver token (`sweeps.part_names`), so even two drivers on one URI never
  replace each other's parts; their searches would still duplicate work.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".ftsweep.lock"


class LockHeld(RuntimeError):
    """Another live driver holds the directory (exit 1: an environment failure, not a usage mistake)."""


@dataclasses.dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    since: str          # UTC, ISO 8601
    command: str

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   " ".join(["ftsweep", *sys.argv[1:]])[:200])

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            d = json.loads(text)
            return cls(str(d["host"]), int(d["pid"]), str(d["since"]), str(d.get("command", "")))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.since}"

    def gone(self) -> bool:
        """True when this holder ran on this host and its process no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class DirLock:
    """The lock of one local sweep directory (which must exist). Use ``acquire()`` / ``release()``."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> Holder | None:
        """Take the lock; returns the previous holder if it was stale (taken over), else None. Raises
        `LockHeld` naming the live holder, or OSError (e.g. a read-only directory, a symlink as lock file)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                text = _read(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise LockHeld(self._held_message(Holder.parse(text))) from None
                raise
            if not self._still_linked(fd):      # a releasing holder removed it between our open and flock
                os.close(fd)
                continue
            stale = Holder.parse(_read(fd))
            self._fd = fd
            try:
                _write(fd, json.dumps(dataclasses.asdict(Holder.me())) + "\n")
            except OSError:                      # e.g. no space left: hold nothing, leave no file
                self.release()
                raise
            return stale

    def release(self) -> None:
        """Remove the lock file, then unlock (in that order: see the module docstring). Idempotent."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:                          # the directory became read-only: the flock still goes
            pass
        os.close(self._fd)
        self._fd = None

    def _still_linked(self, fd: int) -> bool:
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)

    def _held_message(self, holder: Holder | None) -> str:
        where = self.path.parent
        if holder is None:
            return f"{where} is in use by another ftsweep driver (its lock file {self.path} names no holder)"
        note = ""
        if holder.gone():
            note = (f"; pid {holder.pid} has ended, but a process it started still holds the lock "
                    "(find it with: fuser " + str(self.path) + ")")
        return (f"{where} is in use by another ftsweep driver: {holder.describe()} ({holder.command}){note}; "
                "one driver per output directory: wait for it to end, or stop it")


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", "replace")


def _write(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode())
    os.fsync(fd)
