"""Every build the ops' launchers make at the shipped sweeps' shapes (`aot_calls()`, bound by Triton's own
specialiser for sm_90: the alignment hints a GPU run gets) compiles for an H100 (sm_90) on this CPU machine
without register spills and within sm_90's shared memory — one `python -m ftkernels.aot` run (without
TRITON_INTERPRET, which would replace @triton.jit at import). And the check can fail: a deliberately huge tile
is reported for both."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftkernels.aot import OPS, SMEM_LIMIT, CompileReport

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def test_every_build_of_every_op_compiles_for_sm90_without_spills_within_smem():
    out = subprocess.run([sys.executable, "-m", "ftkernels.aot"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=1800, check=False)
    print(out.stdout, out.stderr[-2000:])
    lines = [ln.split() for ln in out.stdout.splitlines()]
    assert out.returncode == 0 and not any(ln[0] == "FAIL" for ln in lines), out.stdout + out.stderr[-2000:]
    counts = {ln[1]: int(ln[2]) for ln in lines if ln[0] == "builds"}
    assert set(counts) == set(OPS)
    for op in OPS:
        assert counts[op] > 0 and sum(ln[:2] == ["ok", op] for ln in lines) == counts[op], op
    aligned = [ln for ln in out.stdout.splitlines() if ln.startswith("ok")]
    assert all(" 0 aligned" not in ln for ln in aligned), "every build carries the JIT's divisibility hints"


HUGE_TILE = """
import json
import ftkernels.packed_mlp as P
from ftkernels.aot import capture, check_build, meta
P.BLOCK_K = P.HMAX = 128                   # a 128² fp32 accumulator in 4 warps, 64-row B tiles
P.BLOCK_B = 64
P.LAUNCH = {"num_warps": 4, "num_stages": 5}          # 5 pipelined stages of two 32 KiB operand tiles
with capture() as builds:
    P._linear_bwd_w(meta(2, 512, 512), meta(2, 512, 512), meta(2, 512, 512))
rep = check_build(builds[0])
print(json.dumps({"spills": rep.spills, "shared": rep.shared, "problems": rep.problems()}))
"""


def test_the_check_reports_spills_and_shared_memory_of_a_huge_tile():
    out = subprocess.run([sys.executable, "-c", HUGE_TILE], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=600, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["spills"] > 0 and got["shared"] > SMEM_LIMIT, got
    assert any("register spills" in p for p in got["problems"]) and any("shared memory" in p for p in got["problems"])


def test_report_problems():
    assert CompileReport("k", 128, 0, 0, SMEM_LIMIT).problems() == []
    assert CompileReport("k", 255, 16, 8, SMEM_LIMIT + 1).problems() == [
        "register spills (16B stored, 8B loaded)", f"shared memory {SMEM_LIMIT + 1}B > sm_90 limit {SMEM_LIMIT}B"]
