"""Access (issue 15, item 4): the local Ray that `ftsweep run` starts refuses a client without its token, even
when the environment asks for no authentication, and keeps the token private; a sweep run under umask 000
leaves nothing world-writable in its output (parts, spec.yaml, TensorBoard events, checkpoints, Tune's state)."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

from sweeps.access import ensure_private_token

ROOT = Path(__file__).parent.parent

LOCAL_RAY = """
import sys
from sweeps.runner import init_ray
import ray
init_ray(None)                                   # as `ftsweep run` starts its local Ray
ray.get(ray.remote(lambda: 1).remote())
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()                                 # hold the cluster until the test closes stdin
"""

TINY = """
name: access
model:   {name: mlp, width: 8, depth: 2}
task:    {name: lora_teacher, batch_size: 16, n_val: 32, n_test: 32}
adapter: {name: full}
train:   {steps: 20, lr: 1.0e-2, eval_every: 10, early_stop: false, save: final}
seeds: 2
"""


def private_env(tmp_path: Path, **extra) -> dict:
    """The test's own token file (absent until ftsweep makes it), not the user's ~/.ray/auth_token."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_ADDRESS")}
    return {**env, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "ray_token"), "RAY_USAGE_STATS_ENABLED": "0", **extra}


def list_nodes(gcs_address: str, token: str | None) -> int:
    """A raw GCS request (no Ray client library logic): the number of nodes, or grpc.RpcError."""
    stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(grpc.insecure_channel(gcs_address))
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    return len(stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata,
                                   timeout=30).node_info_list)


@pytest.mark.slow
def test_local_ray_refuses_a_client_without_its_token(tmp_path):
    env = private_env(tmp_path, RAY_AUTH_MODE="disabled")       # asking for no auth does not turn it off
    log = tmp_path / "ray.err"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", LOCAL_RAY], cwd=ROOT, env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    try:
        gcs = proc.stdout.readline().strip()
        assert gcs.startswith("127.0.0.1:"), log.read_text()[-3000:]
        token_file = tmp_path / "ray_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600           # created private, at Ray's path
        token = token_file.read_text()
        for wrong in (None, "", token[:-1] + ("0" if token[-1] != "0" else "1")):
            with pytest.raises(grpc.RpcError) as refused:
                list_nodes(gcs, wrong)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value
        assert list_nodes(gcs, token) == 1
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


@pytest.mark.slow
def test_outputs_are_not_world_writable_under_umask_000(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(spec), "--out", str(out)], cwd=tmp_path,
                       env=private_env(tmp_path), capture_output=True, text=True, timeout=600,
                       preexec_fn=lambda: os.umask(0))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    every = [out, *out.rglob("*")]
    names = {p.relative_to(out).parts[0] for p in every[1:]}
    assert {"runs", "curves", "spec.yaml", "tb", "checkpoints", "report"} <= names, names     # all were checked
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").rglob("*"))
    assert list((out / "checkpoints").glob("*.safetensors")) and list((out / "runs").glob("part-*.parquet"))
    writable = [f"{stat.filemode(p.lstat().st_mode)} {p.relative_to(tmp_path)}" for p in every
                if p.lstat().st_mode & stat.S_IWOTH and not p.is_symlink()]
    assert not writable, writable


def test_an_existing_token_file_is_made_private_and_kept(tmp_path, monkeypatch):
    token_file = tmp_path / "ray_token"
    token_file.write_text("abc123")
    token_file.chmod(0o644)                    # as `ray get-auth-token --generate` writes it under umask 022
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    ensure_private_token()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and token_file.read_text() == "abc123"


def test_a_missing_token_file_is_created_whole_and_private(tmp_path, monkeypatch):
    token_file = tmp_path / "dir" / "ray_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    ensure_private_token()
    first = token_file.read_text()
    assert len(first) == 64 and int(first, 16) >= 0 and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    ensure_private_token()                     # a second sweep reuses the token its Ray may already hold
    assert token_file.read_text() == first and [p.name for p in token_file.parent.iterdir()] == ["ray_token"]


def test_a_token_in_the_environment_needs_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "ray_token"))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "f" * 64)
    ensure_private_token()
    assert not (tmp_path / "ray_token").exists()
