"""Fault injection for tests: make a trial's process die at a chosen point, from an environment variable.

The failure paths of a sweep (a trial whose retries run out, a trial that dies after committing its rows
but before reporting them) cannot be reached by killing processes from outside at the right instant
without races, so the trainable calls `inject(point, ...)` at the two points and this module decides.

Grammar (unset or empty: off; anything else that does not parse is an error, never silently off)::

    FTCORE_FAULT=FAULT[;FAULT]...          several faults: each trial meets them in order
    FAULT=MODE[,KEY=VALUE]...

    MODE
      die               the process running the trial kills itself (SIGKILL) before it trains: with no
                        `times` every attempt dies, Tune's `execution.max_failures` retries run out and the
                        searcher records the trial's members `failed`
      die_after_commit  it kills itself after the trial's runs part is committed (sweeps.execute.execute_trial
                        returned) and before `ray.tune.report` hands the rows to the searcher
    KEY=VALUE           (each key at most once)
      run=HEX           only a trial with a member whose run_id starts with HEX (lowercase hex)
      times=N           at most N firings in the whole sweep (N >= 1), counted in `dir` (required with it)
      dir=PATH          an existing directory, absolute path without "," or ";": each firing first claims a
                        file fault-<j>-<i>.json there (j: the fault's position in the variable, from 0;
                        O_CREAT|O_EXCL, so concurrent workers count right) holding the mode, trial id, pid,
                        process title and run_ids of the trial it killed — proof that the variable reached
                        the worker, and how many attempts died

    e.g. FTCORE_FAULT=die,run=3fa9                       one trial fails for good
         FTCORE_FAULT=die_after_commit,times=1,dir=/tmp/f  the first trial to commit dies once; its retry succeeds
         FTCORE_FAULT=die,run=3fa9;die_after_commit,run=07c2   two trials, two faults

How it reaches the workers: by inheritance. A local Ray (`ftsweep run`/`resume` without `--address`) is
started by the driver process, so its raylet and every worker it spawns inherit the driver's environment
as it was at `ray.init` (tests/test_faults_e2e.py checks the firing happened in a worker). Workers of a
cluster that was already running (`--address`) do not see the driver's variable: set it in the cluster's
environment there.

Cost when unset: one `os.environ.get` per trial. The driver calls `check_env` before anything is written:
a malformed value is a user mistake (one line, exit 2), and a valid one is announced, so a fault is never
on by accident nor unnoticed.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import dataclass

ENV = "FTCORE_FAULT"
POINTS = {"die": "start", "die_after_commit": "committed"}     # mode -> the point where it fires
KEYS = ("run", "times", "dir")


class FaultError(ValueError):
    """FTCORE_FAULT does not parse (the message names the variable, the value and what is allowed)."""


@dataclass(frozen=True)
class Fault:
    mode: str
    run: str | None = None
    times: int | None = None
    dir: str | None = None
    position: int = 0                    # in FTCORE_FAULT (names its firing files)

    def strike(self, point: str, packs: list[list[dict]], trial_id: str) -> None:
        """Kill this process if the fault is set for `point` and this trial (and a firing is left)."""
        if POINTS[self.mode] != point:
            return
        run_ids = pack_run_ids(packs)
        if self.run is not None and not any(r.startswith(self.run) for r in run_ids):
            return
        if self.dir is not None and not self._claim({"mode": self.mode, "trial_id": trial_id, "pid": os.getpid(),
                                                     "process": process_title(), "run_ids": run_ids,
                                                     "time": time.time()}):
            return
        die()

    def _claim(self, record: dict) -> bool:
        """Take the next free fault-<position>-<i>.json in `dir` (False: `times` firings were all taken)."""
        i = 0
        while self.times is None or i < self.times:
            try:
                fd = os.open(os.path.join(self.dir, f"fault-{self.position}-{i}.json"),
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                i += 1
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            return True
        return False


def die() -> None:
    """SIGKILL this process: no handler, no cleanup, no flush — as the OOM killer or a lost node would."""
    os.kill(os.getpid(), signal.SIGKILL)


def process_title() -> str:
    """What this process calls itself (a Ray worker: "ray::ImplicitFunc.train"), for the firing record."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def pack_run_ids(packs: list[list[dict]]) -> list[str]:
    """run_ids of a trial payload's members (sweeps.search.base `Probe.payload`: a config per member)."""
    from ftcore.config import member_from_dict
    ids = []
    for pack in packs:
        for p in pack:
            member = p["config"] if hasattr(p["config"], "run_id") else member_from_dict(p["config"])
            ids.append(member.run_id())
    return ids


def parse(text: str) -> list[Fault]:
    """FTCORE_FAULT's value -> its faults, in order; FaultError naming what is wrong."""
    return [parse_one(text, item, j) for j, item in enumerate(text.split(";"))]


def parse_one(text: str, item: str, position: int = 0) -> Fault:
    """One FAULT of FTCORE_FAULT=`text`."""
    def bad(why: str) -> FaultError:
        return FaultError(f"{ENV}={text!r}: {why} (grammar: MODE[,run=HEX][,times=N,dir=PATH][;...], MODE one of "
                          f"{', '.join(POINTS)}; unset it to turn fault injection off)")
    mode, *pairs = [t.strip() for t in item.split(",")]
    if mode not in POINTS:
        raise bad(f"unknown mode {mode!r}")
    opts: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if key not in KEYS or not eq:
            raise bad(f"unknown option {pair!r}")
        if key in opts:
            raise bad(f"{key} given twice")
        opts[key] = value
    run, times, where = opts.get("run"), opts.get("times"), opts.get("dir")
    if run is not None and not re.fullmatch(r"[0-9a-f]+", run):
        raise bad(f"run={run!r} is not a lowercase hex run_id prefix")
    if times is not None and not (re.fullmatch(r"[0-9]+", times) and int(times) >= 1):
        raise bad(f"times={times!r} is not a whole number >= 1")
    if times is not None and where is None:
        raise bad("times= needs dir= (the firings are counted there)")
    if where is not None and not os.path.isabs(where):
        raise bad(f"dir={where!r} is not an absolute path")
    return Fault(mode, run, int(times) if times else None, where, position)


def from_env() -> list[Fault]:
    """The faults FTCORE_FAULT sets ([] when it is unset or empty)."""
    text = os.environ.get(ENV)
    return parse(text) if text else []


def inject(point: str, packs: list[list[dict]], trial_id: str) -> None:
    """Called by the trainable at `point` ("start": before training, "committed": rows written, not reported)."""
    if os.environ.get(ENV):
        for fault in from_env():
            fault.strike(point, packs, trial_id)


def check_env(progress=None) -> list[Fault]:
    """The driver's check, before it writes anything: SpecError (exit 2, one line) if FTCORE_FAULT is malformed
    or its dir is missing; a set fault is announced through `progress`."""
    from sweeps.spec import SpecError
    try:
        found = from_env()
    except FaultError as e:
        raise SpecError(str(e)) from None
    for fault in found:
        if fault.dir is not None and not os.path.isdir(fault.dir):
            raise SpecError(f"{ENV}: dir={fault.dir!r} is not an existing directory")
    if found and progress is not None:
        progress(f"fault injection ON ({ENV}={os.environ[ENV]}): trials will be killed on purpose")
    return found
