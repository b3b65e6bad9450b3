"""`ftsweep`: run, validate and report sweeps.

    ftsweep run SPEC [key=value ...] [--out DIR] [--address ADDR] [--no-limits]
    ftsweep resume DIR [--address ADDR] [--no-limits]
    ftsweep submit SPEC [key=value ...] --address http://HEAD:8265 [--out DIR|URI] [--wait]
    ftsweep submit --resume DIR|URI --address http://HEAD:8265 [--wait]
    ftsweep status [JOB] --address http://HEAD:8265
    ftsweep logs JOB --address http://HEAD:8265 [--follow]
    ftsweep stop JOB --address http://HEAD:8265
    ftsweep validate SPEC [key=value ...] [--no-limits]
    ftsweep report DIR

Exit codes: 0 success, 2 a user mistake (bad spec, override, path), 1 a failure while running, 130
interrupted (Ctrl-C or SIGTERM: the runs finished so far are recorded; `ftsweep resume DIR` goes on).
A user mistake is one line on stderr, never a traceback, and nothing is written. Besides the schema, a spec
must be UTF-8 YAML without duplicate keys, aliases or ${...} interpolation, with finite numbers, a `name` of
[A-Za-z0-9._-] without `..`, no axis value twice, and sizes under caps (seeds, train.steps, implied member runs)
that --no-limits lifts.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE_ERROR, RUN_ERROR, INTERRUPTED = 2, 1, 130


class CliError(Exception):
    """A user mistake outside the spec (paths, output directory)."""


class JobRefused(Exception):
    """The Jobs API refused a job (exit 1)."""


def _err(msg: str) -> None:
    print(f"ftsweep: error: {msg}", file=sys.stderr)


def _say(msg: str) -> None:
    print(f"[ftsweep] {msg}", flush=True)


NO_LIMITS_HELP = "lift the size caps (seeds <= 1000, train.steps <= 10,000,000, member runs <= 1,000,000)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftsweep", description="Map capacity and scaling curves of fine-tuning.",
                                epilog="run, resume and validate take --no-limits: " + NO_LIMITS_HELP)
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a sweep on Ray (local unless --address)")
    run.add_argument("spec")
    run.add_argument("overrides", nargs="*", metavar="key=value")
    run.add_argument("--out", help="output directory (default: results/<sweep name>)")
    run.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    run.add_argument("--no-limits", action="store_true", help=NO_LIMITS_HELP)
    res = sub.add_parser("resume", help="finish an interrupted sweep in DIR (runs already recorded are not run again)")
    res.add_argument("dir")
    res.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    res.add_argument("--no-limits", action="store_true", help=NO_LIMITS_HELP)
    jobs_help = "the Ray Jobs API (dashboard) URL, e.g. http://127.0.0.1:8265 (default: $RAY_API_SERVER_ADDRESS)"
    smt = sub.add_parser("submit", help="run a sweep on a Ray cluster as a Ray Job (this code and the resolved spec are uploaded)")
    smt.add_argument("spec", nargs="?")
    smt.add_argument("overrides", nargs="*", metavar="key=value")
    smt.add_argument("--address", help=jobs_help)
    smt.add_argument("--resume", metavar="DIR", help="instead of SPEC: finish the interrupted sweep in DIR (a path "
                                                     "on the cluster or a URI) as a job")
    smt.add_argument("--out", help="output directory on the cluster, shared by its nodes, or a URI such as "
                                   "s3://bucket/prefix (default: ~/ftcore/results/<sweep name> on the head)")
    smt.add_argument("--wait", action="store_true", help="follow the job's logs until it ends; exit 0 only if it succeeded")
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
    rep = sub.add_parser("report", help="write DIR/report (fits.json, figures, report.md)")
    rep.add_argument("dir")
    return p


def _out_dir(spec, out: str | None) -> str:
    """The output location (an absolute path, or a URI of a pyarrow filesystem); refused if it already
    holds a sweep's results. Creates nothing."""
    from sweeps.storage import Location, check_output
    try:
        where = check_output(out or str(Path("results") / spec.name))
        taken = Location.of(where).child("runs").files("part-*.parquet")
    except (ValueError, OSError) as e:
        raise CliError(f"--out: {e}") from None
    if taken:
        raise CliError(f"--out {where}: already holds results of a sweep; choose a new directory "
                       f"(or finish it: ftsweep resume {where})")
    return where


def peak_rss_mib() -> float:
    """Peak resident memory of this process (the Tune driver), from getrusage (KiB on Linux)."""
    import resource
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024


def cmd_validate(args) -> int:
    from sweeps.spec import load_checked
    spec, checked = load_checked(args.spec, args.overrides, limits=not args.no_limits)
    n = len(checked)
    s = spec.search
    extra = ""
    if s.kind == "capacity":
        extra = f"; capacity search over {s.param} on a ladder of {len(s.ladder_values())} values"
    elif s.kind == "optuna":
        extra = f"; optuna over {', '.join(s.params)} ({s.n_trials} trials per tuned group)"
    print(f"{spec.name}: OK — {len(spec.grid_points())} grid points × {spec.seeds} seeds{extra} ({n} configs checked)")
    return 0


def _check_env() -> None:
    """Environment knobs read inside the workers: a bad value is a user mistake, refused before any write."""
    from ftkernels.dispatch import choice
    from sweeps.execute import progress_every_s
    try:
        choice()                                  # FTCORE_KERNELS
        progress_every_s()                        # FTCORE_PROGRESS_S
    except ValueError as e:
        raise CliError(str(e)) from None


def cmd_run(args) -> int:
    from sweeps.spec import load_spec, spec_to_yaml
    from sweeps.storage import Location, join, write_bytes_atomic
    spec = load_spec(args.spec, args.overrides, limits=not args.no_limits)
    _check_env()
    out = _out_dir(spec, args.out)
    _check_search_storage(spec, out)

    def prepare():                            # once Ray is up: a bad --address writes nothing
        Location.of(out).mkdir()
        write_bytes_atomic(join(out, "spec.yaml"), spec_to_yaml(spec).encode())
    return _run(spec, out, args.address, resume=False, prepare=prepare)


def cmd_resume(args) -> int:
    from sweeps.spec import load_spec
    from sweeps.storage import Location, check_output, is_uri
    try:
        out = check_output(args.dir)
        saved = Location.of(out).child("spec.yaml")
        text = saved.open_input().read() if saved.exists() else None
    except (ValueError, OSError) as e:
        raise CliError(str(e)) from None
    if text is None:
        raise CliError(f"{args.dir}: no spec.yaml (not a sweep output directory written by ftsweep run)")
    if is_uri(out):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:      # load_spec reads a file: the saved, resolved spec
            (Path(tmp) / "spec.yaml").write_bytes(text)
            spec = load_spec(Path(tmp) / "spec.yaml", limits=not args.no_limits)
    else:
        spec = load_spec(Path(out) / "spec.yaml", limits=not args.no_limits)
    _check_env()
    _check_search_storage(spec, out)
    return _run(spec, out, args.address, resume=True)


def cmd_submit(args) -> int:
    from sweeps import submit
    if args.resume is not None:
        if args.spec is not None or args.overrides or args.out:
            raise CliError("--resume DIR finishes the sweep saved in DIR: give no SPEC, overrides or --out with it")
        out = _cluster_out("--resume", args.resume)
        job_id = _submit_job(lambda: submit.submit_resume(out, args.address))
        return _submitted(args, f"resume of {out}", job_id, out)
    if args.spec is None:
        raise CliError("give a SPEC to submit (or --resume DIR)")
    from sweeps.spec import load_spec, spec_to_yaml
    spec = load_spec(args.spec, args.overrides)        # checked here: a bad spec never reaches the cluster
    _check_env()
    out = args.out and _cluster_out("--out", args.out)
    if out:
        _check_search_storage(spec, out)
    job_id, out = _submit_job(lambda: submit.submit(spec, spec_to_yaml(spec), out, args.address))
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


def _check_search_storage(spec, out: str) -> None:
    from sweeps.storage import is_uri
    if spec.search.kind == "optuna" and is_uri(out):
        raise CliError(f"--out {out}: an optuna search keeps its studies in a journal file (DIR/optuna/journal.log, "
                       "file locks); use a local or NFS path")


def _run(spec, out: str, address: str | None, resume: bool, prepare=None) -> int:
    """Run (or finish) the sweep into `out` (a path or URI), then write its report (local output only)."""
    from sweeps.runner import run_sweep
    verb = "resume" if resume else "sweep"
    _say(f"{verb} {spec.name} -> {out} ({'Ray at ' + address if address else 'local Ray'})")
    from sweeps.runner import SweepInterrupted
    from sweeps.sink import UnreadablePart
    try:
        counts = run_sweep(spec, out, address, progress=_say, resume=resume, prepare=prepare)
    except UnreadablePart as e:
        _err(f"{e}; move it out of the directory (its runs are then run again) and resume")
        return RUN_ERROR
    except SweepInterrupted as e:
        _err(f"interrupted: {e.n_recorded} runs are recorded in {out}; finish the sweep with: ftsweep resume {out}")
        return INTERRUPTED
    runs = counts["runs"]
    if resume:
        _say(f"resumed: {counts['resumed']} runs were already recorded, {runs - counts['resumed']} ran now")
    _say(f"done: {runs} member runs in {counts['rounds']} round(s), {counts['wall_s']}s; "
         f"driver peak RSS {peak_rss_mib():.0f} MiB")
    if "full_grid_runs" in counts:
        _say(f"capacity search: {runs} runs ({counts['probes']} probes) vs {counts['full_grid_runs']} for the full grid over the ladder")
    from sweeps.storage import is_uri
    if is_uri(out):
        _say(f"results in {out}; copy them to a local directory DIR and run: ftsweep report DIR")
        return 0
    from analysis import write_report
    report = write_report(out)
    _say(f"report: {report}")
    print(report)
    return 0


def cmd_report(args) -> int:
    from analysis import CorruptPartError, write_report
    d = Path(args.dir)
    if not (d / "runs").is_dir():
        raise CliError(f"{d}: no runs/ directory (not a sweep output directory)")
    try:
        print(write_report(d))
    except CorruptPartError as e:           # damaged data, not a usage mistake: exit 1
        _err(str(e))
        return RUN_ERROR
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    from sweeps.spec import SpecError
    parser = _parser()
    args, extra = parser.parse_known_args(argv)       # key=value overrides may follow --out/--address too
    if extra and (args.cmd in ("report", "resume", "status", "logs", "stop") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return {"run": cmd_run, "resume": cmd_resume, "submit": cmd_submit, "status": cmd_status,
                "logs": cmd_logs, "stop": cmd_stop, "validate": cmd_validate, "report": cmd_report}[args.cmd](args)
    except (SpecError, CliError) as e:
        _err(str(e))
        return USAGE_ERROR
    except JobRefused as e:                 # the cluster refused the job: not a usage mistake
        _err(f"the Jobs API refused the job: {e}")
        return RUN_ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
