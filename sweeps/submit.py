"""Submit a sweep to a Ray cluster as a Ray Job, and follow it (`ftsweep submit | status | logs`).

The job's working directory is *staged* here: a fresh directory holding this process's own `ftcore`,
`ftkernels`, `sweeps` and `analysis` packages and the sweep's resolved spec (`spec.yaml`, overrides applied,
so the cluster runs exactly what `ftsweep validate` checked here). Ray uploads it (content-addressed, so an
unchanged tree is uploaded once), and every process of the job, the driver and each trial's worker on any
node, imports this code from it ahead of whatever version the nodes installed. The entrypoint is
`python -m sweeps.cli run spec.yaml --out OUT --address auto`: the job's driver runs Tune on the head.

`ftsweep submit --resume OUT` stages the code alone and runs `python -m sweeps.cli resume OUT --address auto`:
the spec is the one the interrupted sweep saved in OUT. `--no-limits` is passed on to the job's command (the
job checks the spec's size caps again). The job's driver takes OUT's lock like any `ftsweep run`/`resume`
(sweeps/lock.py): a second job on the same OUT fails at once, naming the first (see `ftsweep logs`). `ftsweep stop
JOB` asks Ray to stop a job: its driver
gets SIGTERM, which stops Tune as Ctrl-C does (the runs finished so far stay recorded; resume goes on), and
SIGKILL only after `STOP_WAIT_S` (Ray's own default, 3 s, is shorter than Tune needs to end its trials).

OUT is a path on the cluster, or a pyarrow-filesystem URI. Trials on other nodes write their parts there
themselves, so on a multi-node cluster it must be shared storage (NFS or s3://...); `ftsweep run` checks
that every node sees a local OUT before the first trial (sweeps/shared_storage.py).
"""
from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import shutil
import tempfile
import time
from pathlib import Path

PACKAGES = ("ftcore", "ftkernels", "sweeps", "analysis")
FORWARDED_ENV = ("FTCORE_KERNELS", "FTCORE_PROGRESS_S")     # knobs set here reach the job's processes
DEFAULT_OUT = "~/ftcore/results/{name}"                     # on the head; `ray rsync-down` pulls it back
TERMINAL = ("STOPPED", "SUCCEEDED", "FAILED")
STOP_WAIT_S = 60                                            # SIGTERM -> SIGKILL grace of `ftsweep stop`


def job_address(address: str | None) -> str:
    """The Jobs API address: --address, else RAY_API_SERVER_ADDRESS, else an http RAY_ADDRESS (Ray's order);
    ValueError when none is an http(s) URL."""
    for value in (address, os.environ.get("RAY_API_SERVER_ADDRESS"), os.environ.get("RAY_ADDRESS")):
        if value:
            if not value.startswith(("http://", "https://")):
                raise ValueError(f"--address {value}: the Jobs API address is the dashboard's URL, "
                                 "http://HEAD:8265 (through `ray dashboard cluster.yaml`: http://127.0.0.1:8265)")
            return value.rstrip("/")
    raise ValueError("--address http://HEAD:8265 is required (or set RAY_API_SERVER_ADDRESS)")


def client(address: str | None):
    """A JobSubmissionClient; ValueError naming the address when the dashboard cannot be reached."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient
    url = job_address(address)
    try:
        return JobSubmissionClient(url)
    except (OSError, RuntimeError, AuthenticationError) as e:  # unreachable, no or wrong token: one line, no traceback
        raise ValueError(f"cannot reach the Ray Jobs API at {url}: {' '.join(str(e).split())[:300]}") from None


def stage(spec_yaml: str | None, dest: Path) -> Path:
    """`dest/` = the four packages (no caches) [+ spec.yaml]: the job's working_dir."""
    for name in PACKAGES:
        src = Path(__import__(name).__file__).parent
        shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if spec_yaml is not None:
        (dest / "spec.yaml").write_text(spec_yaml)
    return dest


def shell_path(out: str) -> str:
    """OUT for the entrypoint's shell: quoted, with a leading ~/ expanded on the cluster (not here)."""
    if out == "~" or out.startswith("~/"):
        return '"$HOME"' + (shlex.quote(out[1:]) if len(out) > 1 else "")
    return shlex.quote(out)


def entrypoint(out: str, resume: bool = False, no_limits: bool = False) -> str:
    flag = " --no-limits" if no_limits else ""
    if resume:
        return f"python -m sweeps.cli resume {shell_path(out)} --address auto{flag}"
    return f"python -m sweeps.cli run spec.yaml --out {shell_path(out)} --address auto{flag}"


def submit(spec, spec_yaml: str, out: str | None, address: str | None, no_limits: bool = False) -> tuple[str, str]:
    """Stage, upload and start the sweep's job; returns (submission id, OUT)."""
    out = out or DEFAULT_OUT.format(name=spec.name)
    return _start(spec.name, spec_yaml, out, address, no_limits), out


def submit_resume(out: str, address: str | None, no_limits: bool = False) -> str:
    """Start a job that finishes the interrupted sweep in OUT (a path on the cluster or a URI); returns its id.
    The sweep's name is OUT's last component until the job reads OUT/spec.yaml there."""
    last = out.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]          # s3://b/prefix?region=x -> prefix
    return _start(re.sub(r"[^A-Za-z0-9_.-]", "_", last) or "sweep", None, out, address, no_limits)


def _start(name: str, spec_yaml: str | None, out: str, address: str | None, no_limits: bool = False) -> str:
    jobs = client(address)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env["RAY_JOB_STOP_WAIT_TIME_S"] = str(STOP_WAIT_S)     # read by the job's supervisor, which gets env_vars too
    resume = spec_yaml is None
    job_id = f"ftsweep-{'resume-' if resume else ''}{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    with tempfile.TemporaryDirectory(prefix="ftsweep-job-") as tmp:
        wd = stage(spec_yaml, Path(tmp))
        kwargs = {"entrypoint": entrypoint(out, resume, no_limits), "submission_id": job_id,
                  "runtime_env": {"working_dir": str(wd), "env_vars": env},
                  "metadata": {"ftsweep.sweep": name, "ftsweep.out": out, "ftsweep.resume": str(resume).lower()}}
        _retry_while_starting(lambda: jobs.submit_job(**kwargs))
    return job_id


def _retry_while_starting(call, wait_s: float = 90.0):
    """A cluster that just came up answers "No available agent to submit job" until its job agent
    registers (seconds after `ray start` / `ray up`): retry that, nothing else."""
    t0 = time.monotonic()
    while True:
        try:
            return call()
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() - t0 > wait_s:
                raise
            time.sleep(2)


def status(job_id: str, address: str | None) -> dict:
    """{status, message, out, entrypoint, ...} of a submitted job."""
    info = client(address).get_job_info(job_id)
    return {"job": job_id, "status": str(info.status.value if hasattr(info.status, "value") else info.status),
            "message": info.message or "", "sweep": (info.metadata or {}).get("ftsweep.sweep", ""),
            "out": (info.metadata or {}).get("ftsweep.out", ""), "entrypoint": info.entrypoint}


def list_jobs(address: str | None) -> list[dict]:
    """The ftsweep jobs the cluster knows, oldest first."""
    jobs = [j for j in client(address).list_jobs() if (j.metadata or {}).get("ftsweep.sweep")]
    jobs.sort(key=lambda j: j.start_time or 0)
    return [{"job": j.submission_id, "status": str(j.status.value), "sweep": j.metadata["ftsweep.sweep"],
             "out": j.metadata.get("ftsweep.out", "")} for j in jobs]


def stop(job_id: str, address: str | None, wait_s: float = STOP_WAIT_S + 30) -> str:
    """Ask Ray to stop the job, then wait (at most `wait_s`) for it to end; returns its last status
    (STOPPED, or what it had already ended as: SUCCEEDED, FAILED)."""
    jobs = client(address)
    jobs.stop_job(job_id)                                   # False: it had already ended
    t0 = time.monotonic()
    while True:
        st = str(jobs.get_job_status(job_id).value)
        if st in TERMINAL or time.monotonic() - t0 > wait_s:
            return st
        time.sleep(1)


def logs(job_id: str, address: str | None, follow: bool, write) -> str:
    """Print the job's logs (all so far, or follow until it ends); returns its final status when following."""
    jobs = client(address)
    if not follow:
        write(jobs.get_job_logs(job_id))
        return str(jobs.get_job_status(job_id).value)

    async def tail():
        async for chunk in jobs.tail_job_logs(job_id):
            write(chunk)
    asyncio.run(tail())
    return str(jobs.get_job_status(job_id).value)
