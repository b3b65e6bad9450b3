"""Time to build and validate the member configs of a large sweep: every point x seed of sweeps/ftc_capacity.yaml
over the first RUNGS values of its capacity ladder (36 groups x 3 seeds x RUNGS members), through the one typed
boundary (`sweeps.grid.build_member` -> `ftcore.config.member_from_dict`). Prints members per second and a digest of
the run_ids, so two checkouts can be compared with farm-bench and checked to build the same ids:

    git worktree add /tmp/old <commit>
    farm-bench -n 3 --timeout 300 \
        --vs "sh -c 'cd /tmp/old && PYTHONPATH=/tmp/old exec $PWD/.venv/bin/python $PWD/benchmarks/bench_spec_build.py'" \
        -- .venv/bin/python benchmarks/bench_spec_build.py

Measured 2026-12-07 (2 cores, busy): 91 us per member here vs 1802 us at 7a8c42e (before the typed boundary),
whole process 3.0 s vs 15.7 s wall (farm-bench A/B median 0.19), the same run_ids digest 151f57597622.
"""
import hashlib
import sys
import time

from sweeps.spec import build_member, load_spec

RUNGS = int(sys.argv[1]) if len(sys.argv) > 1 else 64

spec = load_spec("sweeps/ftc_capacity.yaml")
ladder = spec.search.ladder_values()[:RUNGS]
work = [({**p, spec.search.param: v}, s) for p in spec.grid_points() for v in ladder for s in spec.seed_list()]
t0 = time.perf_counter()
ids = [build_member(spec, point, seed).run_id() for point, seed in work]
dt = time.perf_counter() - t0
digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
print(f"{len(work)} members in {dt:.2f}s ({len(work) / dt:.0f}/s, {1e6 * dt / len(work):.0f} us each); run_ids {digest}")
