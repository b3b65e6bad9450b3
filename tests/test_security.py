"""Security (issue 6): a local Ray listens on the loopback only; configs load through safe YAML; no module
of ours unpickles or evaluates anything (the cluster config's side is in tests/test_cluster_config.py)."""
import ipaddress
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps.cli import main

ROOT = Path(__file__).parent.parent

LOCAL_RAY = """
import sys, time
from sweeps.runner import init_ray
import ray
init_ray(None)
ray.get(ray.remote(lambda: 1).remote())      # a worker process is up too
print("up", flush=True)
sys.stdin.read()                             # hold the cluster until the test closes stdin
"""


def listening(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket owned by `pids` (from /proc/net/tcp{,6})."""
    inodes = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                m = re.fullmatch(r"socket:\[(\d+)\]", str(fd.readlink()) if fd.is_symlink() else "")
                if m:
                    inodes[int(m.group(1))] = pid
        except OSError:
            continue
    out = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or int(f[9]) not in inodes:            # 0A: LISTEN
                continue
            hex_ip, port = f[1].split(":")
            raw = bytes.fromhex(hex_ip)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # per-word little endian
            out.append((str(ipaddress.ip_address(raw)), int(port, 16), inodes[int(f[9])]))
    return out


def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback       # ::ffff:127.0.0.1 too


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            ppid = int(rest.rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(pid))
    seen, todo = {root}, [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc")
def test_local_ray_listens_on_loopback_only():
    proc = subprocess.Popen([sys.executable, "-c", LOCAL_RAY], cwd=ROOT, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline().strip() == "up"
        time.sleep(2)                                   # agents bind their ports after start-up
        sockets = listening(descendants(proc.pid))
        assert len(sockets) >= 3, sockets               # GCS, raylet, workers, agents: something to check
        exposed = [s for s in sockets if not loopback(s[0])]
        assert not exposed, f"listening beyond the loopback: {exposed}"
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_yaml_tags_are_not_executed(tmp_path, capsys):
    marker = tmp_path / "pwned"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\nmodel: {{name: mlp}}\n')
    assert main(["validate", str(spec)]) == 2
    assert not marker.exists()
    assert "evil.yaml" in capsys.readouterr().err


def test_no_unpickling_or_eval_in_our_code():
    # `(?<![\w.])`: builtins and module functions, not methods such as nn.Module.eval()
    banned = re.compile(r"(?<![\w.])(pickle\.loads?|cloudpickle\.loads?|torch\.load|yaml\.load|yaml\.unsafe_load|"
                        r"yaml\.Loader|yaml\.FullLoader|marshal\.loads?|eval|exec)\s*\(")
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
            for pkg in ("ftcore", "ftkernels", "sweeps", "analysis") for p in (ROOT / pkg).rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if banned.search(line)]
    assert not hits, hits
