"""Layering (DESIGN.md §2): analysis reads Parquet only and imports no torch, ray, ftcore, sweeps, ftkernels."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import analysis

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "ray", "ftcore", "sweeps", "ftkernels", "triton", "optuna")


def test_analysis_resolves_to_this_repository():
    assert Path(analysis.__file__).resolve().parent == ROOT / "analysis"


def test_no_forbidden_imports_in_source():
    """Every import statement, including ones inside functions, names only allowed top-level modules."""
    for path in sorted((ROOT / "analysis").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_full_report_loads_no_forbidden_module(tmp_path):
    code = f"""
import json, sys
import pandas as pd
import analysis
from analysis.synthetic import capacity_runs, rank_runs, write_parts
write_parts(pd.concat([capacity_runs(ns=(8, 16, 32)), rank_runs(ranks=[7, 8])]), {str(tmp_path)!r})
analysis.write_report({str(tmp_path)!r}, n_boot=20)
print(json.dumps(sorted(sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    modules = set(json.loads(out.stdout.strip().splitlines()[-1]))
    loaded = {m.split(".")[0] for m in modules}
    assert not loaded & set(FORBIDDEN), loaded & set(FORBIDDEN)
    assert {"analysis", "pyarrow", "matplotlib"} <= loaded
    assert "matplotlib.pyplot" not in modules  # figures via matplotlib.figure: no global backend switch
