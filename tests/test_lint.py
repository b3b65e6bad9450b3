"""`ruff check` over the repository, with the rules and limits of pyproject.toml's [tool.ruff] (pyflakes' undefined
names and unused imports, import order, bugbear, pyupgrade for Python 3.10): one lint, the same here and in CI."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def ruff() -> str:
    """The ruff of this environment (the `test` extra installs it beside this Python), else one on PATH."""
    here = Path(sys.executable).parent / "ruff"
    found = str(here) if here.exists() else shutil.which("ruff")
    assert found, 'ruff is not installed: pip install -e ".[test]"'
    return found


def test_ruff_check_passes():
    r = subprocess.run([ruff(), "check", "--no-cache", "--output-format", "concise", "."], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"ruff check found problems (run `ruff check .`):\n{r.stdout[-8000:]}{r.stderr[-2000:]}"
