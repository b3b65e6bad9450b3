"""Building member configs for a 2,000-run sweep: `sweeps.spec._typed` memoized (seeds of a grid point share
their typed sections) vs not, side by side in one run, checking both give the same run_ids.

    .venv/bin/python benchmarks/bench_spec_build.py
"""
import time

import sweeps.spec as S

spec = S.load_spec("tests/load_sweep.yaml", ["seeds=500"])
pairs = [(p, s) for p in spec.grid_points() for s in spec.seed_list()]
def build(): return [S.build_member(spec, p, s) for p, s in pairs]
S._TYPED_CACHE.clear(); t0 = time.perf_counter(); a = build(); warm = time.perf_counter() - t0
S._typed = lambda d: {**d, **S._typed_sections(d)}          # no memo
t0 = time.perf_counter(); b = build(); cold = time.perf_counter() - t0
assert [m.run_id() for m in a] == [m.run_id() for m in b]
print(f"{len(pairs)} members: unmemoized {cold:.2f}s, memoized {warm:.2f}s, ratio {cold/warm:.0f}x, same run_ids")
