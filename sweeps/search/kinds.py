"""Every search kind, registered: `SEARCHES` maps `search.kind` to its round search (grid, capacity, optuna)."""
from sweeps.search import capacity_driver, grid, optuna_search  # noqa: F401  (register the kinds)
from sweeps.search.base import SEARCHES, RoundSearch, make_search  # noqa: F401
