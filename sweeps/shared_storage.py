"""Fail early when a multi-node Ray cluster would write a sweep's parts to node-local disks.

Each trial writes its own Parquet parts into OUT from whichever node runs it (DESIGN.md §4). With a plain
path for OUT that is only correct if every node sees the same directory (NFS, a shared volume). Without
that the parts end up scattered across nodes and the sweep "succeeds" with most runs missing, noticed
only at the end (ray#37177). So before the first trial: write a marker file into OUT here, and ask every
alive node with CPUs (a zero-CPU task pinned to it) whether it can read that marker back.

Nodes that join later (autoscaled GPU workers) are not probed: give them the same mount, or use a URI
(s3://...), which every node reaches through pyarrow.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sweeps.storage import is_uri


@ray.remote(num_cpus=0)
def _sees(marker: str, token: str) -> bool:
    try:
        return Path(marker).read_text() == token
    except OSError:
        return False


def unshared_nodes(out: str, timeout_s: float = 120) -> list[str]:
    """Addresses of the alive CPU nodes that do not see local directory `out` (empty: shared, or one node,
    or `out` is a URI)."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    if is_uri(out) or len(nodes) < 2:
        return []
    token = secrets.token_hex(8)
    marker = Path(out) / f".ftcore-shared-{token}"      # hidden: no reader of DIR lists it
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(token)
    try:
        refs = [_sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(marker), token) for n in nodes]
        seen = ray.get(refs, timeout=timeout_s)
    finally:
        marker.unlink(missing_ok=True)
    return [f"{n.get('NodeManagerAddress', '?')} ({n['NodeID'][:8]})" for n, ok in zip(nodes, seen) if not ok]
