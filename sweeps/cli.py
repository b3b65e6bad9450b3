"""`ftsweep`: run, validate and report sweeps.

    ftsweep run SPEC [key=value ...] [--out DIR] [--address ADDR] [--no-limits]
    ftsweep resume DIR [--address ADDR] [--no-limits]
    ftsweep submit SPEC [key=value ...] --address http://HEAD:8265 [--out DIR|URI] [--wait] [--no-limits]
    ftsweep submit --resume DIR|URI --address http://HEAD:8265 [--wait] [--no-limits]
    ftsweep status [JOB] --address http://HEAD:8265
    ftsweep logs JOB --address http://HEAD:8265 [--follow]
    ftsweep stop JOB --address http://HEAD:8265
    ftsweep validate SPEC [key=value ...] [--no-limits]
    ftsweep report DIR

Exit codes: 0 success, 2 a user mistake (bad spec, override, path), 1 a failure while running (another
driver holds DIR, the disk is full, a part cannot be read), 130 interrupted (Ctrl-C or SIGTERM: the runs
finished so far are recorded; `ftsweep resume DIR` goes on). Either is one line on stderr, never a traceback.
A user mistake writes nothing: every subcommand checks its inputs before it touches a directory (resume
deletes the parts of failed runs only after its spec, address, directory and lock checks have passed).

Besides the schema, a spec must be UTF-8 YAML without duplicate keys, aliases or ${...} interpolation, with
finite numbers, a `name` of [A-Za-z0-9._-] without `..`, no axis value twice, and sizes under caps (seeds,
train.steps, implied member runs) that --no-limits lifts. An output directory (--out, resume DIR, report DIR)
must be a writable directory (or, for --out, a new path under one), neither a regular file nor a symlink, and
so must the entries ftsweep writes in it (runs, curves, tb, report, checkpoints, spec.yaml); symlinked parents
are fine (see sweeps/storage.py).

One driver per output directory: run and resume (also as the job of submit / submit --resume) hold
DIR/.ftsweep.lock (host, pid, start time; an OS lock, released by the kernel if the driver dies). A second
driver exits 1 naming the holder; a lock left by a driver that died is taken over, with a line saying whose it
was. URIs (s3://...) are not locked (sweeps/lock.py).

A full disk (or quota, or file-size limit) exits 1 with one line: parts are written atomically, so none is
left half-written, and `ftsweep resume DIR` with space finishes the sweep.

Progress: run and resume keep one live status line on stderr when it is a terminal (runs done of the total,
runs/min, ETA, members training; sweeps/progress.py); piped, or in a Ray Job's log, the plain `[ftsweep]` lines.
run and resume share their code path with the Python API (`sweeps.run`, sweeps/api.py): this module parses
arguments and turns exceptions into one line and an exit code.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sweeps.api import SweepError as CliError  # a user mistake outside the spec (paths, output directory): exit 2

USAGE_ERROR, RUN_ERROR, INTERRUPTED = 2, 1, 130


class JobRefused(Exception):
    """The Jobs API refused a job (exit 1)."""


def _err(msg: str) -> None:
    print(f"ftsweep: error: {msg}", file=sys.stderr)


def _say(msg: str) -> None:
    print(f"[ftsweep] {msg}", flush=True)


NO_LIMITS_HELP = "lift the size caps (seeds <= 1000, train.steps <= 10,000,000, member runs <= 1,000,000)"
EPILOG = ("run, resume, validate and submit take --no-limits: " + NO_LIMITS_HELP + ". Exit 2: a user mistake "
          "(nothing written); 1: a failure while running (DIR locked by another driver, disk full, unreadable part); "
          "130: interrupted (finish with: ftsweep resume DIR). An output directory must be a writable directory "
          "that is not a symlink; one driver at a time holds DIR/.ftsweep.lock.")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line like every other (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"ftsweep: error: {message} (see: {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ftsweep", description="Map capacity and scaling curves of fine-tuning.", epilog=EPILOG)
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a sweep on Ray (local unless --address)")
    run.add_argument("spec")
    run.add_argument("overrides", nargs="*", metavar="key=value")
    run.add_argument("--out", help="output directory, new or without results (default: results/<sweep name>); "
                                   "not a file or a symlink; locked while the sweep runs")
    run.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    run.add_argument("--no-limits", action="store_true", help=NO_LIMITS_HELP)
    res = sub.add_parser("resume", help="finish an interrupted sweep in DIR (runs already recorded are not run again, "
                                        "failed ones are); locks DIR while it runs")
    res.add_argument("dir")
    res.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    res.add_argument("--no-limits", action="store_true", help=NO_LIMITS_HELP)
    jobs_help = "the Ray Jobs API (dashboard) URL, e.g. http://127.0.0.1:8265 (default: $RAY_API_SERVER_ADDRESS)"
    smt = sub.add_parser("submit", help="run a sweep on a Ray cluster as a Ray Job "
                                        "(this code and the resolved spec are uploaded)")
    smt.add_argument("spec", nargs="?")
    smt.add_argument("overrides", nargs="*", metavar="key=value")
    smt.add_argument("--address", help=jobs_help)
    smt.add_argument("--resume", metavar="DIR", help="instead of SPEC: finish the interrupted sweep in DIR (a path "
                                                     "on the cluster or a URI) as a job")
    smt.add_argument("--out", help="output directory on the cluster, shared by its nodes, or a URI such as "
                                   "s3://bucket/prefix (default: ~/ftcore/results/<sweep name> on the head)")
    smt.add_argument("--wait", action="store_true", help="follow the job's logs until it ends; exit 0 only if it succeeded")
    smt.add_argument("--no-limits", action="store_true", help=NO_LIMITS_HELP + " (here and in the job)")
    sts = sub.add_parser("status", help="status of a submitted sweep job (all ftsweep jobs without JOB)")
    sts.add_argument("job", nargs="?")
    sts.add_argument("--address", help=jobs_help)
    lgs = sub.add_parser("logs", help="the output of a submitted sweep job")
    lgs.add_argument("job")
    lgs.add_argument("--address", help=jobs_help)
    lgs.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    stp = sub.add_parser("stop", help="stop a submitted sweep job (the runs finished so far stay recorded)")
    stp.add_argument("job")
    stp.add_argument("--address", help=jobs_help)
    val = sub.add_parser("validate", help="check a sweep spec and overrides; writes nothing")
    val.add_argument("spec")
    val.add_argument("overrides", nargs="*", metavar="key=value")
    val.add_argument("--no-limits", action="store_true", help=NO_LIMITS_HELP)
    rep = sub.add_parser("report", help="write DIR/report (fits.json, figures, report.md) from DIR/runs")
    rep.add_argument("dir")
    return p


def cmd_validate(args) -> int:
    from sweeps.api import load_checked_spec
    spec, checked = load_checked_spec(args.spec, args.overrides, limits=not args.no_limits)
    n = len(checked)
    s = spec.search
    extra = ""
    if s.kind == "capacity":
        extra = f"; capacity search over {s.param} on a ladder of {len(s.ladder_values())} values"
    elif s.kind == "optuna":
        extra = f"; optuna over {', '.join(s.params)} ({s.n_trials} trials per tuned group)"
    print(f"{spec.name}: OK — {len(spec.grid_points())} grid points × {spec.seeds} seeds{extra} ({n} configs checked)")
    return 0


def cmd_run(args) -> int:
    from sweeps.api import prepared_run
    spec, out = prepared_run(args.spec, args.overrides, args.out, args.no_limits)
    return _run(spec, out, args.address, resume=False)


def _sweep_dir(given: str) -> tuple[str, bytes]:
    """resume's DIR checked (an existing output directory that ftsweep may write, see `_check_local`) and
    its saved spec.yaml's bytes. Creates nothing."""
    from sweeps.storage import Location, check_existing
    try:
        out = check_existing(given)
        saved = Location.of(out).child("spec.yaml")
        info = saved.info()
        if info.type.name == "NotFound":
            raise CliError(f"{given}: no spec.yaml (not a sweep output directory written by ftsweep run)")
        if info.type.name != "File":
            raise CliError(f"{saved.where}: not a file")
        with saved.open_input() as f:
            return out, f.read()
    except (ValueError, OSError) as e:
        raise CliError(str(e)) from None


def cmd_resume(args) -> int:
    from sweeps.api import check_env, check_search_storage
    from sweeps.spec import load_spec
    from sweeps.storage import is_uri
    out, text = _sweep_dir(args.dir)
    if is_uri(out):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:      # load_spec reads a file: the saved, resolved spec
            (Path(tmp) / "spec.yaml").write_bytes(text)
            spec = load_spec(Path(tmp) / "spec.yaml", limits=not args.no_limits)
    else:
        spec = load_spec(Path(out) / "spec.yaml", limits=not args.no_limits)
    check_env()
    check_search_storage(spec, out)
    return _run(spec, out, args.address, resume=True)


def cmd_submit(args) -> int:
    from sweeps import submit
    from sweeps.api import check_env, check_search_storage
    if args.resume is not None:
        if args.spec is not None or args.overrides or args.out:
            raise CliError("--resume DIR finishes the sweep saved in DIR: give no SPEC, overrides or --out with it")
        out = _cluster_out("--resume", args.resume)
        job_id = _submit_job(lambda: submit.submit_resume(out, args.address, no_limits=args.no_limits))
        return _submitted(args, f"resume of {out}", job_id, out)
    if args.spec is None:
        raise CliError("give a SPEC to submit (or --resume DIR)")
    from sweeps.spec import load_spec, spec_to_yaml
    spec = load_spec(args.spec, args.overrides, limits=not args.no_limits)   # a bad spec never reaches the cluster
    check_env()
    out = args.out and _cluster_out("--out", args.out)
    if out:
        check_search_storage(spec, out)
    job_id, out = _submit_job(lambda: submit.submit(spec, spec_to_yaml(spec), out, args.address,
                                                    no_limits=args.no_limits))
    return _submitted(args, spec.name, job_id, out)


def _cluster_out(option: str, out: str) -> str:
    """OUT as the job will see it: an absolute path on the cluster, ~/..., or a URI."""
    from sweeps.storage import is_uri
    if not is_uri(out) and not (out == "~" or out.startswith(("/", "~/"))):
        raise CliError(f"{option} {out}: give an absolute path on the cluster (or ~/...) or a URI; a relative "
                       "path would land in the job's temporary working directory")
    return out


def _submit_job(call):
    """submit.submit / submit_resume: an unreachable cluster is a user mistake (exit 2); a refused job is not."""
    try:
        return call()
    except ValueError as e:
        raise CliError(str(e)) from None
    except RuntimeError as e:
        raise JobRefused(" ".join(str(e).split())[:300]) from None


def _submitted(args, what: str, job_id: str, out: str) -> int:
    from sweeps import submit
    address = submit.job_address(args.address)
    _say(f"submitted {what} as job {job_id} -> {out} (on the cluster)")
    _say(f"follow it: ftsweep logs {job_id} --address {address} --follow")
    _say(f"status:    ftsweep status {job_id} --address {address}")
    print(job_id, flush=True)
    if not args.wait:
        return 0
    final = _follow(lambda: submit.logs(job_id, args.address, True, _write), job_id, address)
    return 0 if final == "SUCCEEDED" else (INTERRUPTED if final is None else RUN_ERROR)


def _follow(call, job_id: str, address: str) -> str | None:
    """Follow a job's logs to its end (its final status), or until Ctrl-C (None): the job goes on."""
    try:
        final = _jobs(call, job_id)
    except KeyboardInterrupt:
        _say(f"stopped following; job {job_id} goes on (ftsweep status {job_id} --address {address})")
        return None
    _say(f"job {job_id}: {final}")
    return final


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _jobs(call, job_id: str | None = None):
    """A Jobs API call: a bad address or an unknown job is a user mistake (exit 2), in one line."""
    try:
        return call()
    except ValueError as e:
        raise CliError(str(e)) from None
    except RuntimeError as e:
        what = f"job {job_id}: " if job_id else ""
        raise CliError(what + " ".join(str(e).split())[:300]) from None


def cmd_status(args) -> int:
    from sweeps import submit
    if args.job is None:
        for j in _jobs(lambda: submit.list_jobs(args.address)):
            print(f"{j['job']}  {j['status']:<9}  {j['sweep']}  -> {j['out']}")
        return 0
    st = _jobs(lambda: submit.status(args.job, args.address), args.job)
    print(f"{st['job']}: {st['status']}" + (f" — {st['message']}" if st["message"] else ""))
    print(f"  sweep {st['sweep']} -> {st['out']}")
    return 0


def cmd_logs(args) -> int:
    from sweeps import submit
    if not args.follow:
        _jobs(lambda: submit.logs(args.job, args.address, False, _write), args.job)
        return 0
    address = _jobs(lambda: submit.job_address(args.address))
    final = _follow(lambda: submit.logs(args.job, address, True, _write), args.job, address)
    return INTERRUPTED if final is None else 0


def cmd_stop(args) -> int:
    from sweeps import submit
    address = _jobs(lambda: submit.job_address(args.address))
    final = _jobs(lambda: submit.stop(args.job, address), args.job)
    if final not in submit.TERMINAL:
        _say(f"job {args.job}: stop requested, still {final}; see ftsweep status {args.job} --address {address}")
        return RUN_ERROR
    _say(f"job {args.job}: {final}")
    if final == "STOPPED":
        out = _jobs(lambda: submit.status(args.job, address), args.job)["out"]
        _say(f"the runs finished so far are recorded in {out}; finish the sweep with: "
             f"ftsweep submit --resume {out} --address {address}")
    return 0


def _run(spec, out: str, address: str | None, resume: bool) -> int:
    """Run (or finish) the sweep into `out` through `sweeps.api.execute` (the code path of `sweeps.run` too), its
    lines through a `sweeps.progress.Progress` (a live status line on a terminal, the plain lines otherwise); an
    interrupt or a full disk becomes one line and its exit code."""
    from sweeps.api import execute
    from sweeps.progress import Progress
    from sweeps.runner import SweepInterrupted
    try:
        with Progress.for_spec(spec) as say:
            counts, report = execute(spec, out, address, resume=resume, say=say)
    except SweepInterrupted as e:
        _err(f"interrupted: {e.n_recorded} runs are recorded in {out}; finish the sweep with: ftsweep resume {out}")
        return INTERRUPTED
    except Exception as e:
        if _storage_full(e, out):
            return RUN_ERROR
        raise
    if report is not None:
        print(report)
    return 0


def _storage_full(exc: BaseException | None, out: str, retry: str | None = None) -> bool:
    """If `exc` comes from a full disk (or quota, or file-size limit), say so in one line (with the command to
    run once there is space: `retry`, else resume or run again) and return True."""
    from sweeps.storage import storage_full
    full = storage_full(exc)
    if full is None:
        return False
    what = f"{os.strerror(full.errno).lower()} writing {full.filename or out}"
    if retry:
        _err(f"{what}: make space, then run: {retry}")
    elif not _has_spec(out):                    # full before the sweep started: nothing to resume
        _err(f"{what}: nothing was recorded; make space, then run the sweep again")
    else:
        _err(f"{what}: the runs recorded so far are kept (no part is half-written); make space, then finish "
             f"the sweep with: ftsweep resume {out}")
    return True


def _has_spec(out: str) -> bool:
    from sweeps.storage import Location
    try:
        return Location.of(out).child("spec.yaml").exists()
    except (OSError, ValueError):
        return True


def cmd_report(args) -> int:
    """DIR must be a local sweep directory with parts in runs/ and writable (DIR/report is written), checked
    before anything is; a part that cannot be read exits 1 naming it, with nothing written."""
    from analysis import CorruptPartError, write_report
    from sweeps.storage import check_existing, is_uri
    if is_uri(args.dir):
        raise CliError(f"{args.dir}: report reads a local directory; copy the results to one first")
    try:
        d = Path(check_existing(args.dir))
    except ValueError as e:
        raise CliError(str(e)) from None
    if not (d / "runs").is_dir():
        raise CliError(f"{d}: no runs/ directory (not a sweep output directory)")
    try:
        print(write_report(d))
    except CorruptPartError as e:           # damaged data, not a usage mistake: exit 1
        _err(str(e))
        return RUN_ERROR
    except FileNotFoundError as e:          # no part files
        raise CliError(str(e)) from None
    except OSError as e:
        if _storage_full(e, str(d), f"ftsweep report {d}"):
            return RUN_ERROR
        raise
    except ValueError as e:                 # part files without rows
        raise CliError(" ".join(str(e).split())) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    from sweeps.lock import LockHeld
    from sweeps.sink import PartTaken, UnreadablePart
    from sweeps.spec import SpecError
    parser = _parser()
    args, extra = parser.parse_known_args(argv)       # key=value overrides may follow --out/--address too
    if extra and (args.cmd in ("report", "resume", "status", "logs", "stop") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    from sweeps.access import no_world_write
    no_world_write()                        # what any subcommand writes (report too, without Ray) is not world-writable
    try:
        return {"run": cmd_run, "resume": cmd_resume, "submit": cmd_submit, "status": cmd_status,
                "logs": cmd_logs, "stop": cmd_stop, "validate": cmd_validate, "report": cmd_report}[args.cmd](args)
    except (SpecError, CliError) as e:
        _err(str(e))
        return USAGE_ERROR
    except JobRefused as e:                 # the cluster refused the job: not a usage mistake
        _err(f"the Jobs API refused the job: {e}")
        return RUN_ERROR
    except (LockHeld, PartTaken) as e:      # another driver on DIR: an environment failure
        _err(str(e))
        return RUN_ERROR
    except UnreadablePart as e:
        _err(f"{e}; move it out of the directory (its runs are then run again) and resume")
        return RUN_ERROR
    except OSError as e:
        if _storage_full(e, getattr(args, "dir", None) or getattr(args, "out", None) or "DIR"):
            return RUN_ERROR
        raise
    except KeyboardInterrupt:
        _err("interrupted")
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
