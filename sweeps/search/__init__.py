"""Searches over a sweep's grid. `sweeps.search.kinds` registers every kind (import SEARCHES and make_search from
there); this package's own import loads nothing, so `sweeps.search.config` can be imported by the sweep schema."""
