"""One GPU check, no Ray: kernel tests on the device, kernel timings, packed vs one-at-a-time `fit`, CUDA graphs.

    python benchmarks/gpu_check.py --out DIR                 # one NVIDIA GPU: < 8 min on an H100 (--budget-s 420)
    python benchmarks/gpu_check.py --smoke --out DIR         # no GPU: the same code paths on tiny shapes (< 1 min)

On the device tool (repo root, $OUT): `python benchmarks/gpu_check.py --out $OUT`. Nothing to install: the script
puts the repository root on sys.path (no `pip install -e`) and needs only what ftcore needs besides — torch, triton,
numpy, scipy, safetensors — and PyYAML, all on the lent H100/H200 image; pytest and transformers are used when
present and skipped with a reason otherwise.
It imports no `sweeps` module (Ray, OmegaConf and Optuna are absent there): the sweeps' YAMLs are read with PyYAML.

Writes DIR/gpu_check.json and DIR/gpu_check.md, atomically after every case, so a run stopped at any point leaves
what it measured. Sections (each case is `ok`, or carries `reason`: its error text, or why it was skipped):

1. kernel_tests — a built-in subset on the device: each kernel's Triton path against its `_ref` in float64, the
   output and every gradient, at odd sizes, fp32 and bf16 (max error <= tol · (max |ref| + 1)); then the
   repository's kernel test files under pytest in a subprocess (when pytest is installed), one case per test.
2. kernel_bench — each kernel (ftkernels: lora_linear single and grouped, packed_mlp, multi_adamw, selective_scan)
   as its Triton path, its `_ref`, `torch.compile` of the `_ref` (torch._dynamo.reset() per case; whether dynamo
   captured a graph or fell back to eager is recorded) and a plain torch.bmm / torch AdamW baseline where one
   means something; one training step (forward + backward; one optimizer step for multi_adamw), median of CUDA-event
   timings after warm-up, at the shapes of the shipped sweeps (sweeps/ftc_capacity.yaml, lora_rank.yaml,
   icl_context.yaml's transformer and Mamba; their `gpu` variants) and LLM LoRA shapes, in fp32, tf32 and bf16;
   every shape in bf16 first, then fp32, then tf32. The compile column is a second pass (a compile per case is the
   slow part); the first pass gets 60% of the section's time when a second follows.
3. fit — `ftcore.fit` of one pack of E members against `fit` of each member alone (a subset, as a rate): member-runs
   per minute and peak memory (torch.cuda.max_memory_allocated) for FTC, the LoRA teacher, an ICL transformer and
   LoRA members over a shared tiny HF base (ftcore.models.hf_tiny; skipped when transformers is absent). Members
   train a fixed number of steps (early stop off) so both sides do the same work; the largest difference in final
   loss between a member packed and alone is recorded, and so are the packed rates at `train.precision` tf32 and
   bf16 (where TrainConfig has the field) and which implementation each op took (ftkernels.dispatch.ops_ran).
4. cuda_graphs — one pack's training step (`ftcore.fit.train_step`: forward, backward, PackedAdamW) on a fixed
   batch, eager vs replayed by `ftcore.graphs.GraphedStep` (what `cuda_graphs: auto` captures): a timing of the
   step's GPU work, not of a training run. When `ftcore.fit` takes a `cuda_graphs` argument, fit is also
   run with it "off" and "auto" (ftcore/graphs.py) on the same members: wall time and whether the runs agree
   (statuses, steps, largest final-metric difference) — what decides whether `auto` can become the default.

A global time budget (--budget-s) is shared out over the sections (each ends by a fixed share of it, unused time
flows to the next); a case that would start past its section's end is skipped with that reason, and a case that
runs past it is interrupted (SIGALRM). Not a test (no test_ prefix); tests/test_gpu_check.py runs --smoke.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECTIONS = ("kernel_tests", "kernel_bench", "fit", "cuda_graphs")
SHARE_END = {"kernel_tests": 0.25, "kernel_bench": 0.62, "fit": 0.88, "cuda_graphs": 1.0}   # cumulative budget shares
DTYPES = ("bf16", "fp32", "tf32")
PASS1_SHARE = 0.6             # kernel_bench: share of its time for triton / ref / baseline before the compile pass
KERNEL_TEST_FILES = ("tests/test_kernel_*.py", "tests/test_kernels_wired.py",   # not test_kernels_aot: no GPU in it
                     "tests/test_graphs.py")
SMOKE_PYTEST_K = "rejects or unknown_choice"      # --smoke: a few fast tests, so the pytest path is exercised too


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for gpu_check.json and gpu_check.md")
    p.add_argument("--smoke", action="store_true", help="tiny shapes; without CUDA: Triton's interpreter on CPU")
    p.add_argument("--budget-s", type=float, default=420.0, help="global time budget in seconds (default 420)")
    p.add_argument("--case-s", type=float, default=90.0, help="most seconds one case may run (default 90)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    p.add_argument("--no-pytest", action="store_true", help="only the built-in kernel test subset")
    args = p.parse_args(argv)
    if args.budget_s <= 0 or args.case_s <= 0:
        p.error("--budget-s and --case-s must be > 0")
    return args


# ---------------------------------------------------------------------------------------------- report and time
class Report:
    """The JSON document and its Markdown rendering, both rewritten atomically after every case."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.doc = out, {"meta": meta, "sections": {}}
        out.mkdir(parents=True, exist_ok=True)

    def section(self, name: str) -> dict:
        return self.doc["sections"].setdefault(name, {"status": "running", "cases": []})

    def add(self, section: str, case: dict) -> None:
        self.section(section)["cases"].append(case)
        self.write()

    def write(self) -> None:
        for name, text in (("gpu_check.json", json.dumps(self.doc, indent=1, default=str)),
                           ("gpu_check.md", render_md(self.doc))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            tmp.replace(self.out / name)


class CaseTimeout(BaseException):
    """Raised by SIGALRM when a case outlives its allowance (BaseException: library `except Exception` lets it by)."""


def _alarm(signum, frame):
    raise CaseTimeout()


class Clock:
    """Absolute deadlines: the global budget and each section's share of it."""

    def __init__(self, budget_s: float, case_s: float):
        self.t0, self.budget, self.case_s = time.monotonic(), budget_s, case_s
        self.section_end = self.t0 + budget_s

    def start_section(self, name: str) -> None:
        self.section_end = self.t0 + SHARE_END[name] * self.budget

    def left(self) -> float:
        return self.section_end - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


def run_case(rep: Report, clock: Clock, section: str, name: str, fn, min_s: float = 1.0, **info) -> dict:
    """fn() -> dict of results; the case row gets status ok, or error/timeout/skipped with a reason."""
    case = {"name": name, **info}
    left = clock.left()
    if left < min_s:
        case.update(status="skipped", reason=f"time budget: {max(left, 0):.0f} s left of the {section} share "
                                              f"(--budget-s {clock.budget:.0f})")
        rep.add(section, case)
        return case
    allow = max(1.0, min(left, clock.case_s))
    t0 = time.monotonic()
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, allow)
    try:
        res = fn() or {}
        case.update(res)
        case.setdefault("status", "ok")
    except CaseTimeout:
        case.update(status="timeout", reason=f"interrupted after {allow:.0f} s (case limit --case-s or budget)")
    except Exception as e:  # noqa: BLE001 - a failing case is recorded and the script goes on
        tb = traceback.format_exc().strip().splitlines()
        case.update(status="error", reason=f"{type(e).__name__}: {str(e)[:500]}", traceback=tb[-6:])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    case["wall_s"] = round(time.monotonic() - t0, 3)
    if case["status"] not in ("ok", "pass") and not case.get("reason"):
        case["reason"] = "no reason recorded"
    rep.add(section, case)
    return case


# ------------------------------------------------------------------------------------------------ environment
def setup_environment(args) -> tuple[object, bool]:
    """Import torch; without CUDA set TRITON_INTERPRET=1 before triton / ftkernels are imported. -> (torch, cuda)."""
    import torch
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(1)                 # tiny CPU work: threads only contend on a shared runner
        if not args.smoke:
            print("gpu_check: no CUDA device here (--smoke runs the same code paths on CPU)", file=sys.stderr)
            raise SystemExit(2)
        os.environ["TRITON_INTERPRET"] = "1"
    return torch, cuda


def metadata(torch, cuda: bool, args) -> dict:
    def version(dist):                       # importlib.metadata: no import (ray's takes seconds)
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "absent"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        commit = ""
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(), "python": platform.python_version(),
            "commit": commit, "smoke": args.smoke, "budget_s": args.budget_s, "case_s": args.case_s,
            "device": torch.cuda.get_device_name() if cuda else "CPU (Triton interpreter)",
            "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
            "ftcore_kernels": os.environ.get("FTCORE_KERNELS", "auto"),
            "versions": {m: version(m) for m in ("torch", "triton", "numpy", "PyYAML", "pytest", "transformers",
                                                 "omegaconf", "ray")}}
    if cuda:
        p = torch.cuda.get_device_properties(0)
        meta.update(capability=f"sm_{p.major}{p.minor}", sms=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return meta


@contextlib.contextmanager
def precision(torch, name: str):
    """fp32: exact fp32 matmuls ('highest'); tf32: fp32 tensors with TF32 matmuls ('high'); bf16: bf16 tensors."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if name == "tf32" else "highest")
    try:
        yield torch.bfloat16 if name == "bf16" else torch.float32
    finally:
        torch.set_float32_matmul_precision(before)


def timer(torch, cuda: bool, smoke: bool):
    """timed(fn) -> median ms of fn() after warm-up: CUDA events on a GPU, perf_counter on CPU."""
    warm, reps = (1, 2) if smoke else (2, 10)

    def timed(fn) -> float:
        for _ in range(warm):
            fn()
        times = []
        if cuda:
            torch.cuda.synchronize()
            for _ in range(reps):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
        else:
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return round(statistics.median(times), 4)
    return timed


# ------------------------------------------------------------------------------------- the sweeps' shapes
def read_yaml(name: str) -> dict:
    """A shipped sweep spec as plain data (PyYAML; sweeps.spec needs OmegaConf, absent on the GPU image)."""
    import yaml
    return yaml.safe_load((ROOT / "sweeps" / name).read_text())


def member_dict(spec: dict, **dotted) -> dict:
    """The nested member dict of a spec's first grid point (each axis at its first value; a section-valued axis
    such as `model: [{name: transformer, ...}]` merged into the section), then `dotted` overrides ('task.n': 64)."""
    d = {s: dict(spec.get(s) or {}) for s in ("model", "adapter", "task", "train")}
    for key, values in (spec.get("axes") or {}).items():
        if not isinstance(values, list):
            continue                                 # a range string ("1..model.width"): set by the caller
        if "." in key:
            sec, fld = key.split(".", 1)
            d[sec][fld] = values[0]
        else:
            d[key].update(values[0])
    for key, v in dotted.items():
        if "." in key:
            sec, fld = key.split(".", 1)
            d[sec][fld] = v
        else:
            d[key] = v
    return d


def round_size(spec: dict, exclude=("train.method", "model", "task")) -> int:
    """Members of one round of a spec's grid (seeds × every axis but the method / architecture / task choice): the
    pack size the kernel shapes use, capped at 256."""
    n = int(spec.get("seeds", 1))
    for key, values in (spec.get("axes") or {}).items():
        if key in exclude:
            continue
        if isinstance(values, list):
            n *= len(values)
        elif isinstance(values, str) and ".." in values:          # "1..model.width"
            lo, hi = values.split("..")
            hi = member_dict(spec)[hi.split(".")[0]].get(hi.split(".")[1], 8) if not hi.isdigit() else int(hi)
            n *= int(hi) - int(lo) + 1
    return min(n, 256)


def variant(spec: dict, name: str = "gpu") -> dict:
    """The spec with `variants.<name>`'s dotted keys applied to its sections (axes.* keys replace axes)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in spec.items()}
    out["axes"] = dict(spec.get("axes") or {})
    for key, v in ((spec.get("variants") or {}).get(name) or {}).items():
        parts = key.split(".")
        if parts[0] == "axes":
            out["axes"][".".join(parts[1:])] = v
        elif parts[0] in ("model", "adapter", "task", "train") and len(parts) == 2:
            out[parts[0]] = {**out.get(parts[0], {}), parts[1]: v}
        elif parts[0] == "seeds":
            out["seeds"] = v
    return out


def seq_dims(member: dict) -> tuple[int, int, int]:
    """(B, T, n_trainable) of a sequence member: its task's first batch and trainable count, built on the CPU."""
    import torch

    from ftcore import member_from_dict
    from ftcore.pack import build_pack
    task, model = build_pack([member_from_dict(member)], torch.float32, "cpu")
    x = task.batch(0)[0]                                            # (1, B, T, in) or (1, B, T) ids
    return x.shape[1], x.shape[2], int(model.n_trainable()[0])


def kernel_shapes(smoke: bool) -> list[dict]:
    """Every (kernel, workload, shape) the bench times, tier 0 (the shipped sweeps' defaults) first."""
    if smoke:
        return [
            {"kernel": "packed_mlp", "workload": "ftc (smoke)", "E": 3, "B": 12, "in": 5, "H": [9], "out": 1},
            {"kernel": "lora_grouped", "workload": "lora_teacher (smoke)", "E": 2, "M": 6, "K": 8, "N": 8, "R": 8,
             "ranks": [1, 8], "bias": True},
            {"kernel": "lora_single", "workload": "llm (smoke)", "M": 16, "K": 16, "N": 16, "R": 4},
            {"kernel": "multi_adamw", "workload": "ftc (smoke)", "E": 3, "P": 1500},
            {"kernel": "selective_scan", "workload": "icl mamba (smoke)", "E": 2, "B": 1, "Dm": 4, "L": 5, "N": 4}]
    ftc, lt, icl = read_yaml("ftc_capacity.yaml"), read_yaml("lora_rank.yaml"), read_yaml("icl_context.yaml")
    out = []
    # FTC: g of a capacity round; K = k_per_n · the largest N; widths from the search range's middle
    E, K = round_size(ftc), int(ftc["task"]["k_per_n"] * max(ftc["axes"]["task.n"]))
    for depth, H in ((2, [256]), (3, [128, 128])):
        out.append({"kernel": "packed_mlp", "workload": f"ftc_capacity depth {depth}", "E": E, "B": K,
                    "in": ftc["task"]["dim"], "H": H, "out": 1})
    out.append({"kernel": "multi_adamw", "workload": "ftc_capacity g (width 256)", "E": E,
                "P": ftc["task"]["dim"] * 256 + 256 + 256 + 1})
    # LoRA teacher: one adapted layer (width D, ranks 1..D), batch_size rows, tune_bias
    for name, s in (("lora_rank", lt), ("lora_rank gpu", variant(lt))):
        D = s["model"]["width"]
        out.append({"kernel": "lora_grouped", "workload": name, "E": round_size(s), "M": s["task"]["batch_size"],
                    "K": D, "N": D, "R": D, "ranks": list(range(1, D + 1)), "bias": True})
    out.append({"kernel": "multi_adamw", "workload": "lora_rank (depth 2)", "E": round_size(lt),
                "P": 2 * (2 * lt["model"]["width"] ** 2 + lt["model"]["width"])})
    # ICL transformer and Mamba (icl_context.yaml): shapes from a one-member pack built on the CPU
    for which, tag in ((0, "transformer"), (1, "mamba")):
        m = member_dict(icl, model={**icl["model"], **icl["axes"]["model"][which]}, **{"model.n_layer": 2})
        B, T, P = seq_dims(m)
        C, E = m["model"]["n_embd"], round_size(icl)
        out.append({"kernel": "multi_adamw", "workload": f"icl_context {tag} (full)", "E": E, "P": P})
        if tag == "transformer":                      # LoRA on attn.qkv, as needles_finetune adapts it
            out.append({"kernel": "lora_grouped", "workload": "icl_context transformer attn.qkv", "E": E,
                        "M": B * T, "K": C, "N": 3 * C, "R": 16, "ranks": [1, 4, 8, 16], "bias": True})
        else:
            out.append({"kernel": "selective_scan", "workload": "icl_context mamba", "E": E, "B": B,
                        "Dm": 2 * C, "L": T, "N": m["model"].get("d_state", 16)})
    g = variant(icl)
    C = g["model"]["n_embd"]
    gm = {**g["axes"]["model"][1]}
    out.append({"kernel": "selective_scan", "workload": "icl_context mamba gpu", "E": 2,
                "B": g["task"]["batch_size"], "Dm": 2 * C, "L": 2 * g["task"]["n_points"], "N": gm.get("d_state", 16)})
    # LLM LoRA shapes: one adapter on d = 4096, 2048 tokens; a multi-LoRA pack over one shared base
    for r in (8, 16, 64):
        out.append({"kernel": "lora_single", "workload": f"llm d=4096 r={r}", "M": 2048, "K": 4096, "N": 4096, "R": r})
    out.append({"kernel": "lora_grouped", "workload": "llm multi-LoRA d=4096 (shared base)", "E": 8, "M": 256,
                "K": 4096, "N": 4096, "R": 64, "ranks": [8, 16, 32, 64], "bias": False, "shared": True})
    return out


# ------------------------------------------------------------------------------------------- kernel problems
def make_problem(torch, shape: dict, dtype, device, x_grad: bool = True, values=None):
    """-> (leaves, fwds, dy, note): leaves require grad; fwds {impl: f(*leaves) -> out}; a training step is
    f(*leaves).backward(dy). Every tensor is drawn in fp32 from one seed and rounded through `values` (a dtype) before
    the cast to `dtype`, so a float64 problem with values=bf16 holds exactly the numbers of the bf16 one."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*s, std=1.0, grad=True):
        t = (torch.randn(*s, generator=g) * std).to(values or dtype).to(device=device, dtype=dtype)
        return t.requires_grad_(grad)
    k = shape["kernel"]
    if k == "lora_single":
        from ftkernels import lora_linear as L
        M, K, N, R = shape["M"], shape["K"], shape["N"], shape["R"]
        x, W = rnd(M, K, grad=x_grad), rnd(K, N, std=K ** -0.5, grad=False)
        down, up = rnd(K, R, std=K ** -0.5), rnd(R, N, std=R ** -0.5)
        leaves = [x, down, up] if x_grad else [down, up]
        call = (lambda f: (lambda x, d, u: f(x, W, None, d, u, 2.0))) if x_grad else \
            (lambda f: (lambda d, u: f(x, W, None, d, u, 2.0)))
        return leaves, {"triton": call(L.lora_linear_triton), "ref": call(L.lora_linear_ref)}, rnd(M, N, grad=False), \
            "bmm: not meaningful for one adapter (the ref is two plain matmuls)"
    if k == "lora_grouped":
        from ftkernels import lora_linear as L
        E, M, K, N, R = shape["E"], shape["M"], shape["K"], shape["N"], shape["R"]
        x = rnd(E, M, K, grad=x_grad)
        W = rnd(1 if shape.get("shared") else E, K, N, std=K ** -0.5, grad=False).expand(E, K, N)
        b = rnd(E, N) if shape.get("bias") else None
        down, up = rnd(E, K, R, std=K ** -0.5), rnd(E, R, N, std=R ** -0.5)
        scale = (torch.rand(E, generator=g) + 0.5).to(device)
        ranks = torch.tensor([shape["ranks"][e % len(shape["ranks"])] for e in range(E)], dtype=torch.int32,
                             device=device)
        sc = scale.to(dtype)[:, None, None]

        def bmm(x, b, d, u):              # padded ranks, no mask: the plain batched-GEMM formulation
            base = (x.reshape(E * M, K) @ W[0]).reshape(E, M, N) if shape.get("shared") else torch.bmm(x, W)
            base = base if b is None else base + b[:, None]
            return base + sc * torch.bmm(torch.bmm(x, d), u)

        def call(f):
            return lambda x, b, d, u: f(x, W, b, d, u, scale, ranks)
        fwds = {"triton": call(L.grouped_lora_linear_triton), "ref": call(L.grouped_lora_linear_ref), "bmm": bmm}
        leaves = [x, b, down, up]
        if not x_grad:
            fwds = {n: _with_first(f, x) for n, f in fwds.items()}
            leaves = leaves[1:]
        return leaves, fwds, rnd(E, M, N, grad=False), ""
    if k == "packed_mlp":
        from ftkernels import packed_mlp as P
        E, B, dims = shape["E"], shape["B"], [shape["in"], *shape["H"], shape["out"]]
        x = rnd(E, B, dims[0], grad=x_grad)
        Ws = [rnd(E, a, c, std=a ** -0.5) for a, c in zip(dims, dims[1:])]
        bs = [rnd(E, c, std=0.1) for c in dims[1:]]
        masks = [(torch.arange(h, device=device)[None] < torch.tensor(
            [max(1, h - 3 * e) for e in range(E)], device=device)[:, None]).to(torch.float32) for h in shape["H"]]
        L_ = len(Ws)

        def call(f):
            return lambda *t: f(t[0], list(t[1:1 + L_]), list(t[1 + L_:]), masks)
        fwds = {"triton": call(P.packed_mlp_triton), "ref": call(P.packed_mlp_ref)}
        leaves = [x, *Ws, *bs]
        if not x_grad:
            fwds = {n: _with_first(f, x) for n, f in fwds.items()}
            leaves = leaves[1:]
        return leaves, fwds, rnd(E, B, dims[-1], grad=False), "bmm: the ref is the baddbmm formulation"
    if k == "selective_scan":
        from ftkernels import selective_scan as S
        E, B, Dm, L, N = shape["E"], shape["B"], shape["Dm"], shape["L"], shape["N"]
        Bt = E * B
        u, delta, z = rnd(Bt, Dm, L), rnd(Bt, Dm, L, std=0.5), rnd(Bt, Dm, L)
        Bm, Cm = rnd(Bt, N, L), rnd(Bt, N, L)
        A_log = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(E, Dm, N).contiguous().to(device)
        A_log.requires_grad_()
        D, bias = rnd(E, Dm).float().detach().requires_grad_(), (rnd(E, Dm, std=0.1) - 2).float().detach().requires_grad_()

        def rows(p):                                       # (E, *s) -> (E·B, *s), as ftcore.models.mamba
            return p[:, None].expand(E, B, *p.shape[1:]).reshape(Bt, *p.shape[1:])

        def call(f):
            return lambda u, dl, a, b_, c_, d, zz, bi: f(u, dl, rows(-torch.exp(a)), b_, c_, rows(d), zz, rows(bi), True)
        return [u, delta, A_log, Bm, Cm, D, z, bias], {"triton": call(S.selective_scan_triton),
                                                        "ref": call(S.selective_scan_ref)}, rnd(Bt, Dm, L, grad=False), \
            "bmm: not meaningful for a scan"
    raise ValueError(f"unknown kernel {k}")


def _with_first(f, x):
    """f(x, *rest) as a function of rest: an input that is data, not a leaf."""
    return lambda *rest: f(x, *rest)


def adamw_problem(torch, shape: dict, dtype, device):
    """-> (states, steps): per impl its own (E, P) state; steps {impl: () -> None} one in-place AdamW step."""
    from ftkernels import multi_adamw as MA
    E, P = shape["E"], shape["P"]
    g = torch.Generator(device="cpu").manual_seed(1)

    def state():
        p = torch.randn(E, P, generator=g).to(device, dtype)
        return {"p": p, "g": torch.randn(E, P, generator=g).to(device, dtype),
                "m": torch.zeros(E, P, device=device), "v": torch.zeros(E, P, device=device)}
    f32 = {"device": device, "dtype": torch.float32}
    lr, b1, b2 = torch.full((E,), 1e-3, **f32), torch.full((E,), 0.9, **f32), torch.full((E,), 0.999, **f32)
    wd, clip = torch.full((E,), 0.01, **f32), torch.full((E,), 1.0, **f32)
    active = (torch.arange(E) < E - 1 if E >= 3 else torch.ones(E, dtype=torch.bool)).to(device)   # one member done
    states = {n: state() for n in ("triton", "ref", "torch_adamw")}

    def call(f, s):
        return lambda: f(s["p"], s["g"], s["m"], s["v"], lr, b1, b2, 1e-8, wd, clip, active, 10)
    steps = {"triton": call(MA.multi_adamw_triton, states["triton"]), "ref": call(MA.multi_adamw_ref, states["ref"])}
    tp = states["torch_adamw"]["p"].requires_grad_()
    tp.grad = states["torch_adamw"]["g"]
    fused = device.type == "cuda"
    opt = torch.optim.AdamW([tp], lr=1e-3, weight_decay=0.01, **({"fused": True} if fused else {"foreach": True}))
    steps["torch_adamw"] = opt.step
    return states, steps, call


# ------------------------------------------------------------------------------------------ 1. kernel tests
def pytest_cases(rep: Report, clock: Clock, args, torch) -> None:
    """The repository's kernel test files under pytest, one case per test (JUnit XML)."""
    if importlib.util.find_spec("pytest") is None:          # it runs in a subprocess: only whether it is there
        rep.add("kernel_tests", {"name": "pytest", "status": "skipped", "reason": "pytest is not installed here"})
        return
    files = sorted({str(p.relative_to(ROOT)) for pat in KERNEL_TEST_FILES for p in ROOT.glob(pat)})
    xml = Path(tempfile.mkdtemp()) / "kernel_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", f"--junitxml={xml}", *files]
    if args.smoke:
        cmd += ["-k", SMOKE_PYTEST_K]
    left = clock.left() - 5
    if left < 10:
        rep.add("kernel_tests", {"name": "pytest", "status": "skipped",
                                 "reason": f"time budget: {max(left, 0):.0f} s left of the kernel_tests share"})
        return
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=left)
        rc, stdout, tail = proc.returncode, proc.stdout, (proc.stdout + proc.stderr)[-1500:]
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc, tail = "timeout", f"pytest stopped after {left:.0f} s (section budget); the tests it finished are listed"
    cases = parse_junit(xml) if xml.exists() else parse_verbose(stdout)
    for c in cases:
        rep.section("kernel_tests")["cases"].append(c)
    summary = {s: sum(c["status"] == s for c in cases) for s in ("pass", "fail", "error", "skipped")}
    row = {"name": "pytest " + " ".join(files) + (f" -k '{SMOKE_PYTEST_K}'" if args.smoke else ""), "rc": rc,
           "counts": summary, "wall_s": round(time.monotonic() - t0, 1)}
    bad = rc not in (0, 5) or not cases
    row.update(status="error" if bad else "ok", **({"reason": tail} if bad else {}))
    rep.add("kernel_tests", row)


def parse_verbose(stdout: str) -> list[dict]:
    """Per-test outcomes from `pytest -v` lines (what a stopped run printed; the JUnit file comes only at the end)."""
    st = {"PASSED": "pass", "FAILED": "fail", "ERROR": "error", "SKIPPED": "skipped", "XFAIL": "skipped",
          "XPASS": "pass"}
    out = []
    for m in re.finditer(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", stdout, re.M):
        row = {"name": m.group(1), "status": st[m.group(2)], "source": "pytest"}
        if row["status"] != "pass":
            row["reason"] = f"pytest: {m.group(2)} (JUnit details lost: the run was stopped)"
        out.append(row)
    return out


def parse_junit(path: Path) -> list[dict]:
    out = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        name = f"{tc.get('classname', '')}::{tc.get('name', '')}"
        status, reason = "pass", ""
        for tag, st in (("failure", "fail"), ("error", "error"), ("skipped", "skipped")):
            el = tc.find(tag)
            if el is not None:
                status, reason = st, (el.get("message") or el.text or tag)[:400]
                break
        out.append({"name": name, "status": status, "source": "pytest", **({"reason": reason} if reason else {})})
    return out


TEST_SHAPES = {   # odd sizes: every tile edge, several rank slots, chunks of the scan, P past one block
    "lora_grouped": {"kernel": "lora_grouped", "E": 4, "M": 37, "K": 33, "N": 40, "R": 33, "ranks": [0, 1, 17, 33],
                     "bias": True},
    "lora_single": {"kernel": "lora_single", "M": 37, "K": 33, "N": 40, "R": 17},
    "packed_mlp depth 2": {"kernel": "packed_mlp", "E": 3, "B": 37, "in": 7, "H": [70], "out": 3},
    "packed_mlp depth 3": {"kernel": "packed_mlp", "E": 3, "B": 37, "in": 7, "H": [35, 33], "out": 3},
    "selective_scan": {"kernel": "selective_scan", "E": 3, "B": 1, "Dm": 70, "L": 37, "N": 16},
    "multi_adamw": {"kernel": "multi_adamw", "E": 3, "P": 3001},
}
SMOKE_TEST_SHAPES = {
    "lora_grouped": {**TEST_SHAPES["lora_grouped"], "E": 3, "M": 5, "K": 7, "N": 9, "R": 17, "ranks": [0, 1, 17]},
    "lora_single": {**TEST_SHAPES["lora_single"], "M": 5, "K": 7, "N": 9, "R": 3},
    "packed_mlp depth 2": {**TEST_SHAPES["packed_mlp depth 2"], "B": 5, "H": [9]},
    "packed_mlp depth 3": {**TEST_SHAPES["packed_mlp depth 3"], "B": 5, "H": [5, 4]},
    "selective_scan": {**TEST_SHAPES["selective_scan"], "E": 2, "Dm": 3, "L": 19, "N": 4},
    "multi_adamw": {**TEST_SHAPES["multi_adamw"], "P": 1500},
}
TOL = {"fp32": 1e-4, "bf16": 3e-2}


def rel_err(torch, got, ref) -> float:
    """max |got − ref| / (max |ref| + 1), in float64."""
    got, ref = got.detach().double(), ref.detach().double()
    return float((got - ref).abs().max() / (ref.abs().max() + 1))


def check_against_ref(torch, shape: dict, dt_name: str, device) -> dict:
    """Triton path vs the `_ref` evaluated in float64 (inputs cast from the same values): output and every grad."""
    if shape["kernel"] == "multi_adamw":
        with precision(torch, dt_name) as dtype:
            states, steps, call = adamw_problem(torch, shape, dtype, device)
        s, ref = states["triton"], {k: v.double().clone() for k, v in states["triton"].items()}
        from ftkernels import multi_adamw as MA
        call(MA.multi_adamw_ref, ref)()
        steps["triton"]()
        errs = {k: rel_err(torch, s[k], ref[k]) for k in ("p", "m", "v")}
    else:
        with precision(torch, dt_name) as dtype:
            leaves, fwds, dy, _ = make_problem(torch, shape, dtype, device)
            out = fwds["triton"](*leaves)
            grads = torch.autograd.grad(out, [t for t in leaves if t is not None], dy)
        leaves64, fwds64, dy64, _ = make_problem(torch, shape, torch.float64, device, values=dtype)
        out64 = fwds64["ref"](*leaves64)
        grads64 = torch.autograd.grad(out64, [t for t in leaves64 if t is not None], dy64)
        errs = {"out": rel_err(torch, out, out64), **{f"grad{i}": rel_err(torch, a, b)
                                                       for i, (a, b) in enumerate(zip(grads, grads64))}}
    worst = max(errs.values())
    ok = worst <= TOL[dt_name]
    return {"status": "pass" if ok else "fail", "max_err": worst, "tol": TOL[dt_name],
            "errors": {k: float(f"{v:.3g}") for k, v in errs.items()},
            **({} if ok else {"reason": f"max error {worst:.3g} > tol {TOL[dt_name]} ({max(errs, key=errs.get)})"})}


def section_kernel_tests(rep, clock, args, torch, cuda, device) -> None:
    shapes = SMOKE_TEST_SHAPES if args.smoke and not cuda else TEST_SHAPES
    for name, shape in shapes.items():
        for dt in ("fp32", "bf16"):
            info = {"source": "built-in", "kernel": shape["kernel"], "dtype": dt, "shape": shape}
            if dt == "bf16" and not cuda:
                rep.add("kernel_tests", {"name": f"{name} {dt}", "status": "skipped", **info,
                                         "reason": "bf16 is silently wrong in Triton's interpreter (DESIGN.md §6)"})
                continue
            run_case(rep, clock, "kernel_tests", f"{name} {dt}", lambda s=shape, d=dt: check_against_ref(
                torch, s, d, device), **info)
    if args.no_pytest:
        rep.add("kernel_tests", {"name": "pytest", "status": "skipped", "reason": "--no-pytest"})
    else:
        pytest_cases(rep, clock, args, torch)


# ------------------------------------------------------------------------------------------ 2. kernel bench
def compiled(torch, fn, smoke: bool):
    """torch.compile of fn after torch._dynamo.reset(); in --smoke without CUDA the 'eager' backend (dynamo's
    tracing without inductor's C++ build, which would take minutes on CPU)."""
    torch._dynamo.reset()
    backend = "eager" if smoke else "inductor"
    return torch.compile(fn, backend=backend, dynamic=False), backend


def dynamo_stats(torch) -> dict:
    from torch._dynamo.utils import counters
    graphs = int(counters["stats"].get("unique_graphs", 0))
    breaks = int(sum(counters["graph_break"].values()))
    return {"graphs": graphs, "graph_breaks": breaks, "fell_back_to_eager": graphs == 0}


def _steps(torch, shape: dict, dtype, device, compile_: bool, smoke: bool) -> tuple[dict, dict]:
    """-> ({impl: one training step as a callable}, facts). compile_: only torch.compile of the `_ref`."""
    facts = {}
    if shape["kernel"] == "multi_adamw":
        from ftkernels import multi_adamw as MA
        states, steps, call = adamw_problem(torch, shape, dtype, device)
        if compile_:
            fn, facts["compile_backend"] = compiled(torch, MA.multi_adamw_ref, smoke)
            return {"compile": call(fn, states["ref"])}, facts
        facts["note"] = "torch_adamw: torch.optim.AdamW (fused on CUDA) on the (E, P) buffer, one scalar lr"
        return steps, facts
    x_grad = shape["kernel"] != "packed_mlp"                     # FTC's x is data, not a leaf
    leaves, fwds, dy, note = make_problem(torch, shape, dtype, device, x_grad=x_grad)
    live = [t for t in leaves if t is not None]
    if compile_:
        fn, facts["compile_backend"] = compiled(torch, fwds["ref"], smoke)
        fwds = {"compile": fn}
    else:
        facts["note"] = note
        with torch.no_grad():
            facts["max_rel_err"] = float(f"{rel_err(torch, fwds['triton'](*leaves), fwds['ref'](*leaves)):.3g}")

    def train_step(f):
        def step():
            for t in live:
                t.grad = None
            f(*leaves).backward(dy)
        return step
    return {name: train_step(f) for name, f in fwds.items()}, facts


def bench_case(torch, shape: dict, dt_name: str, device, timed, args, compile_: bool = False,
               triton_ms: float | None = None) -> dict:
    """One (kernel, shape, dtype): median ms of a training step per implementation (triton, ref, bmm / torch AdamW),
    triton vs ref error; with compile_ only torch.compile of the ref, after torch._dynamo.reset(), with the compile
    time and whether dynamo captured a graph or fell back to eager. A failing implementation is recorded under
    impl_errors and the others still run."""
    from torch._dynamo.utils import counters
    ms, errs = {}, {}
    with precision(torch, dt_name) as dtype:
        counters.clear()
        steps, res = _steps(torch, shape, dtype, device, compile_, args.smoke)
        for name, step in steps.items():
            try:
                t0 = time.perf_counter()
                step()
                if compile_:
                    res.update(compile_s=round(time.perf_counter() - t0, 2), **dynamo_stats(torch))
                ms[name] = timed(step)
            except Exception as e:  # noqa: BLE001
                errs[name] = f"{type(e).__name__}: {str(e)[:300]}"
    res["ms"] = ms
    t = ms.get("triton", triton_ms)
    if t:
        res["speedup"] = {k: round(v / t, 2) for k, v in ms.items() if k != "triton"}
    if errs:
        res.update(impl_errors=errs, status="partial", reason="; ".join(f"{k}: {v}" for k, v in errs.items()))
    return {k: v for k, v in res.items() if v is not None and v != ""}


def section_kernel_bench(rep, clock, args, torch, cuda, device, timed) -> None:
    """Pass 1: triton / ref / baseline for every shape and dtype (bf16 first); pass 2: torch.compile of the ref,
    the slow part (a compile per case), in the same order, as far as the budget goes."""
    try:
        shapes = kernel_shapes(args.smoke)
    except Exception as e:  # noqa: BLE001
        rep.add("kernel_bench", {"name": "shapes", "status": "error", "reason": f"{type(e).__name__}: {e}"})
        return
    dtypes = DTYPES if cuda else ["fp32"]
    if not cuda:
        rep.add("kernel_bench", {"name": "bf16", "status": "skipped",
                                 "reason": "no CUDA: bf16 is silently wrong in Triton's interpreter (DESIGN.md §6)"})
        rep.add("kernel_bench", {"name": "tf32", "status": "skipped",
                                 "reason": "no CUDA: TF32 is a CUDA matmul mode; on CPU it is the fp32 case"})
    passes = [False] if args.no_compile else [False, True]
    if args.no_compile:
        rep.add("kernel_bench", {"name": "compile", "status": "skipped", "reason": "--no-compile"})
    section_end = clock.section_end
    for compile_ in passes:       # the kernels pass gets 60% of the section's time when a compile pass follows
        clock.section_end = section_end if compile_ or len(passes) == 1 else \
            time.monotonic() + PASS1_SHARE * (section_end - time.monotonic())
        for shape, dt in [(s, d) for d in dtypes for s in shapes]:
            key = f"{shape['kernel']} | {shape['workload']} | {dt}"
            first = next((c for c in rep.section("kernel_bench")["cases"] if c["name"] == key), {})
            t_ms = first.get("ms", {}).get("triton")
            info = {"kernel": shape["kernel"], "workload": shape["workload"], "dtype": dt,
                    "pass": "compile" if compile_ else "kernels",
                    "shape": {k: v for k, v in shape.items() if k not in ("kernel", "workload")}}
            run_case(rep, clock, "kernel_bench", key + (" | compile" if compile_ else ""),
                     lambda s=shape, d=dt, c=compile_, t=t_ms: bench_case(
                         torch, s, d, device, timed, args, c, t), min_s=3.0, **info)
            if cuda:
                torch.cuda.empty_cache()
    clock.section_end = section_end


# ----------------------------------------------------------------------------------------------- 3. fit
def fit_workloads(smoke: bool, tmp: Path) -> list[dict]:
    """(name, members as dicts, how many run alone): FTC, LoRA teacher, ICL transformer, LoRA over a tiny HF base."""
    steps = 3 if smoke else 150
    E = 2 if smoke else 32
    ftc, lt, icl = read_yaml("ftc_capacity.yaml"), read_yaml("lora_rank.yaml"), read_yaml("icl_context.yaml")
    common = {"train.steps": steps, "train.early_stop": False}
    widths = [4, 8] if smoke else [16, 32, 64, 128]
    out = [{"name": "ftc_capacity (n=16 depth 2)" if smoke else "ftc_capacity (n=64 depth 2)",
            "members": [member_dict(ftc, **common, **{"task.n": 16 if smoke else 64, "adapter.depth": 2,
                                                      "train.method": "adam", "adapter.width": widths[e % len(widths)],
                                                      "seed": e}) for e in range(E)]}]
    D = lt["model"]["width"]
    out.append({"name": f"lora_rank (D={D}, ranks 1..{D})", "precisions": not smoke, "members": [
        member_dict(lt, **common, **{"train.method": "adam", "adapter.rank": 1 + e % D, "seed": e}) for e in range(E)]})
    tr = {**icl["model"], **icl["axes"]["model"][0]}
    small = {"task.batch_size": 8, "task.n_eval": 16} if smoke else {}
    if smoke:
        tr.update(n_embd=16, n_head=2)
    out.append({"name": f"icl_context transformer (n_embd {tr['n_embd']}, 2 layers)", "precisions": not smoke, "members": [
        member_dict(icl, model=tr, **common, **small, **{"model.n_layer": 2, "seed": e}) for e in range(min(E, 16))]})
    out.append({"name": "LoRA over a shared tiny HF GPT-2", "hf": True, "precisions": not smoke, "members": [],
                "E": min(E, 16),
                "steps": 2 if smoke else 30})
    return out


def hf_members(w: dict, tmp: Path, smoke: bool) -> list[dict]:
    from ftcore.models.hf_tiny import save_tiny  # imports transformers
    path = save_tiny(tmp / "hf_gpt2", "gpt2", n_embd=32 if smoke else 128, n_layer=2, n_head=4,
                     vocab_size=300 if smoke else 512)
    ranks = [2, 4] if smoke else [4, 8, 16]
    return [{"model": {"name": "hf_causal_lm", "path": str(path)},
             "task": {"name": "lm_text", "batch_size": 2 if smoke else 16, "n_eval": 2 if smoke else 32},
             "adapter": {"name": "lora", "rank": ranks[e % len(ranks)], "targets": ["c_attn", "c_proj", "c_fc"]},
             "train": {"steps": w["steps"], "early_stop": False, "eval_every": w["steps"]}, "seed": e}
            for e in range(w["E"])]


def timed_fit(torch, cuda, members, device) -> tuple[float, float | None, list]:
    import ftcore
    from ftkernels import dispatch
    getattr(dispatch, "reset_ops", lambda: None)()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = ftcore.fit(members, device=device)
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return time.perf_counter() - t0, peak, res


def fit_case(torch, cuda, device, w: dict, tmp: Path, smoke: bool) -> dict:
    from ftcore import member_from_dict
    dicts = w["members"] or hf_members(w, tmp, smoke)
    members = [member_from_dict(d) for d in dicts]
    n_alone = min(len(members), 1 if smoke else 6)
    warm = [member_from_dict({**d, "train": {**d["train"], "steps": 1, "eval_every": 1}}) for d in dicts]
    timed_fit(torch, cuda, warm, device)                      # JIT / allocator / first-call costs, both shapes
    timed_fit(torch, cuda, warm[:1], device)
    wall_p, peak_p, res_p = timed_fit(torch, cuda, members, device)
    ops = _kernels_ran(device)                                # what the packed fit's op calls took
    wall_1, peak_1, res_1 = 0.0, 0.0, []
    for m in members[:n_alone]:
        w1, p1, r1 = timed_fit(torch, cuda, [m], device)
        wall_1, peak_1, res_1 = wall_1 + w1, max(peak_1 or 0.0, p1 or 0.0), res_1 + r1
    rate_p, rate_1 = 60 * len(members) / wall_p, 60 * n_alone / wall_1
    diffs = [abs(a.metrics.get("train/loss", math.nan) - b.metrics.get("train/loss", math.nan))
             for a, b in zip(res_p, res_1)]
    c0 = members[0]
    prec = getattr(c0.train, "precision", "fp32 (no train.precision at this commit)")
    out = {"E": len(members), "steps": c0.train.steps, "alone": n_alone, "precision": prec,
           "packed_wall_s": round(wall_p, 3), "alone_wall_s": round(wall_1, 3),
           "packed_runs_per_min": round(rate_p, 1), "alone_runs_per_min": round(rate_1, 1),
           "ratio": round(rate_p / rate_1, 2),
           "packed_peak_mib": None if peak_p is None else round(peak_p, 1),
           "alone_peak_mib": None if not cuda else round(peak_1, 1),
           "final_train_loss_max_abs_diff": float(f"{max(diffs):.3g}") if diffs else None,
           "statuses": sorted({r.status for r in res_p + res_1}), "kernels": ops,
           "packed_runs_per_min_by_precision": by_precision(torch, cuda, dicts, device, smoke)
           if w.get("precisions", True) else {"reason": "--smoke: timed on the first workload only"}}
    if not cuda:
        out["memory_note"] = "no CUDA: torch.cuda.max_memory_allocated not available"
    return out


def _kernels_ran(device):
    """Per op what the last fit's calls took (dispatch.ops_ran, where it exists), else the device's policy."""
    from ftkernels import dispatch
    return dispatch.ops_ran() if hasattr(dispatch, "ops_ran") else dispatch.impl_for(device)


def by_precision(torch, cuda, dicts: list[dict], device, smoke: bool) -> dict:
    """Packed member-runs per minute at each other `train.precision` (tf32, bf16), when TrainConfig has the field."""
    import dataclasses

    from ftcore import TrainConfig, member_from_dict
    if "precision" not in {f.name for f in dataclasses.fields(TrainConfig)}:
        return {"reason": "no train.precision at this commit"}
    out = {}
    for prec in ("tf32", "bf16"):
        if smoke and prec == "tf32":
            continue                                     # on CPU tf32 changes nothing (ftcore.fit.matmul_mode)
        try:
            members = [member_from_dict({**d, "train": {**d["train"], "precision": prec}}) for d in dicts]
            timed_fit(torch, cuda, [member_from_dict({**d, "train": {**d["train"], "precision": prec, "steps": 1,
                                                                      "eval_every": 1}}) for d in dicts], device)
            wall, _, _ = timed_fit(torch, cuda, members, device)
            out[prec] = round(60 * len(members) / wall, 1)
        except Exception as e:  # noqa: BLE001
            out[prec] = f"{type(e).__name__}: {str(e)[:200]}"
    return out


def section_fit(rep, clock, args, torch, cuda, device) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        workloads = fit_workloads(args.smoke, tmp)
    except Exception as e:  # noqa: BLE001
        rep.add("fit", {"name": "workloads", "status": "error", "reason": f"{type(e).__name__}: {e}"})
        return
    for w in workloads:
        if w.get("hf"):
            try:
                import transformers  # noqa: F401
            except Exception as e:  # noqa: BLE001
                rep.add("fit", {"name": w["name"], "status": "skipped",
                                "reason": f"transformers does not import here ({type(e).__name__}: {e})"})
                continue
        run_case(rep, clock, "fit", w["name"], lambda w=w: fit_case(torch, cuda, device, w, tmp, args.smoke), min_s=5.0)
        if cuda:
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------- 4. CUDA graphs
def graph_case(torch, cuda, device, dicts: list[dict], timed) -> dict:
    """One pack's training step (`ftcore.fit.train_step`) on a fixed batch: eager, and as `cuda_graphs: auto`
    replays it (`ftcore.graphs.GraphedStep`: warm-up steps on a side stream, one capture, then replays)."""
    from ftcore import member_from_dict
    from ftcore.fit import make_optimizer, train_step
    from ftcore.pack import build_pack
    members = [member_from_dict(d) for d in dicts]
    task, model = build_pack(members, torch.float32, device)
    opt = make_optimizer(model, members)
    batch = task.batch(0)
    active = torch.ones(len(members), dtype=torch.bool, device=device)
    diverged_at = torch.full((len(members),), -1, dtype=torch.long, device=device)

    def step():
        train_step(task, model, opt, batch, active, diverged_at, 0, 1.0)
    out = {"E": len(members), "static_batch": bool(getattr(task, "static_batch", False)),
           "eager_ms": timed(step)}
    if not cuda:
        out.update(status="partial", reason="no CUDA: eager step only (CUDA graphs need a GPU)")
        return out
    if not hasattr(opt, "use_device_step"):
        out.update(status="partial", reason="this pack's optimizer keeps no device step count (ftcore.graphs)")
        return out
    from ftcore.graphs import WARMUP, GraphedStep
    graphed = GraphedStep(task, model, opt, batch, active, diverged_at, "fp32", train_step)
    for s in range(WARMUP):                                  # eager, on a side stream
        graphed(s, 1.0)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    graphed(WARMUP, 1.0)                                     # the capture, then its first replay
    torch.cuda.synchronize()
    out["capture_s"] = round(time.perf_counter() - t0, 3)
    out["graph_ms"] = timed(lambda: graphed(WARMUP, 1.0))
    graphed.close()
    out["speedup"] = round(out["eager_ms"] / out["graph_ms"], 2) if out["graph_ms"] > 0 else None
    out["note"] = "ftcore.graphs.GraphedStep replaying fit's step on a fixed batch: a timing, not a training run"
    return out


def fit_graphs_case(torch, cuda, device, dicts) -> dict:
    """`ftcore.fit(..., cuda_graphs="off" / "auto")` on the same members: wall time, and whether the runs agree
    (statuses, step counts, the largest difference of a final metric) — the check that decides whether `auto` can
    become the default (ftcore/graphs.py)."""
    import math

    import ftcore
    from ftcore import member_from_dict
    if "cuda_graphs" not in inspect.signature(ftcore.fit).parameters:
        return {"status": "skipped", "reason": "ftcore.fit takes no cuda_graphs argument at this commit"}
    if not cuda:
        return {"status": "skipped", "reason": "no CUDA: CUDA graphs need a GPU"}
    members = [member_from_dict(d) for d in dicts]
    out, results = {}, {}
    for flag in ("off", "auto"):
        ftcore.fit(members[:1], device=device, cuda_graphs=flag)             # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        results[flag] = ftcore.fit(members, device=device, cuda_graphs=flag)
        torch.cuda.synchronize()
        out[f"fit_s_graphs_{flag}"] = round(time.perf_counter() - t0, 3)
    out["speedup"] = round(out["fit_s_graphs_off"] / out["fit_s_graphs_auto"], 2)
    a, b = results["off"], results["auto"]
    out["same_status_and_steps"] = [(r.status, r.steps) for r in a] == [(r.status, r.steps) for r in b]
    diffs = [abs(ra.metrics[k] - rb.metrics[k]) for ra, rb in zip(a, b) for k in ra.metrics
             if k in rb.metrics and math.isfinite(ra.metrics[k]) and math.isfinite(rb.metrics[k])]
    out["max_final_metric_diff"] = max(diffs, default=None)
    return out


def section_cuda_graphs(rep, clock, args, torch, cuda, device, timed) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        workloads = [w for w in fit_workloads(args.smoke, tmp) if not w.get("hf")]
    except Exception as e:  # noqa: BLE001
        rep.add("cuda_graphs", {"name": "workloads", "status": "error", "reason": f"{type(e).__name__}: {e}"})
        return
    for w in workloads:
        run_case(rep, clock, "cuda_graphs", f"step: {w['name']}",
                 lambda w=w: graph_case(torch, cuda, device, w["members"], timed), min_s=3.0)
        run_case(rep, clock, "cuda_graphs", f"fit: {w['name']}",
                 lambda w=w: fit_graphs_case(torch, cuda, device, w["members"]), min_s=5.0)


# ------------------------------------------------------------------------------------------------ markdown
def _f(v, fmt="{:.3f}"):
    if v is None or isinstance(v, bool):
        return "-" if v is None else str(v).lower()
    return fmt.format(v) if isinstance(v, (int, float)) else str(v)


def render_md(doc: dict) -> str:
    m, S = doc["meta"], doc["sections"]
    lines = [f"# gpu_check — {m.get('device')} — {m.get('date')}", "",
             f"torch {m['versions'].get('torch')}, triton {m['versions'].get('triton')}, commit {m.get('commit', '')[:10]}"
             f", smoke={m.get('smoke')}, budget {m.get('budget_s')} s, elapsed {m.get('elapsed_s', '-')} s", "",
             "| section | status | wall s | cases |", "|---|---|---:|---|"]
    for name, sec in S.items():
        counts: dict[str, int] = {}
        for c in sec.get("cases", []):
            counts[c["status"]] = counts.get(c["status"], 0) + 1
        lines.append(f"| {name} | {sec.get('status')} | {_f(sec.get('wall_s'), '{:.1f}')} | "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(counts.items()))} |")
    lines.append("")
    cases = S.get("kernel_tests", {}).get("cases", [])
    if cases:
        counts = {s: sum(c["status"] == s for c in cases) for s in ("pass", "ok", "fail", "error", "timeout", "skipped")}
        lines += ["## Kernel tests on the device", "", " · ".join(f"{k} {v}" for k, v in counts.items() if v), ""]
        bad = [c for c in cases if c["status"] not in ("pass", "ok")]
        lines += [f"* {c['status']}: {c['name']} — {str(c.get('reason', ''))[:200]}" for c in bad[:40]]
        lines += ["", "| built-in check | dtype | max error | tol | status |", "|---|---|---:|---:|---|"]
        lines += [f"| {c['name']} | {c.get('dtype', '')} | {_f(c.get('max_err'), '{:.2g}')} | {_f(c.get('tol'), '{:g}')} | "
                  f"{c['status']} |" for c in cases if c.get("source") == "built-in"]
        lines.append("")
    cases = S.get("kernel_bench", {}).get("cases", [])
    if cases:
        comp = {c["name"].removesuffix(" | compile"): c for c in cases if c.get("pass") == "compile"}
        lines += ["## Kernels: one training step, median ms", ""]
        lines += [f"* {c['name']}: {c['status']} — {c.get('reason', '')}" for c in cases if not c.get("kernel")]
        lines += ["",
                  "| kernel | workload | dtype | triton | ref | bmm / torch | compile | ref/triton | compile/triton | "
                  "compile s | fell back | max rel err | status |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
        for c in cases:
            if c.get("pass") == "compile" or not c.get("kernel"):
                continue
            ms, cc = c.get("ms", {}), comp.get(c["name"], {})
            t, tc = ms.get("triton"), cc.get("ms", {}).get("compile")
            notes = [f"{c['status']}: {str(c.get('reason'))[:100]}" if c.get("reason") else c["status"]]
            if cc.get("reason"):
                notes.append(f"compile {cc['status']}: {str(cc['reason'])[:100]}")
            lines.append(f"| {c.get('kernel', c['name'])} | {c.get('workload', '')} | {c.get('dtype', '')} | "
                         f"{_f(t)} | {_f(ms.get('ref'))} | {_f(ms.get('bmm', ms.get('torch_adamw')))} | {_f(tc)} | "
                         f"{_f(ms['ref'] / t if t and ms.get('ref') else None, '{:.2f}x')} | "
                         f"{_f(tc / t if t and tc else None, '{:.2f}x')} | {_f(cc.get('compile_s'), '{:.1f}')} | "
                         f"{_f(cc.get('fell_back_to_eager'))} | {_f(c.get('max_rel_err'), '{:.2g}')} | "
                         f"{'; '.join(notes)} |")
        lines.append("")
    cases = S.get("fit", {}).get("cases", [])
    if cases:
        lines += ["## Packed fit vs one member at a time", "",
                  "| workload | E | steps | packed runs/min | alone runs/min | ratio | packed peak MiB | alone peak MiB | "
                  "loss diff | status |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        lines += [f"| {c['name']} | {_f(c.get('E'), '{}')} | {_f(c.get('steps'), '{}')} | "
                  f"{_f(c.get('packed_runs_per_min'), '{:.1f}')} | {_f(c.get('alone_runs_per_min'), '{:.1f}')} | "
                  f"{_f(c.get('ratio'), '{:.2f}x')} | {_f(c.get('packed_peak_mib'), '{:.1f}')} | "
                  f"{_f(c.get('alone_peak_mib'), '{:.1f}')} | {_f(c.get('final_train_loss_max_abs_diff'), '{:.2g}')} | "
                  f"{c['status']}{': ' + str(c.get('reason'))[:120] if c.get('reason') else ''} |" for c in cases]
        lines.append("")
    cases = S.get("cuda_graphs", {}).get("cases", [])
    if cases:
        lines += ["## CUDA graphs", "", "| case | eager step ms | graph step ms | speed-up | fit off/auto s | "
                  "same status+steps | max final metric diff | status |", "|---|---:|---:|---:|---|---|---:|---|"]
        lines += [f"| {c['name']} | {_f(c.get('eager_ms'))} | {_f(c.get('graph_ms'))} | {_f(c.get('speedup'), '{:.2f}x')} | "
                  f"{_f(c.get('fit_s_graphs_off'))} / {_f(c.get('fit_s_graphs_auto'))} | "
                  f"{_f(c.get('same_status_and_steps'))} | {_f(c.get('max_final_metric_diff'), '{:.2g}')} | "
                  f"{c['status']}{': ' + str(c.get('reason'))[:160] if c.get('reason') else ''} |" for c in cases]
        lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    torch, cuda = setup_environment(args)
    device = torch.device("cuda" if cuda else "cpu")
    rep = Report(Path(args.out), metadata(torch, cuda, args))
    clock = Clock(args.budget_s, args.case_s)
    timed = timer(torch, cuda, args.smoke)
    runners = {"kernel_tests": lambda: section_kernel_tests(rep, clock, args, torch, cuda, device),
               "kernel_bench": lambda: section_kernel_bench(rep, clock, args, torch, cuda, device, timed),
               "fit": lambda: section_fit(rep, clock, args, torch, cuda, device),
               "cuda_graphs": lambda: section_cuda_graphs(rep, clock, args, torch, cuda, device, timed)}
    for name in SECTIONS:
        sec = rep.section(name)
        if name not in args.sections:
            sec.update(status="skipped", reason="not in --sections")
            rep.write()
            continue
        clock.start_section(name)
        t0 = time.monotonic()
        try:
            runners[name]()
            sec["status"] = "done"
        except Exception as e:  # noqa: BLE001 - a broken section is recorded; the next one runs
            sec.update(status="error", reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-1500:])
        sec["wall_s"] = round(time.monotonic() - t0, 1)
        rep.doc["meta"]["elapsed_s"] = round(clock.elapsed(), 1)
        rep.write()
        print(f"gpu_check: {name} {sec['status']} in {sec['wall_s']} s ({len(sec['cases'])} cases)", flush=True)
    print(f"gpu_check: wrote {rep.out / 'gpu_check.json'} and gpu_check.md in {clock.elapsed():.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
