"""Ahead-of-time compilation of a Triton kernel for an H100 (sm_90) on a machine with no GPU.

`triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))` runs the whole pipeline down to a
cubin with the bundled ptxas (DESIGN.md §6), so dot-shape errors, bad layouts and unsupported ops show up
in CI. Registers and spills are not in the compiled metadata until the binary is loaded on a device, so we
run the bundled `ptxas -v` on the PTX once more and parse its resource line. Used by the kernel tests
(every kernel configuration) and nowhere on the training path.
"""
from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SM90 = 90


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

    def __str__(self) -> str:
        return (f"{self.name}: {self.registers} regs, spills {self.spill_stores}B st / {self.spill_loads}B ld, "
                f"{self.shared}B smem")


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


def compile_sm90(fn, signature: dict[str, str], constexprs: dict[str, object], num_warps: int = 4,
                 num_stages: int = 3, attrs: dict | None = None) -> CompileReport:
    """Compile `fn` (a @triton.jit function) for sm_90 and report registers and spills.

    signature: every argument name -> Triton type ("*fp32", "*fp16", "*bf16", "i32", "fp32", "constexpr");
    constexprs: values for the constexpr arguments; attrs: specialisation hints as the JIT derives them
    for aligned arguments ({(arg index,): [["tt.divisibility", 16]]}), so the report describes the build a
    GPU gets for 16-aligned shapes. Raises on any compile error.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", SM90, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    regs, st, ld = _ptxas_resources(compiled.asm["ptx"], SM90)
    ptrs = sorted({t for t in signature.values() if t.startswith("*")})
    name = f"{fn.__name__}[{', '.join(f'{k}={v}' for k, v in constexprs.items())}, warps={num_warps}, {'/'.join(ptrs)}]"
    return CompileReport(name, regs, st, ld, int(compiled.metadata.shared))


OPS = ("ftkernels.lora_linear", "ftkernels.packed_mlp", "ftkernels.multi_adamw", "ftkernels.selective_scan")


def main() -> int:
    """`python -m ftkernels.aot`: compile every configuration each op declares in `aot_configs()` for sm_90.

    Must run with TRITON_INTERPRET unset (the interpreter replaces @triton.jit at import time). Prints one
    line per configuration; exit 1 if any fails to compile.
    """
    import importlib
    import os
    import sys
    import warnings
    warnings.filterwarnings("ignore")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("ftkernels.aot: unset TRITON_INTERPRET to compile", file=sys.stderr)
        return 2
    failed = 0
    for mod_name in sys.argv[1:] or OPS:
        for cfg in importlib.import_module(mod_name).aot_configs():
            try:
                rep = compile_sm90(cfg["fn"], cfg["signature"], cfg["constexprs"], cfg.get("num_warps", 4),
                                   cfg.get("num_stages", 3), cfg.get("attrs"))
                print(f"ok    {mod_name} {rep}", flush=True)
            except Exception as exc:  # noqa: BLE001 — report every failing configuration, not just the first
                failed += 1
                print(f"FAIL  {mod_name} {cfg['fn'].__name__} {cfg['constexprs']}: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
