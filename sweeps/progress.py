"""Progress for people: one live status line on a terminal, the plain lines everywhere else.

`Progress` is a `progress=` callable for `sweeps.runner.run_sweep` (and for the CLI's own lines): it is fed the
lines the driver already emits, and reads these (sweeps/runner.py `PackSearcher`; "round N" is the N-th wave of
probes handed out, and with no round barrier several waves can be in flight at once):

    round 3: 12 runs (4 groups) in 2 trial(s), 2 pack(s) | 1m05s
    round 1: 4 of 12 runs already recorded                                  (resume)
    round 1: all 12 runs already recorded | 0m01s                           (resume)
      trial 1a2b_00001: pack 1/2 at step 500/3000, 5/6 members training | 1m30s
      trial 1a2b_00001: 6 runs (6 ok) | total 18 runs | 1m41s

When stderr is a terminal (and TERM is not `dumb`) it keeps one line there, redrawn in place (`\\r`, erase line)
on every event and once a second:

    [ftsweep] runs 18/~96 (~19%) | 4.2 runs/min | ETA ~18m34s | round 3: 6 training | 4m17s

If stdout is a terminal too, the in-trial lines ("  trial ...") are folded into the status line and every other
line is printed above it; if stdout is piped, it still gets every line, unchanged. When stderr is not a terminal
(piped, a Ray Job's log, a notebook) there is no status line: `[ftsweep] <line>` on stdout, as before.

The numbers. done: runs recorded (the runner's "total N runs"; resumed runs included). total: grid points × seeds
× the search's runs per grid point and seed (`expected_runs`): exact for a grid search; for capacity and Optuna
searches an estimate (the capacity ladder's doubling-then-bisection bound, Optuna's n_trials), shown with "~" and
raised to what is known once runs exceed it. rate: runs this driver recorded per minute (resumed runs left out),
on a clock that starts at the first wave, after Ray's start-up. ETA: (total - done) / rate. round: the latest
wave. training: runs this driver handed out to trials (every wave's, resumed runs left out) minus the runs its
finished trials recorded, less those an in-trial report says have stopped (converged or diverged in a pack still
running), so it stays right with several waves in flight.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field

PREFIX = "[ftsweep] "
ERASE = "\r\x1b[K"                    # carriage return, erase to the end of the line

ROUND = re.compile(r"round (\d+): (\d+) runs \(\d+ groups?\) in ")
ALL_RECORDED = re.compile(r"round (\d+): all (\d+) runs already recorded")
SOME_RECORDED = re.compile(r"round (\d+): (\d+) of (\d+) runs already recorded")
IN_TRIAL = re.compile(r"\s+trial (\S+): pack \d+/\d+ at step \d+/\d+, (\d+)/(\d+) members training")
TRIAL_DONE = re.compile(r"\s+trial (\S+): (\d+) runs \((\d+) ok\) \| total (\d+) runs")


def expected_runs(spec) -> tuple[int, bool]:
    """(member runs the sweep is expected to record, whether that is exact): grid points × seeds × the search's
    runs per point (`SearchConfig.runs_per_point`, the bound the size cap uses); exact for a grid search only."""
    n = len(spec.grid_points()) * len(spec.seed_list()) * spec.search.runs_per_point()
    return n, spec.search.kind == "grid"


@dataclass
class Tally:
    """What the driver's lines say so far (see the module docstring)."""
    done: int = 0
    resumed: int = 0
    not_ok: int = 0
    round: int = 0                        # the latest wave
    handed_out: int = 0                   # runs handed out to trials, every wave (recorded ones left out)
    came_back: int = 0                    # runs the finished trials recorded
    stopped: dict[str, int] = field(default_factory=dict)    # running trial id -> stopped members of its current pack

    def feed(self, line: str) -> bool:
        """Take one line in; True if it is a trial's own line (an in-trial report or a finished trial)."""
        if m := ROUND.match(line):
            self.round = int(m[1])
            self.handed_out += int(m[2])
        elif m := ALL_RECORDED.match(line):
            self.round = int(m[1])
            self.resumed += int(m[2])
            self.done += int(m[2])
        elif m := SOME_RECORDED.match(line):
            self.resumed += int(m[2])
            self.done += int(m[2])
        elif m := IN_TRIAL.match(line):
            self.stopped[m[1]] = int(m[3]) - int(m[2])
            return True
        elif m := TRIAL_DONE.match(line):
            self.stopped.pop(m[1], None)
            self.came_back += int(m[2])
            self.not_ok += int(m[2]) - int(m[3])
            self.done = int(m[4])
            return True
        return False

    @property
    def training(self) -> int:
        """Runs in the trials in flight (of any wave) still training."""
        return max(0, self.handed_out - self.came_back - sum(self.stopped.values()))


def duration(s: float) -> str:
    """42s, 7m05s, 2h03m."""
    s = int(max(s, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def status_line(t: Tally, total: int | None, estimate: bool, elapsed_s: float, searching_s: float | None = None) -> str:
    """The status line (without the prefix) for tally `t`, `elapsed_s` seconds after this driver started and
    `searching_s` (default: the same) after its search did (the rate's clock: Ray's start-up left out)."""
    approx = "~" if estimate else ""
    parts = [f"runs {t.done}"]
    if total:
        total = max(total, t.done + t.training)
        parts[0] += f"/{approx}{total} ({approx}{100 * t.done // total}%)"
    searching_s = elapsed_s if searching_s is None else searching_s
    rate = (t.done - t.resumed) / (searching_s / 60) if searching_s > 0 else 0.0
    if rate > 0:
        parts.append(f"{rate:.1f} runs/min" if rate < 10 else f"{rate:.0f} runs/min")
        if total:
            parts.append(f"ETA {approx}{duration(60 * (total - t.done) / rate)}")
    else:
        parts += ["- runs/min"] + (["ETA ?"] if total else [])
    parts.append(f"round {t.round}: {t.training} training" if t.round else "starting")
    if t.not_ok:
        parts.append(f"{t.not_ok} not ok")
    parts.append(duration(elapsed_s))
    return " | ".join(parts)


def _terminal(stream) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _width(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 100


class Progress:
    """The `progress=` callable: each line is printed as `[ftsweep] <line>` (on stdout) unless folded, and a live
    status line is kept on stderr when it is a terminal (see the module docstring). `live`/`fold` override the
    terminal checks; `out`/`err` default to sys.stdout/sys.stderr at each write; `clock` gives seconds; `tick_s`:
    redraw period while live (None: only on events). Use as a context manager, or call `close()`: it stops the
    redraws and erases the status line, so what is printed next starts on a clean line."""

    def __init__(self, total: int | None = None, estimate: bool = False, *, live: bool | None = None,
                 fold: bool | None = None, out=None, err=None, clock=time.monotonic, tick_s: float | None = 1.0):
        self.total, self.estimate = total, estimate
        self._out, self._err, self.clock, self.tick_s = out, err, clock, tick_s
        self.live = _terminal(self.err) if live is None else live
        self.fold = (self.live and _terminal(self.out)) if fold is None else fold
        self.tally = Tally()
        self.t0 = clock()
        self.t_search: float | None = None    # the first wave's line: the rate's clock starts there
        self._drawn = False
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @classmethod
    def for_spec(cls, spec, **kw) -> Progress:
        n, exact = expected_runs(spec)
        return cls(n, not exact, **kw)

    @property
    def out(self):
        return self._out or sys.stdout

    @property
    def err(self):
        return self._err or sys.stderr

    def status(self) -> str:
        now = self.clock()
        searching = None if self.t_search is None else now - self.t_search
        return PREFIX + status_line(self.tally, self.total, self.estimate, now - self.t0, searching)

    def __call__(self, line: str) -> None:
        line = str(line)
        with self._lock:
            trial_line = self.tally.feed(line)
            if self.t_search is None and self.tally.round:
                self.t_search = self.clock()
            if not (self.fold and trial_line):
                self._erase()
                self.out.write(PREFIX + line + "\n")
                self.out.flush()
            self._draw()
        if self.live and self.tick_s and self._ticker is None and not self._stop.is_set():
            self._ticker = threading.Thread(target=self._tick, name="ftsweep-progress", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self._lock:
                self._draw()

    def _draw(self) -> None:
        if not self.live or self._stop.is_set():
            return
        text = self.status()[: max(_width(self.err) - 1, 20)]   # never wrap: `\r` redraws one row only
        self.err.write(ERASE + text)
        self.err.flush()
        self._drawn = True

    def _erase(self) -> None:
        if self._drawn:
            self.err.write(ERASE)
            self.err.flush()
            self._drawn = False

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._erase()

    def __getstate__(self) -> dict:
        """Picklable (Tune pickles the searcher that holds this callable): the lock, the redraw thread and the
        streams stay behind; a copy writes to its own process's stdout/stderr."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_stop", "_ticker", "_out", "_err")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _out=None, _err=None, _ticker=None)
        self._lock, self._stop = threading.RLock(), threading.Event()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
