"""Every configuration each op's launchers can pick (`aot_configs()`) compiles for an H100 (sm_90) on this
CPU machine, for every op in `ftkernels.aot.OPS` — one `python -m ftkernels.aot` run (without TRITON_INTERPRET,
which would replace @triton.jit at import). Spills are printed, not failed."""
import importlib
import os
import subprocess
import sys
from pathlib import Path

from ftkernels.aot import OPS

ROOT = Path(__file__).resolve().parents[1]


def test_every_op_compiles_every_config_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "ftkernels.aot"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1200, check=False)
    print(out.stdout, out.stderr[-2000:])
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    lines = [ln.split() for ln in out.stdout.splitlines() if ln.startswith(("ok", "FAIL"))]
    assert all(ln[0] == "ok" for ln in lines)
    for op in OPS:
        n = len(importlib.import_module(op).aot_configs())
        assert n > 0 and sum(ln[1] == op for ln in lines) == n, op
