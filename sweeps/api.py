"""The Python API: run a sweep and read its records back, through the same checks and code path as `ftsweep run`.

    import sweeps
    result = sweeps.run({"name": "tiny", ...} or "sweeps/ftc_capacity.yaml", overrides=["seeds=2"], out="results/x")
    result.runs       # pandas DataFrame, one row per member run (DIR/runs, DESIGN.md §4)
    result.curves     # pandas DataFrame, one row per (run_id, step) (DIR/curves)
    result.fits       # pandas DataFrame, one row per fitted curve of the report (DIR/report/fits.json)
    sweeps.load("results/x")            # the same object from a sweep directory or a URI (s3://..., file://...)

One code path: `ftsweep run` and `sweeps.run` both go through `prepared_run` (spec with its size caps, environment
knobs, output location, search storage: every check before anything is written) and `execute` (Ray up, then the
directory, its lock and spec.yaml; the sweep; the report). A user mistake raises `SweepError` (a ValueError) whose
message is the one line `ftsweep` prints after "ftsweep: error: " (and exits 2 for); nothing is written then.
Other failures keep their own types: `sweeps.lock.LockHeld` (another driver holds DIR), an `OSError` for a full
disk, `sweeps.runner.SweepInterrupted` (a KeyboardInterrupt: the runs so far are recorded; `ftsweep resume DIR`).

A dict spec is validated by the YAML loader itself (`sweeps.spec.load_checked`): it is written out as YAML (no
anchors; tuples as lists, NumPy scalars as Python numbers) to a private temporary file and read back, so a dict
and the same spec in a file get the same checks and the same messages.

`.fits`: `load` reads DIR/report/fits.json (written at the end of every local run, and by `ftsweep report`) when it
is at least as new as every runs part; otherwise (a URI run, an interrupted sweep, parts added since) it computes
the fits with `analysis.write_report` into a temporary directory. `load` never writes into DIR.

Importing this module is light (no Ray, torch or pandas): everything heavy is imported where it is used.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path


class SweepError(ValueError):
    """A user mistake (spec, override, output location, environment knob, cluster address): one line, the
    message `ftsweep` prints after "ftsweep: error: " (exit 2); nothing was written."""


# --------------------------------------------------------------------------- the result
class SweepResult:
    """A sweep's records: `runs` and `curves` (pandas DataFrames of the Parquet records, read by `analysis.load`),
    `fits` (a DataFrame of the report's fits.json records: sweep, panel, group, x, y, exponent, ci_low, ci_high,
    n_points, theory, ...; no rows when the report fits nothing), `dir` (the path or URI), `report` (report.md when
    the run wrote one here, else None) and `counts` (what `sweeps.run` counted: rounds (the waves handed out), runs,
    wall_s, ...; None from `load`)."""

    def __init__(self, dir: str, runs, curves, fits, report: Path | None = None, counts: dict | None = None):
        self.dir, self.runs, self.curves, self.fits, self.report, self.counts = dir, runs, curves, fits, report, counts

    def __repr__(self) -> str:
        return (f"SweepResult({self.dir!r}: {len(self.runs)} runs, {len(self.curves)} curve rows, "
                f"{len(self.fits)} fits)")


# --------------------------------------------------------------------------- the public calls
def run(spec, overrides=(), out: str | None = None, address: str | None = None, no_limits: bool = False,
        progress=True) -> SweepResult:
    """Run the sweep `spec` (a path to a YAML file, or a dict of the same content) with `overrides`
    (["key=value", ...]) into `out` (a new directory, or one without results; a URI such as s3://bucket/prefix;
    default results/<name>), on the Ray at `address` (default: a local Ray started and stopped here).

    `progress`: True prints what `ftsweep run` prints (the live status line when stderr is a terminal, the plain
    `[ftsweep] ...` lines otherwise), False prints nothing, a callable is called with each line. `no_limits` lifts
    the size caps (as --no-limits). Returns `load(out)` with `counts` and `report` set. Raises `SweepError` for a
    user mistake (nothing written); see the module docstring for the rest."""
    from sweeps.progress import Progress
    with user_errors():
        spec, out = prepared_run(spec, overrides, out, no_limits)
        say = Progress.for_spec(spec) if progress is True else (progress or (lambda line: None))
        with (say if isinstance(say, Progress) else contextlib.nullcontext()):
            counts, report = execute(spec, out, address, say=say)
    result = load(out)
    result.report, result.counts = report, counts
    return result


def load(where: str | os.PathLike) -> SweepResult:
    """The records of the sweep in `where` (a directory, or a URI of a pyarrow filesystem: its parts and fits.json
    are fetched to a temporary directory first). `SweepError` when there is no runs part there; a part that
    cannot be decoded raises `analysis.CorruptPartError` naming it."""
    import tempfile

    from sweeps.storage import is_uri
    shown = str(where)
    if not is_uri(shown):
        return _load_local(Path(shown), shown)
    with tempfile.TemporaryDirectory(prefix="ftsweep-load-") as tmp:
        _fetch(shown, Path(tmp))
        return _load_local(Path(tmp), shown)


@contextlib.contextmanager
def user_errors():
    """Re-raise a spec's `SpecError` (the loader's, the runner's address and resource checks) as `SweepError`,
    the one type a caller of the API catches."""
    try:
        yield
    except SweepError:
        raise
    except Exception as e:
        from sweeps.spec_checks import SpecError
        if isinstance(e, SpecError):
            raise SweepError(str(e)) from None
        raise


# --------------------------------------------------------------------------- checks (shared with ftsweep)
def load_checked_spec(source, overrides=(), limits: bool = True):
    """(spec, the member configs validation built) from a path or a mapping, through `sweeps.spec.load_checked`."""
    from sweeps.spec import load_checked
    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise SweepError(f"overrides: a list of 'key=value' strings (got {overrides!r})")
    if isinstance(source, Mapping):
        import tempfile
        with tempfile.TemporaryDirectory(prefix="ftsweep-spec-") as tmp:
            path = Path(tmp) / "spec.yaml"
            path.write_text(_as_yaml(source), encoding="utf-8")
            return load_checked(path, list(overrides), limits)
    if not isinstance(source, (str, os.PathLike)):
        raise SweepError(f"spec: a path to a YAML file or a dict (got {type(source).__name__})")
    return load_checked(source, list(overrides), limits)


def prepared_run(source, overrides, out: str | None, no_limits: bool = False):
    """(spec, output location) of a new sweep, every check done and nothing written: the spec (size caps unless
    `no_limits`), the environment knobs, the output location (no results there yet), the search's storage."""
    spec = load_checked_spec(source, overrides, limits=not no_limits)[0]
    check_env()
    where = output_dir(spec, out)
    check_search_storage(spec, where)
    return spec, where


def check_env() -> None:
    """Environment knobs read inside the workers: a bad value is a user mistake, refused before any write."""
    from ftkernels.dispatch import choice
    from sweeps.execute import progress_every_s
    try:
        choice()                                  # FTCORE_KERNELS
        progress_every_s()                        # FTCORE_PROGRESS_S
    except ValueError as e:
        raise SweepError(str(e)) from None


def output_dir(spec, out: str | None) -> str:
    """The output location (an absolute path, or a URI of a pyarrow filesystem); refused if it already
    holds a sweep's results. Creates nothing."""
    from sweeps.storage import check_output
    try:
        where = check_output(str(Path("results") / spec.name) if out is None else os.fspath(out))
    except (ValueError, OSError) as e:
        raise SweepError(f"--out: {e}") from None
    check_no_results(where)
    return where


def check_no_results(where: str) -> None:
    from sweeps.storage import Location
    try:
        taken = Location.of(where).child("runs").files("part-*.parquet")
    except (ValueError, OSError) as e:
        raise SweepError(f"--out: {e}") from None
    if taken:
        raise SweepError(f"--out {where}: already holds results of a sweep; choose a new directory "
                         f"(or finish it: ftsweep resume {where})")


def check_search_storage(spec, out: str) -> None:
    from sweeps.storage import is_uri
    if spec.search.kind == "optuna" and is_uri(out):
        raise SweepError(f"--out {out}: an optuna search keeps its studies in a journal file "
                         "(DIR/optuna/journal.log, file locks); use a local or NFS path")


def lock_dir(out: str, say):
    """Take DIR's driver lock (local directories; a URI is not locked: sweeps/lock.py). Returns the lock, or
    None for a URI. `LockHeld` names a live holder; a stale lock is taken over, and `say` is told whose it was."""
    from sweeps.lock import DirLock
    from sweeps.storage import FULL_ERRNOS, is_uri
    if is_uri(out):
        say(f"{out} is not locked (object stores have no lock that a crashed driver releases): "
            "run one driver at a time on it")
        return None
    lock = DirLock(out)
    try:
        stale = lock.acquire()
    except OSError as e:
        if e.errno in FULL_ERRNOS:
            raise
        raise SweepError(f"{lock.path}: cannot take the lock: {e.strerror or e}") from None
    if stale is not None:
        say(f"took over the lock of {out} from a driver that ended without releasing it ({stale.describe()})")
    return lock


# --------------------------------------------------------------------------- the run (shared with ftsweep)
def execute(spec, out: str, address: str | None = None, *, resume: bool = False, say=print):
    """Run (`resume`: finish) the checked `spec` into `out` and write its report (local output only); returns
    (counts, report.md path or None). Every line goes to `say`. A new sweep's directory, lock and spec.yaml are
    made once Ray is up (a bad address or execution section writes nothing); a resume checks the address, then
    takes the lock. The lock is held until the report is written."""
    from sweeps.runner import check_address, run_sweep
    from sweeps.spec import spec_to_yaml
    from sweeps.storage import Location, is_uri, join, write_bytes_atomic
    held = []

    def prepare():
        Location.of(out).mkdir()
        held.append(lock_dir(out, say))
        check_no_results(out)                 # a driver that held the lock may have finished meanwhile
        write_bytes_atomic(join(out, "spec.yaml"), spec_to_yaml(spec).encode())
    if resume:
        check_address(address)                # before the lock: a refused resume writes nothing at all
        held.append(lock_dir(out, say))
    try:
        say(f"{'resume' if resume else 'sweep'} {spec.name} -> {out} "
            f"({'Ray at ' + address if address else 'local Ray'})")
        quiet_full_disk_trials()
        counts = run_sweep(spec, out, address, progress=say, resume=resume, prepare=None if resume else prepare)
        _summary(counts, resume, say)
        if is_uri(out):
            say(f"results in {out}; copy them to a local directory DIR and run: ftsweep report DIR")
            return counts, None
        from analysis import write_report
        report = write_report(out)
        say(f"report: {report}")
        return counts, report
    finally:
        for lock in filter(None, held):
            lock.release()


def _summary(counts: dict, resume: bool, say) -> None:
    runs = counts["runs"]
    if resume:
        say(f"resumed: {counts['resumed']} runs were already recorded, {runs - counts['resumed']} ran now")
    say(f"done: {runs} member runs in {counts['rounds']} wave(s), {counts['wall_s']}s; "
        f"driver peak RSS {peak_rss_mib():.0f} MiB")
    if "full_grid_runs" in counts:
        say(f"capacity search: {runs} runs ({counts['probes']} probes) vs {counts['full_grid_runs']} "
            "for the full grid over the ladder")
    if counts.get("pruned"):
        say(f"pruning: {counts['pruned']} of {runs} runs pruned, {counts['steps_saved']} optimizer steps saved "
            f"({counts['steps']} trained)")


def peak_rss_mib() -> float:
    """Peak resident memory of this process (the Tune driver), from getrusage (KiB on Linux)."""
    import resource
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024


def _not_a_full_disk(record) -> bool:
    from sweeps.storage import storage_full
    return not (record.exc_info and storage_full(record.exc_info[1]))


def quiet_full_disk_trials() -> None:
    """A full disk ends in one line: Tune logs every failed trial attempt with its traceback, and a trial that
    failed on a full disk is reported by the caller (`ftsweep`: one line), so those records are dropped (every
    other failure is still logged). SIGXFSZ is ignored, here and (inherited through exec) in the Ray processes this
    driver starts, so that a file-size limit (ulimit -f) fails a write with EFBIG instead of killing the process."""
    import logging
    import signal
    logger = logging.getLogger("ray.tune.execution.tune_controller")
    if _not_a_full_disk not in logger.filters:
        logger.addFilter(_not_a_full_disk)
    if hasattr(signal, "SIGXFSZ"):
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        except ValueError:                    # not the main thread (an embedding caller): leave it
            pass


# --------------------------------------------------------------------------- reading back
def _load_local(d: Path, shown: str) -> SweepResult:
    """DIR's runs, curves and fits (`analysis.load` reads the parts)."""
    import pandas as pd

    from analysis.load import part_files, read_curves, read_runs
    if not d.is_dir():
        raise SweepError(f"{shown}: not a directory (a sweep output directory holds runs/ and curves/)")
    if not part_files(d, "runs"):
        raise SweepError(f"{shown}: no runs part files (runs/part-*.parquet): not a sweep output directory, "
                         "or no run has been recorded yet")
    runs = read_runs(d)
    curves = read_curves(d) if part_files(d, "curves") else pd.DataFrame({"run_id": [], "step": []})
    return SweepResult(shown, runs, curves, pd.DataFrame.from_records([] if runs.empty else _fit_records(d)))


def _fit_records(d: Path) -> list[dict]:
    """DIR/report/fits.json when it is not older than any runs part, else the fits computed into a temporary
    directory (DIR is not written)."""
    import tempfile

    from analysis import write_report
    from analysis.load import part_files
    saved = d / "report" / "fits.json"
    newest = max(p.stat().st_mtime_ns for p in part_files(d, "runs"))
    if saved.is_file() and saved.stat().st_mtime_ns >= newest:
        return json.loads(saved.read_text())
    with tempfile.TemporaryDirectory(prefix="ftsweep-fits-") as tmp:
        (Path(tmp) / "runs").symlink_to((d / "runs").resolve(), target_is_directory=True)
        write_report(tmp)
        return json.loads((Path(tmp) / "report" / "fits.json").read_text())


def _fetch(uri: str, into: Path) -> None:
    """Copy a URI sweep's runs and curves parts and report/fits.json into `into`, keeping their mtimes."""
    import pyarrow.fs as pafs

    from sweeps.storage import Location
    try:
        loc = Location.of(uri)
        files = [(sub, i) for sub in ("runs", "curves") for i in loc.child(sub).files("part-*.parquet")]
        files += [("report", i) for i in loc.child("report").files("fits.json")]
    except (ValueError, OSError) as e:
        raise SweepError(f"{uri}: {' '.join(str(e).split())[:300]}") from None
    local = pafs.LocalFileSystem()
    for sub, info in files:
        dest = into / sub / info.base_name
        dest.parent.mkdir(exist_ok=True)
        pafs.copy_files(info.path, str(dest), source_filesystem=loc.fs, destination_filesystem=local)
        if info.mtime_ns is not None:
            os.utime(dest, ns=(info.mtime_ns, info.mtime_ns))


def _as_yaml(spec: Mapping) -> str:
    """A dict spec as YAML text for the loader: every value written out (no anchors/aliases, which the loader
    refuses), tuples as lists, NumPy scalars as Python numbers; anything else that is not YAML data is refused."""
    import yaml

    class Plain(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True
    try:
        return yaml.dump(_plain(dict(spec)), Dumper=Plain, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError as e:
        bad = e.args[1] if len(e.args) > 1 else e
        raise SweepError(f"spec: {type(bad).__name__} value {bad!r} is not YAML data "
                         "(use str, int, float, bool, None, list or dict)") from None


def _plain(v):
    if isinstance(v, Mapping):
        return {k: _plain(u) for k, u in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(u) for u in v]
    if type(v).__module__ == "numpy" and hasattr(v, "item") and getattr(v, "ndim", None) == 0:
        return v.item()
    return v
