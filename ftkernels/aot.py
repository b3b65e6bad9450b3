"""Ahead-of-time compilation of the Triton kernels for an H100 (sm_90) on a machine with no GPU, and the check
that every build the sweeps will launch fits the chip.

`triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))` runs the whole pipeline down to a cubin with
the bundled ptxas (DESIGN.md §6), so dot-shape errors, bad layouts and unsupported ops show up in CI.

What is compiled is what the JIT would compile: each op declares `aot_calls()` — its launchers run at the shipped
sweeps' shapes (and at shapes that reach every tile configuration) on `meta` tensors — and `capture()` intercepts
every launch, binding its arguments with Triton's own specialiser for an sm_90 target: ints equal to 1 become
constexprs, pointers and ints divisible by 16 get `tt.divisibility=16`, exactly the signature, constexprs and
attrs a GPU run builds. The distinct builds are compiled and checked:
* no register spills: ptxas's spill counts (Triton fills `n_spills` only when a binary is loaded on a GPU, so the
  bundled `ptxas -v` runs on the PTX once more and its resource line is parsed);
* shared memory within sm_90's limit: `metadata.shared` ≤ 227 KiB usable per block (228 KiB per SM).
`python -m ftkernels.aot [module ...]` prints one line per build and exits 1 if any fails. Nothing here is on
the training path.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ftkernels.aot_calls import PRECISIONS, at_precision, backward, meta  # noqa: F401  (the ops' helpers)

SM90 = 90
H100_SMS = 132                      # streaming multiprocessors of an H100 SXM: the launchers' grid heuristics
SMEM_LIMIT = 227 * 1024             # bytes of shared memory one block may use on sm_90 (228 KiB per SM)
OPS = ("ftkernels.lora_linear", "ftkernels.packed_mlp", "ftkernels.multi_adamw", "ftkernels.selective_scan")


@dataclass
class CompileReport:
    name: str
    registers: int
    spill_stores: int         # bytes
    spill_loads: int          # bytes
    shared: int               # bytes of shared memory

    @property
    def spills(self) -> int:
        return self.spill_stores + self.spill_loads

    def problems(self, smem_limit: int = SMEM_LIMIT) -> list[str]:
        """Why this build would not run as intended on an H100: [] when it is fine."""
        out = []
        if self.spills:
            out.append(f"register spills ({self.spill_stores}B stored, {self.spill_loads}B loaded)")
        if self.shared > smem_limit:
            out.append(f"shared memory {self.shared}B > sm_90 limit {smem_limit}B")
        return out

    def __str__(self) -> str:
        return (f"{self.name}: {self.registers} regs, spills {self.spill_stores}B st / {self.spill_loads}B ld, "
                f"{self.shared}B smem")


@dataclass
class Build:
    """One JIT specialisation of a kernel: what `triton.compile` needs, as the JIT derives it."""
    fn: object
    signature: dict
    constexprs: dict
    attrs: dict
    num_warps: int = 4
    num_stages: int = 3
    sites: list[str] = field(default_factory=list)      # the aot_calls labels that launch it

    def key(self) -> str:
        return repr((self.fn.__name__, sorted(self.signature.items()), sorted(self.constexprs.items(), key=str),
                     sorted(self.attrs.items(), key=str), self.num_warps, self.num_stages))


def _ptxas_resources(ptx: str, arch: int) -> tuple[int, int, int]:
    from triton.backends.nvidia.compiler import get_ptxas
    ptxas = get_ptxas(arch).path
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        out = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}a", str(src), "-o", str(Path(d) / "k.cubin")],
                             capture_output=True, text=True, check=True)
    log = out.stderr + out.stdout
    regs = int(re.search(r"Used (\d+) registers", log).group(1))
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return regs, int(spill.group(1)), int(spill.group(2))


def compile_sm90(fn, signature: dict[str, str], constexprs: dict, num_warps: int = 4,
                 num_stages: int = 3, attrs: dict | None = None) -> CompileReport:
    """Compile `fn` (a @triton.jit function) for sm_90 and report registers, spills and shared memory.

    signature: every argument name -> Triton type ("*fp32", "i32", "constexpr", ...); constexprs: values of the
    constexpr arguments (by name or by the JIT's (index,) path); attrs: the JIT's specialisation hints
    ({(index,): [["tt.divisibility", 16]]}). Raises on any compile error."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", SM90, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    regs, st, ld = _ptxas_resources(compiled.asm["ptx"], SM90)
    names = fn.arg_names
    ce = {(names[k[0]] if isinstance(k, tuple) else k): v for k, v in constexprs.items()}
    aligned = sum(1 for v in (attrs or {}).values() if v)
    ptrs = sorted({t for t in signature.values() if t.startswith("*")})
    name = (f"{fn.__name__}[{', '.join(f'{k}={v}' for k, v in ce.items())}, warps={num_warps}, "
            f"stages={num_stages}, {aligned} aligned, {'/'.join(ptrs)}]")
    return CompileReport(name, regs, st, ld, int(compiled.metadata.shared))


@contextlib.contextmanager
def capture(sms: int = H100_SMS):
    """Inside the block every Triton launch is recorded as a `Build` (bound by Triton's specialiser for sm_90)
    instead of run, and the lora launchers plan their grids for an `sms`-SM GPU. Yields the list of builds.
    Needs the JIT (TRITON_INTERPRET unset); the launchers' outputs are left unwritten (use meta tensors)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    from ftkernels import lora_linear

    backend = make_backend(GPUTarget("cuda", SM90, 32))
    binders: dict[int, object] = {}
    builds: list[Build] = []

    def run(self, *args, grid, warmup, **kwargs):
        if id(self) not in binders:
            binders[id(self)] = create_function_from_signature(self.signature, self.params, backend)
        bound, spec, opts = binders[id(self)](*args, **kwargs)
        options, signature, constexprs, attrs = self._pack_args(backend, kwargs, bound, spec, opts)
        builds.append(Build(self, signature, constexprs, attrs, options.num_warps, options.num_stages))

    saved_run, saved_sms = JITFunction.run, lora_linear._SMS_OFF_GPU
    JITFunction.run, lora_linear._SMS_OFF_GPU = run, sms
    try:
        yield builds
    finally:
        JITFunction.run, lora_linear._SMS_OFF_GPU = saved_run, saved_sms


def builds_of(mod_name: str) -> list[Build]:
    """The distinct builds `mod_name`'s `aot_calls()` launch, in first-launch order, each with its call labels."""
    mod = importlib.import_module(mod_name)
    seen: dict[str, Build] = {}
    for label, call in mod.aot_calls():
        with capture() as builds:
            call()
        for b in builds:
            seen.setdefault(b.key(), b).sites.append(label)
    return list(seen.values())


def check_build(b: Build) -> CompileReport:
    return compile_sm90(b.fn, b.signature, b.constexprs, b.num_warps, b.num_stages, b.attrs)



@functools.cache
def _builds(mod_name: str) -> tuple[Build, ...]:
    return tuple(builds_of(mod_name))


def _check_lines(mod_name: str, indices: list[int]) -> list[tuple[int, bool, str]]:
    """(index, failed, line) for these builds of `mod_name` (run in a worker process: builds hold JIT functions,
    which do not pickle, so each worker captures the module's builds itself)."""
    out = []
    for i in indices:
        b = _builds(mod_name)[i]
        try:
            rep = check_build(b)
            why = rep.problems()
        except Exception as exc:  # noqa: BLE001 — report every failing build, not just the first
            rep, why = None, [f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"]
        what = rep if rep is not None else b.fn.__name__
        out.append((i, bool(why), f"{'FAIL' if why else 'ok  '} {mod_name} {what}"
                    f"{' — ' + '; '.join(why) if why else ''} (from {', '.join(sorted(set(b.sites))[:3])})"))
    return out


def main() -> int:
    """`python -m ftkernels.aot [module ...]`: compile and check every build of each op (all of OPS by default),
    on up to 4 processes.

    Must run with TRITON_INTERPRET unset (the interpreter replaces @triton.jit at import time). Prints
    `ok   <module> <report>` or `FAIL <module> <kernel>: <why>` per build and `builds <module> <n>` per module;
    exit 1 if any build fails to compile, spills or needs more shared memory than sm_90 has."""
    import multiprocessing
    import os
    import sys
    import warnings
    from concurrent.futures import ProcessPoolExecutor
    warnings.filterwarnings("ignore")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("ftkernels.aot: unset TRITON_INTERPRET to compile", file=sys.stderr)
        return 2
    workers = max(1, min(4, os.cpu_count() or 1))
    failed = 0
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for mod_name in sys.argv[1:] or OPS:
            n = len(_builds(mod_name))
            parts = [list(range(w, n, workers)) for w in range(workers)]
            results = sorted(r for part in pool.map(_check_lines, [mod_name] * workers, parts) for r in part)
            for _, bad, line in results:
                failed += bad
                print(line, flush=True)
            print(f"builds {mod_name} {n}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
