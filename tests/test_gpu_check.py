"""benchmarks/gpu_check.py never rots: `--smoke` runs every section's code path on tiny shapes (Triton's interpreter
and CPU tensors without a GPU), in a process that cannot import Ray, Optuna, OmegaConf or `sweeps` (none of them
is on the lent GPU machines). The JSON and Markdown must hold every section, and every case must be measured or
carry a reason; the built-in kernel checks must pass and packed fit must give each member the loss it gets alone.
The case runner's budget, timeout and error paths are checked in-process."""
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
NOT_ON_THE_GPU_MACHINE = ("ray", "optuna", "omegaconf", "sweeps")
RUNNER = f"""
import importlib.abc, runpy, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_ON_THE_GPU_MACHINE!r}:
            raise ImportError(f"{{name}} is not installed on the GPU machine")
sys.meta_path.insert(0, Absent())
sys.argv = [{str(SCRIPT)!r}, *sys.argv[1:]]
runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
"""
STATUSES = {"ok", "pass", "partial", "fail", "error", "timeout", "skipped"}


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", RUNNER, "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text(), time.monotonic() - t0


def test_every_section_and_case_is_measured_or_says_why(smoke):
    doc, md, wall = smoke
    gc = _module()
    assert list(doc["sections"]) == list(gc.SECTIONS)
    for name, sec in doc["sections"].items():
        assert sec["status"] == "done", (name, sec.get("reason"))
        assert sec["cases"], name
        for c in sec["cases"]:
            assert c["status"] in STATUSES, c
            assert c["status"] in ("ok", "pass") or c.get("reason"), c
    for header in ("## Kernel tests on the device", "## Kernels: one training step", "## Packed fit vs one member",
                   "## CUDA graphs"):
        assert header in md
    assert doc["meta"]["smoke"] and doc["meta"]["triton_interpret"] == "1"
    assert wall < 150, f"the smoke run took {wall:.0f} s"


def test_kernel_checks_pass_in_the_interpreter(smoke):
    cases = smoke[0]["sections"]["kernel_tests"]["cases"]
    builtin = [c for c in cases if c.get("source") == "built-in"]
    kernels = {c["kernel"] for c in builtin}
    assert kernels == {"lora_grouped", "lora_single", "packed_mlp", "selective_scan", "multi_adamw"}
    for c in builtin:
        if c["dtype"] == "fp32":
            assert c["status"] == "pass" and c["max_err"] <= c["tol"], c
        else:
            assert c["status"] == "skipped" and "interpreter" in c["reason"], c
    (run,) = [c for c in cases if c["name"].startswith("pytest ")]
    assert run["status"] == "ok" and run["counts"]["pass"] >= 1 and not run["counts"]["fail"], run


def test_kernel_bench_times_every_implementation(smoke):
    cases = [c for c in smoke[0]["sections"]["kernel_bench"]["cases"] if c.get("kernel")]
    kern = [c for c in cases if c["pass"] == "kernels"]
    comp = [c for c in cases if c["pass"] == "compile"]
    assert {c["kernel"] for c in kern} == {"lora_grouped", "lora_single", "packed_mlp", "selective_scan", "multi_adamw"}
    assert {c["dtype"] for c in kern} == {"fp32"} and len(comp) == len(kern)
    skipped = {c["name"]: c["reason"] for c in smoke[0]["sections"]["kernel_bench"]["cases"] if not c.get("kernel")}
    assert set(skipped) == {"bf16", "tf32"} and "interpreter" in skipped["bf16"], skipped
    for c in kern:
        assert c["status"] == "ok", c
        assert c["ms"]["triton"] > 0 and c["ms"]["ref"] > 0, c
        if c["kernel"] != "multi_adamw":
            assert c["max_rel_err"] < 1e-4, c
    assert {"bmm", "torch_adamw"} <= {k for c in kern for k in c["ms"]}
    for c in comp:
        assert c["status"] == "ok" and c["ms"]["compile"] > 0, c
        assert c["graphs"] >= 1 and c["fell_back_to_eager"] is False, c


def test_packed_fit_equals_members_alone(smoke):
    cases = smoke[0]["sections"]["fit"]["cases"]
    assert len(cases) == 4
    for c in cases:
        if c["status"] == "skipped":
            assert "transformers" in c["reason"], c
            continue
        assert c["status"] == "ok", c
        assert c["packed_runs_per_min"] > 0 and c["alone_runs_per_min"] > 0 and c["ratio"] > 0, c
        assert c["final_train_loss_max_abs_diff"] < 1e-4, c
    graphs = smoke[0]["sections"]["cuda_graphs"]["cases"]
    assert graphs and all(c["status"] in ("partial", "skipped") for c in graphs)
    assert all(c["eager_ms"] > 0 for c in graphs if c["name"].startswith("step"))


def test_budget_timeout_and_errors_are_recorded(tmp_path):
    gc = _module()
    rep = gc.Report(tmp_path, {"versions": {}})
    clock = gc.Clock(budget_s=100.0, case_s=0.3)
    clock.start_section("kernel_tests")
    slow = gc.run_case(rep, clock, "kernel_tests", "slow", lambda: time.sleep(3))
    broken = gc.run_case(rep, clock, "kernel_tests", "broken", lambda: 1 / 0)
    fine = gc.run_case(rep, clock, "kernel_tests", "fine", lambda: {"x": 1})
    clock.section_end = time.monotonic()                  # the section's share is spent
    late = gc.run_case(rep, clock, "kernel_tests", "late", lambda: {"x": 2})
    assert slow["status"] == "timeout" and slow["wall_s"] < 2
    assert broken["status"] == "error" and "ZeroDivisionError" in broken["reason"]
    assert fine["status"] == "ok" and fine["x"] == 1
    assert late["status"] == "skipped" and "time budget" in late["reason"] and "x" not in late
    written = json.loads((tmp_path / "gpu_check.json").read_text())          # rewritten after every case
    assert [c["name"] for c in written["sections"]["kernel_tests"]["cases"]] == ["slow", "broken", "fine", "late"]


def test_gpu_shapes_and_members_come_from_the_shipped_sweeps(tmp_path):
    """What the GPU run measures is read from the sweeps' YAMLs (a change there moves it) and every fit workload
    is one valid pack."""
    import yaml

    from ftcore import member_from_dict
    gc = _module()
    shapes = gc.kernel_shapes(smoke=False)
    assert {s["kernel"] for s in shapes} == {"lora_grouped", "lora_single", "packed_mlp", "selective_scan",
                                             "multi_adamw"}
    ftc = yaml.safe_load((ROOT / "sweeps" / "ftc_capacity.yaml").read_text())
    mlp = [s for s in shapes if s["kernel"] == "packed_mlp"]
    assert {s["B"] for s in mlp} == {int(ftc["task"]["k_per_n"] * max(ftc["axes"]["task.n"]))}
    assert {s["in"] for s in mlp} == {ftc["task"]["dim"]}
    assert {s["K"] for s in shapes if s["kernel"] == "lora_grouped" and s["workload"].startswith("lora_rank")} == {8, 16}
    assert any(s["kernel"] == "lora_single" and s["K"] == 4096 and s["M"] == 2048 for s in shapes)
    for w in gc.fit_workloads(smoke=False, tmp=tmp_path):
        members = [member_from_dict(d) for d in w["members"]]
        assert w.get("hf") or (len(members) > 1 and len({m.pack_key() for m in members}) == 1), w["name"]
