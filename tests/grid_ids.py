"""The run_ids a grid sweep implies, every grid point × seed, built as the grid search builds them but without
training: the set that the fault, job and load tests compare their recorded runs against."""
from pathlib import Path

from sweeps.spec import build_member, load_spec


def grid_run_ids(path: Path | str, overrides=()) -> list[str]:
    s = load_spec(path, list(overrides))
    return [build_member(s, point, seed).run_id() for point in s.grid_points() for seed in s.seed_list()]
