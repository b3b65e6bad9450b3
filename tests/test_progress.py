"""Progress for people (issue 16, item 6): the status line's numbers and format, fed by the lines a real
`PackSearcher` emits; plain lines unchanged off a terminal; and a real tiny `ftsweep run` in a pseudo-terminal
drawing one live line that redraws in place."""
import io
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps.progress import ERASE, PREFIX, Progress, Tally, duration, expected_runs, status_line
from sweeps.spec import load_spec
from tests.grid_ids import grid_run_ids

ROOT = Path(__file__).parent.parent
TINY = """
name: progress
model:   {name: mlp, width: 8, depth: 2}
task:    {name: lora_teacher, batch_size: 16, n_val: 32, n_test: 32}
adapter: {name: full}
train:   {steps: 20, lr: 1.0e-2, eval_every: 10, early_stop: false}
axes:    {train.lr: [1.0e-2, 3.0e-2]}
seeds: 2
"""


def test_durations():
    assert [duration(s) for s in (0, 42.9, 60, 425, 3599, 3600, 7380, -3)] == \
        ["0s", "42s", "1m00s", "7m05s", "59m59s", "1h00m", "2h03m", "0s"]


def test_status_line_numbers():
    t = Tally(done=18, round=3, handed_out=30, came_back=24, stopped={"a": 2})
    assert status_line(t, 96, False, 240) == "runs 18/96 (18%) | 4.5 runs/min | ETA 17m20s | round 3: 4 training | 4m00s"
    assert status_line(t, 96, True, 240) == \
        "runs 18/~96 (~18%) | 4.5 runs/min | ETA ~17m20s | round 3: 4 training | 4m00s"
    assert status_line(Tally(), 8, False, 3) == "runs 0/8 (0%) | - runs/min | ETA ? | starting | 3s"
    assert status_line(Tally(done=2), None, False, 60) == "runs 2 | 2.0 runs/min | starting | 1m00s"
    assert status_line(Tally(done=2), None, False, 60, searching_s=30) == "runs 2 | 4.0 runs/min | starting | 1m00s"


def test_resumed_runs_count_as_done_not_in_the_rate_and_an_estimate_grows():
    t = Tally()
    t.feed("round 1: all 10 runs already recorded | 0m00s")
    t.feed("round 2: 5 of 8 runs already recorded")
    t.feed("round 2: 3 runs (1 groups) in 1 trial(s), 1 pack(s) | 0m01s")
    t.feed("  trial t_1: 3 runs (2 ok) | total 18 runs | 0m31s")
    assert (t.done, t.resumed, t.not_ok, t.training) == (18, 15, 1, 0)
    assert status_line(t, 12, True, 60) == "runs 18/~18 (~100%) | 3.0 runs/min | ETA ~0s | round 2: 0 training | " \
                                           "1 not ok | 1m00s"


def test_training_stays_right_with_overlapping_waves():
    """No round barrier: wave 2 is handed out while wave 1's other trial still runs; training counts the runs of
    every trial in flight, whichever wave, and a stopped-member report of a running trial survives a new wave."""
    t = Tally()
    t.feed("round 1: 8 runs (4 groups) in 2 trial(s), 2 pack(s) | 0m00s")
    t.feed("  trial a: pack 1/1 at step 10/20, 3/4 members training | 0m02s")
    t.feed("  trial b: pack 1/1 at step 10/20, 2/4 members training | 0m02s")
    assert t.training == 8 - 1 - 2
    t.feed("  trial a: 4 runs (4 ok) | total 4 runs | 0m03s")
    t.feed("round 2: 4 runs (2 groups) in 1 trial(s), 1 pack(s) | 0m03s")     # a's groups go on; b still runs
    assert (t.round, t.training) == (2, 4 - 2 + 4)
    t.feed("  trial c: 4 runs (3 ok) | total 8 runs | 0m05s")                 # wave 2 done before wave 1
    assert t.training == 4 - 2
    t.feed("  trial b: 4 runs (4 ok) | total 12 runs | 0m09s")
    assert (t.training, t.done, t.not_ok) == (0, 12, 1)
    assert status_line(t, None, False, 60).endswith("| round 2: 0 training | 1 not ok | 1m00s")


def searcher_lines(tmp_path: Path, progress) -> list[str]:
    """Drive a real PackSearcher (no Ray cluster: its Searcher methods called as Tune would) over TINY: two trials
    of two members, one in-trial report, one failed member. Returns every line it emitted, in order."""
    from sweeps.runner import PackSearcher
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(TINY)
    lines = []

    def both(line):
        lines.append(line)
        progress(line)
    s = PackSearcher(load_spec(spec_file), tmp_path / "out", n_slots=2, progress=both)
    trials = [t for t in ("t_1", "t_2") if s.suggest(t) is not None]
    assert trials == ["t_1", "t_2"] and s.suggest("t_3") is None
    s.on_trial_result("t_1", {"pack": 1, "packs": 1, "step": 10, "steps": 20, "active": 1, "of": 2, "n_runs": 0})
    for t, status in (("t_1", "ok"), ("t_2", "diverged")):
        rows = [{"run_id": p.member.run_id(), "status": status if i else "ok", **p.meta}
                for pack in s.outstanding[t] for i, p in enumerate(pack)]
        s.on_trial_complete(t, {"rows": json.dumps(rows)})
    assert s.suggest("t_3") == s.FINISHED
    return lines


def test_a_terminal_folds_the_trial_lines_into_the_status_line(tmp_path):
    now = [0.0]
    out, err = io.StringIO(), io.StringIO()
    spec = load_spec(_write(tmp_path))
    p = Progress.for_spec(spec, live=True, fold=True, out=out, err=err, clock=lambda: now[0], tick_s=None)

    def step(line):
        now[0] += 30
        p(line)
    lines = searcher_lines(tmp_path, step)
    assert [x.split(":")[0] for x in lines] == ["round 1", "  trial t_1", "  trial t_1", "  trial t_2"]
    assert out.getvalue() == PREFIX + lines[0] + "\n"                  # only the round line is printed
    draws = err.getvalue().split(ERASE)[1:]
    assert draws == [PREFIX + "runs 0/4 (0%) | - runs/min | ETA ? | round 1: 4 training | 30s",
                     PREFIX + "runs 0/4 (0%) | - runs/min | ETA ? | round 1: 3 training | 1m00s",
                     PREFIX + "runs 2/4 (50%) | 2.0 runs/min | ETA 1m00s | round 1: 2 training | 1m30s",
                     PREFIX + "runs 4/4 (100%) | 2.7 runs/min | ETA 0s | round 1: 0 training | 1 not ok | 2m00s"]
    p.close()
    assert err.getvalue().endswith(ERASE)                             # closed: the line is erased
    p("after close")
    assert out.getvalue().endswith(PREFIX + "after close\n") and err.getvalue().endswith(ERASE)


def test_piped_stdout_gets_every_line_unchanged(tmp_path):
    """stderr a terminal, stdout piped: the status line on stderr, and stdout exactly the plain lines. Neither a
    terminal: nothing on stderr."""
    for live in (True, False):
        out, err = io.StringIO(), io.StringIO()
        p = Progress(4, live=live, fold=False, out=out, err=err, tick_s=None)
        (tmp_path / str(live)).mkdir()
        lines = searcher_lines(tmp_path / str(live), p)
        assert out.getvalue() == "".join(PREFIX + x + "\n" for x in lines)
        assert (ERASE in err.getvalue()) is live and (err.getvalue() == "") is (not live)


def test_streams_that_are_not_terminals_get_no_status_line():
    p = Progress(3, out=io.StringIO(), err=io.StringIO())
    assert not p.live and not p.fold


def test_expected_runs():
    grid = ROOT / "sweeps" / "lora_threshold.yaml"
    assert load_spec(grid).search.kind == "grid" and expected_runs(load_spec(grid)) == (len(grid_run_ids(grid)), True)
    for searched in ("ftc_capacity", "lora_rank"):                    # capacity, optuna: estimates above the grid
        spec = load_spec(ROOT / "sweeps" / f"{searched}.yaml")
        n, exact = expected_runs(spec)
        assert spec.search.kind != "grid" and not exact and n > len(spec.grid_points()) * spec.seeds


def _write(tmp_path: Path) -> Path:
    f = tmp_path / "spec.yaml"
    f.write_text(TINY)
    return f


def read_all(fd: int, proc: subprocess.Popen, timeout: float) -> bytes:
    """Everything written to the pty until the child closes it (EIO on Linux) or `timeout` passes."""
    import time
    chunks, t0 = [], time.time()
    while time.time() - t0 < timeout:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


@pytest.mark.slow
def test_a_real_run_in_a_terminal_draws_one_live_line(tmp_path):
    import fcntl
    import struct
    import termios
    spec, out = _write(tmp_path), tmp_path / "out"
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))    # 200 columns: nothing cut
    env = {**os.environ, "TERM": "xterm", "FTCORE_PROGRESS_S": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "sweeps.cli", "run", str(spec), "--out", str(out)], cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    try:
        text = read_all(master, proc, timeout=600).decode(errors="replace")
        assert proc.wait(timeout=60) == 0, text[-3000:]
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert f"{ERASE}{PREFIX}runs 0/4 (0%)" in text and f"{ERASE}{PREFIX}runs 4/4 (100%)" in text, text[-3000:]
    assert "round 1: " in text and " training | " in text
    assert f"{PREFIX}round 1: 4 runs" in text and f"{PREFIX}done: 4 member runs" in text    # lines above it
    assert " ok) | total " not in text and "members training" not in text                     # trial lines folded
    assert f"{ERASE}{PREFIX}done: " in text                                   # the status line erased first
    assert text.rindex(ERASE) > text.rindex(f"{PREFIX}runs ")                   # and at the end, erased for good


def test_a_progress_pickles(tmp_path):
    """Tune pickles the searcher, and with it this callable: a copy keeps its tally and still works."""
    import pickle
    p = Progress(4, live=True, fold=True, out=io.StringIO(), err=io.StringIO(), tick_s=None)
    p("round 1: 4 runs (2 groups) in 2 trial(s), 2 pack(s) | 0m01s")
    copy = pickle.loads(pickle.dumps(p))
    assert copy.tally == p.tally and copy.total == 4 and copy._out is None
    copy.close()
