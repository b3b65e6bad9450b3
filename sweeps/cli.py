"""`ftsweep`: run, validate and report sweeps.

    ftsweep run SPEC [key=value ...] [--out DIR] [--address ADDR]
    ftsweep validate SPEC [key=value ...]
    ftsweep report DIR

Exit codes: 0 success, 2 a user mistake (bad spec, override, path), 1 a failure while running.
A user mistake is one line on stderr, never a traceback, and nothing is written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE_ERROR, RUN_ERROR = 2, 1


class CliError(Exception):
    """A user mistake outside the spec (paths, output directory)."""


def _err(msg: str) -> None:
    print(f"ftsweep: error: {msg}", file=sys.stderr)


def _say(msg: str) -> None:
    print(f"[ftsweep] {msg}", flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftsweep", description="Map capacity and scaling curves of fine-tuning.")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a sweep on Ray (local unless --address)")
    run.add_argument("spec")
    run.add_argument("overrides", nargs="*", metavar="key=value")
    run.add_argument("--out", help="output directory (default: results/<sweep name>)")
    run.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    val = sub.add_parser("validate", help="check a sweep spec and overrides; writes nothing")
    val.add_argument("spec")
    val.add_argument("overrides", nargs="*", metavar="key=value")
    rep = sub.add_parser("report", help="write DIR/report (fits.json, figures, report.md)")
    rep.add_argument("dir")
    return p


def _out_dir(spec, out: str | None) -> Path:
    path = Path(out) if out else Path("results") / spec.name
    if path.exists() and not path.is_dir():
        raise CliError(f"--out {path}: exists and is not a directory")
    if (path / "runs").exists() and any((path / "runs").glob("*.parquet")):
        raise CliError(f"--out {path}: already holds results of a sweep; choose a new directory")
    parent = path.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os_access_w(parent):
        raise CliError(f"--out {path}: not writable")
    return path


def os_access_w(path: Path) -> bool:
    import os
    return os.access(path, os.W_OK)


def cmd_validate(args) -> int:
    from sweeps.spec import load_checked
    spec, checked = load_checked(args.spec, args.overrides)
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
    from sweeps.runner import run_sweep
    from sweeps.spec import load_spec, spec_to_yaml
    spec = load_spec(args.spec, args.overrides)
    from kernels.dispatch import choice
    from sweeps.execute import progress_every_s
    try:
        choice()                                  # a bad FTCORE_KERNELS is a user mistake: refuse before any write
        progress_every_s()                        # likewise a bad FTCORE_PROGRESS_S
    except ValueError as e:
        raise CliError(str(e)) from None
    out = _out_dir(spec, args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.yaml").write_text(spec_to_yaml(spec))
    _say(f"sweep {spec.name} -> {out} ({'Ray at ' + args.address if args.address else 'local Ray'})")
    counts = run_sweep(spec, out, args.address, progress=_say)
    runs = counts["runs"]
    _say(f"done: {runs} member runs in {counts['rounds']} round(s), {counts['wall_s']}s")
    if "full_grid_runs" in counts:
        _say(f"capacity search: {runs} runs ({counts['probes']} probes) vs {counts['full_grid_runs']} for the full grid over the ladder")
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
    if extra and (args.cmd == "report" or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return {"run": cmd_run, "validate": cmd_validate, "report": cmd_report}[args.cmd](args)
    except (SpecError, CliError) as e:
        _err(str(e))
        return USAGE_ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
