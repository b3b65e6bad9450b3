"""Every third-party module the code imports is declared (issue 15, item 7): the packages' imports among
`dependencies`, the tests' also in the `test` extra, the benchmarks' also in `bench`; and every declared
package's installed version satisfies its bounds and the pin of constraints.txt (the tested set).
Modules map to distributions with importlib.metadata, as installed (`yaml` -> PyYAML, `google.protobuf` ->
protobuf); `pytest.importorskip("x")` counts as an import of x."""
import ast
import functools
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from importlib.util import find_spec
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")            # Python 3.11+ (CI's); the package itself supports 3.10

ROOT = Path(__file__).parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
FIRST_PARTY = {"ftcore", "ftkernels", "sweeps", "analysis", "tests", "benchmarks"}
SCOPES = {"ftcore": ("main",), "ftkernels": ("main",), "sweeps": ("main",), "analysis": ("main",),
          "tests": ("main", "test"), "benchmarks": ("main", "bench")}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(scope: str) -> set[str]:
    reqs = PROJECT["dependencies"] if scope == "main" else PROJECT["optional-dependencies"][scope]
    return {norm(Requirement(r).name) for r in reqs}


def imported(path: Path) -> set[str]:
    """Absolute imports of a file (dotted), and the modules it importorskip()s."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip" and node.args
              and isinstance(node.args[0], ast.Constant)):
            out.add(node.args[0].value)
    return out


def local(module: str, path: Path) -> bool:
    """Ours: a package of this repository, a module beside the importing file (tests' e2e, benchmarks' common), or
    for a test a benchmarks/ module (a benchmark's test puts benchmarks/ on sys.path: tests/test_bench_floor.py)."""
    top = module.split(".")[0]
    beside = (path.parent / f"{top}.py").exists() or (path.parent / top).is_dir()
    bench = path.parent.name == "tests" and (path.parent.parent / "benchmarks" / f"{top}.py").exists()
    return top in FIRST_PARTY or beside or bench


@functools.cache
def _top_level() -> dict[str, list[str]]:
    return packages_distributions()


def distributions_of(module: str) -> set[str]:
    """The installed distributions that provide `module`; for a namespace shared by several (`google`), the one
    whose files hold the submodule actually imported."""
    top = module.split(".")[0]
    dists = {norm(d) for d in _top_level().get(top, [])}
    if len(dists) > 1 and "." in module:
        spec = find_spec(".".join(module.split(".")[:2]))
        origin = Path(spec.origin if spec and spec.origin else next(iter(spec.submodule_search_locations))).resolve()
        dists = {d for d in dists if any(Path(f.locate()).resolve() == origin for f in distribution(d).files or [])}
    return dists


def third_party_imports() -> dict[tuple[str, str], set[Path]]:
    """(module, scope directory) -> files, for every import that is neither ours nor the standard library."""
    found: dict[tuple[str, str], set[Path]] = {}
    for scope in SCOPES:
        for path in (ROOT / scope).rglob("*.py"):
            for module in imported(path):
                if module.split(".")[0] in sys.stdlib_module_names or local(module, path):
                    continue
                found.setdefault((module, scope), set()).add(path.relative_to(ROOT))
    return found


def test_every_imported_package_is_declared():
    missing = []
    for (module, scope), files in sorted(third_party_imports().items()):
        dists = distributions_of(module)
        allowed = set().union(*(declared(s) for s in SCOPES[scope]))
        if not dists & allowed:
            missing.append(f"{module} ({', '.join(sorted(dists)) or 'not installed'}) imported by "
                           f"{', '.join(sorted(map(str, files))[:3])}: not in {' + '.join(SCOPES[scope])}")
    assert not missing, "\n".join(missing)


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[norm(name)] = version.strip()
    return pins


def test_constraints_pin_every_declared_package_within_its_bounds():
    pins = constraints()
    reqs = [Requirement(r) for r in PROJECT["dependencies"] + sum(PROJECT["optional-dependencies"].values(), [])]
    for req in reqs:
        name = norm(req.name)
        if req.marker is not None and not req.marker.evaluate():
            continue
        assert name in pins, f"{req.name} is declared but constraints.txt does not pin it"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt {req.name}=={pins[name]} ∉ {req}"


def test_this_environment_is_the_tested_set():
    """The venv running the tests holds the pinned versions (a local label such as torch's +cpu aside)."""
    off = []
    for name, version in constraints().items():
        try:
            have = distribution(name).version
        except PackageNotFoundError:
            continue                                 # pinned for another platform or an extra not installed
        if have.split("+")[0] != version:
            off.append(f"{name}: {have} installed, constraints.txt pins {version}")
    assert not off, "\n".join(off)
