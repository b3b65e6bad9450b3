"""The run_ids a grid sweep implies, every grid point × seed, built as the grid search builds them but without
training: the set that the fault, job and load tests compare their recorded runs against."""
from pathlib import Path

from sweeps.spec import build_member, load_spec


def grid_run_ids(path: Path | str, overrides=()) -> list[str]:
    s = load_spec(path, list(overrides))
    return [build_member(s, point, seed).run_id() for point in s.grid_points() for seed in s.seed_list()]


def pinned_run_ids(path: Path | str, overrides=()) -> list[str]:
    """Every grid point x seed (a capacity ladder at its first, middle and last value), in grid order: the ids that
    tests/test_run_id_pin.py compares with the pinned ones."""
    s = load_spec(path, list(overrides), limits=False)
    extra = [{}]
    if s.search.kind == "capacity":
        lad = s.search.ladder_values()
        extra = [{s.search.param: x} for x in (lad[0], lad[len(lad) // 2], lad[-1])]
    return [build_member(s, {**pt, **e}, seed).run_id() for pt in s.grid_points() for e in extra for seed in s.seed_list()]
