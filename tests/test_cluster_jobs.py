"""A real two-node Ray on loopback (`ray start --head` + `ray start --address`, token auth on), and a sweep
submitted through the Jobs API with `ftsweep submit`: trials ran on both nodes (the Ray node id is recorded
per run), the results are complete, and `ftsweep status` / `logs` follow the job; a job stopped mid-sweep
(`ftsweep stop`) is finished by `ftsweep submit --resume` with exactly the spec's run_ids."""
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from grid_ids import grid_run_ids

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent

TWO_TRIALS = """
name: two_nodes
model:   {name: mlp, width: 8, depth: 2}
task:    {name: ftc_relabel, dim: 4, k_per_n: 2.0, tol: 0.1}
adapter: {name: additive_relu, depth: 2, width: 8}
train:   {steps: 400, lr: 2.0e-2, eval_every: 20, early_stop: false}
axes:
  task.n: [8, 12]
seeds: 2
execution: {pack_size: 2}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli(*args, env):
    r = subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.fixture(scope="module")
def cluster():
    # short paths: Ray's unix socket paths must fit 107 bytes. One per node, as on two machines (nodes sharing
    # a temp dir share runtime_resources/, and one node's agent deletes the job's working_dir under the other)
    temp, temp2 = (tempfile.mkdtemp(prefix="ray", dir="/tmp") for _ in range(2))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    gcs, dash = free_port(), free_port()
    try:
        ray_cli("start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}", "--num-cpus=1", f"--temp-dir={temp}", "--disable-usage-stats", env=env)
        ray_cli("start", f"--address=127.0.0.1:{gcs}", "--num-cpus=1", f"--temp-dir={temp2}", "--disable-usage-stats",
                env=env)
        yield env, f"http://127.0.0.1:{dash}", gcs
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120, check=False)
        for d in (temp, temp2):
            shutil.rmtree(d, ignore_errors=True)


def ftsweep(*args, env, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "sweeps.cli", *args], env=env, capture_output=True, text=True,
                       timeout=600, cwd=Path(__file__).parent.parent, check=False)
    assert not check or r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    return r


def test_sweep_submitted_as_a_job_runs_on_both_nodes(cluster, tmp_path):
    env, address, _ = cluster
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_TRIALS)
    out = tmp_path / "out"
    r = ftsweep("submit", str(spec), "train.steps=600", "--address", address, "--out", str(out), "--wait", env=env)
    job = re.search(r"submitted two_nodes as job (\S+)", r.stdout).group(1)
    assert "done: 4 member runs" in r.stdout and "SUCCEEDED" in r.stdout

    parts = sorted((out / "runs").glob("part-*.parquet"))
    runs = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default").to_pandas()
    assert set(runs.run_id) == set(grid_run_ids(spec, ["train.steps=600"]))
    assert runs.run_id.is_unique and set(runs.status) == {"ok"}
    assert (runs["train.steps"] == 600).all()                 # the override reached the cluster
    assert runs.ray_node_id.nunique() == 2, runs[["trial_id", "ray_node_id"]]
    assert (out / "report" / "report.md").is_file()

    st = ftsweep("status", job, "--address", address, env=env).stdout
    assert f"{job}: SUCCEEDED" in st and str(out) in st
    assert job in ftsweep("status", "--address", address, env=env).stdout
    assert "done: 4 member runs" in ftsweep("logs", job, "--address", address, env=env).stdout


SIXTEEN_TRIALS = TWO_TRIALS.replace("seeds: 2", "seeds: 8").replace("pack_size: 2", "pack_size: 1").replace(
    "steps: 400", "steps: 4000")


def test_stopped_job_is_finished_by_a_resume_job(cluster, tmp_path):
    """Follow a job and Ctrl-C the follower (exit 130, the job goes on); `ftsweep stop` it once a trial has
    committed; `ftsweep submit --resume OUT` finishes it: every run once, the stopped job's parts untouched."""
    env, address, _ = cluster
    spec = tmp_path / "sixteen.yaml"
    spec.write_text(SIXTEEN_TRIALS)        # ~25 s of trials: the stop lands mid-sweep
    out = tmp_path / "out"
    r = ftsweep("submit", str(spec), "--address", address, "--out", str(out), env=env)
    job = r.stdout.strip().splitlines()[-1]

    follow = subprocess.Popen([sys.executable, "-m", "sweeps.cli", "logs", job, "--address", address, "--follow"],
                              env=env, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, t0 = [], time.time()
    for line in follow.stdout:                  # the job's own progress lines, as they come
        lines.append(line)
        if re.search(r"trial \S+: 1 runs \(1 ok\)", line):
            break
        assert time.time() - t0 < 300, "".join(lines[-30:])
    follow.send_signal(signal.SIGINT)
    rest, _ = follow.communicate(timeout=60)
    assert follow.returncode == 130, "".join(lines[-20:]) + rest
    assert f"job {job} goes on" in rest
    assert f"{job}: RUNNING" in ftsweep("status", job, "--address", address, env=env).stdout

    stopped = ftsweep("stop", job, "--address", address, env=env).stdout
    assert f"job {job}: STOPPED" in stopped and f"ftsweep submit --resume {out}" in stopped, stopped
    parts = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("part-*.parquet")}
    n_before = len(parts)                      # one run per trial, so one part per run
    assert 1 <= n_before < 16, parts
    assert "interrupted" in ftsweep("logs", job, "--address", address, env=env).stdout  # Tune ended cleanly

    r = ftsweep("submit", "--resume", str(out), "--address", address, "--wait", env=env)
    assert re.search(rf"resumed: {n_before} runs were already recorded, {16 - n_before} ran now", r.stdout), r.stdout
    assert "SUCCEEDED" in r.stdout and (out / "report" / "report.md").is_file()
    for name, mtime in parts.items():
        assert (out / "runs" / name).stat().st_mtime_ns == mtime
    runs = pa.concat_tables([pq.read_table(p) for p in sorted((out / "runs").glob("part-*.parquet"))],
                            promote_options="default").to_pandas()
    assert set(runs.run_id) == set(grid_run_ids(spec)) and runs.run_id.is_unique and set(runs.status) == {"ok"}


def test_job_mistakes_exit_2(cluster, tmp_path):
    env, address, _ = cluster
    r = ftsweep("status", "no-such-job", "--address", address, env=env, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no-such-job" in r.stderr
    r = ftsweep("submit", str(tmp_path / "missing.yaml"), "--address", address, env=env, check=False)
    assert r.returncode == 2 and "missing.yaml" in r.stderr
    r = ftsweep("stop", "no-such-job", "--address", address, env=env, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no-such-job" in r.stderr
    for args in (["--resume", "rel/dir"], ["--resume", "/abs", str(tmp_path / "x.yaml")], []):
        r = ftsweep("submit", *args, "--address", address, env=env, check=False)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def test_a_client_without_the_clusters_token_is_refused(cluster):
    """Issue 15 item 4: the cluster's Jobs API refuses ftsweep without the token, or with another one, in one
    line (exit 2); with it (the fixture's RAY_AUTH_MODE=token and RAY_AUTH_TOKEN) the same command works."""
    env, address, _ = cluster
    no_token = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    for client_env in (no_token, {**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}):
        r = ftsweep("status", "--address", address, env=client_env, check=False)
        assert r.returncode == 2 and r.stderr.startswith("ftsweep: error:") and r.stderr.count("\n") == 1, r.stderr
        assert "token" in r.stderr.lower(), r.stderr
    ftsweep("status", "--address", address, env=env)


def can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not can_unshare(), reason="needs mount namespaces (unshare -m, root)")
def test_local_out_a_node_cannot_see_is_refused(cluster, tmp_path):
    """A third node whose view of OUT is its own (a tmpfs mounted over it in a private mount namespace, as a
    node-local disk on another machine would be): the sweep is refused before any trial, naming that node."""
    env, address, gcs = cluster
    private = Path(tempfile.mkdtemp(prefix="ftcore-nodelocal-", dir="/tmp"))
    temp3 = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    start = (f"mount -t tmpfs none {private} && exec {BIN / 'ray'} start --address=127.0.0.1:{gcs} --num-cpus=1 "
             f"--temp-dir={temp3} --disable-usage-stats")
    r = subprocess.run(["unshare", "-m", "sh", "-c", start], env=env, capture_output=True, text=True, timeout=180,
                       check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_TRIALS)
    r = ftsweep("submit", str(spec), "--address", address, "--out", str(private / "out"), "--wait", env=env, check=False)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "cannot see this directory" in r.stdout and "FAILED" in r.stdout
    assert not list((private / "out").glob("runs/part-*.parquet"))
    shutil.rmtree(private, ignore_errors=True)


def test_submit_without_a_reachable_cluster_exits_2(tmp_path, monkeypatch, capsys):
    """No cluster at the address (an HTTP port nobody serves, a GCS address, none at all): every Jobs subcommand
    exits 2 with one line. In-process (`sweeps.cli.main`, the console script's code path): 13 calls."""
    from sweeps.cli import main
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_TRIALS)
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    for args in (["--address", f"http://127.0.0.1:{free_port()}"], ["--address", "127.0.0.1:6379"], []):
        for cmd in (["submit", str(spec)], ["logs", "job", "--follow"], ["stop", "job"], ["status", "job"]):
            code, err = main([*cmd, *args]), capsys.readouterr().err
            assert code == 2 and err.startswith("ftsweep: error:") and err.count("\n") == 1, (cmd, err)
    code = main(["submit", str(spec), "--address", "http://127.0.0.1:1", "--out", "rel/dir"])
    assert code == 2 and "absolute" in capsys.readouterr().err
