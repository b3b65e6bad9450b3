"""Top-level names must resolve to this repository (PyPI has `sweeps`, `analysis`; HF's `kernels` — a transformers
dependency — is why ours is `ftkernels`). And layering:
ftcore imports no Ray; analysis imports none of ftcore/sweeps/ftkernels/torch/ray."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["ftcore", "ftkernels", "sweeps", "analysis"])
def test_packages_resolve_to_this_repo(name):
    mod = __import__(name)
    assert Path(mod.__file__).resolve().parent == ROOT / name


def test_ftcore_has_no_ray():
    code = "import sys, ftcore, ftcore.fit; print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
