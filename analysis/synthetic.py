"""Synthetic sweep records with a known answer, in the record contract's shape (DESIGN.md §4).

For tests, docs and trying the report without training anything ("fits are tested by recovering
known exponents from synthetic data", DESIGN.md §5).

`capacity_runs`: for curve d and problem size N, seed s has its own threshold

    m*_s = c_d * N^{b_d} * exp(sigma * eps_s),   eps_s ~ N(0, 1),

and a run at capacity m succeeds iff m >= m*_s (a run may also diverge with probability p_diverge:
status "diverged", NaN metrics). The probes follow the capacity search: doubling from `lo` until the
quorum passes (or `hi` is reached), then integer bisection between the last failing and the first
passing value. With sigma = 0 the threshold is exactly max(lo, ceil(c_d N^{b_d})) when <= hi.

`rank_runs`: a Zeng & Lee rank sweep: the construction's relative MSE is (1 - R/R*)^2 below the
theory rank R* and ~1e-10 from R* on; gradient runs have an lr/wd-dependent floor, one setting
diverges on one seed.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.thresholds import passes


def _run_id(row: dict) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _base(sweep: str, seed: int, status: str) -> dict:
    return {"sweep": sweep, "trial_id": "t0", "round": 0, "seed": seed, "status": status, "n_trainable": 0,
            "wall_s": 0.1, "steps": 100, "kernels_impl": "torch_ref", "schema_version": 1}


def capacity_runs(*, sweep: str = "syn_capacity", ns=(8, 16, 32, 64, 128), curves=None, seeds: int = 3,
                  sigma: float = 0.0, quorum: float = 0.67, lo: int = 1, hi: int = 1024, p_diverge: float = 0.0,
                  k_ratio: float = 2.0, theory: dict | None = None, curve_col: str = "adapter.depth",
                  param: str = "adapter.width", rng=0) -> pd.DataFrame:
    """Rows of an adaptive capacity sweep; curves = {curve value: (c, b)} (default {2: (1.5, 1), 3: (3, .5)})."""
    curves = curves or {2: (1.5, 1.0), 3: (3.0, 0.5)}
    rng = np.random.default_rng(rng)
    theory = {f"{curve_col}={d}": b for d, (_, b) in curves.items()} if theory is None else theory
    meta = {"search.kind": "capacity", "search.param": param, "search.success": "fit/success",
            "search.quorum": quorum, "search.ladder_size": hi - lo + 1, "report.kind": "capacity", "report.x": "task.n",
            "report.curve_by": curve_col,
            "report.panel_by": "", "report.theory": json.dumps(theory), "report.y": "", "report.select": ""}
    rows = []
    for d, (c, b) in curves.items():
        for n in ns:
            m_s = c * n ** b * np.exp(sigma * rng.standard_normal(seeds))
            group = f"{curve_col}={d},task.n={n}"

            def probe(m: int, m_s=m_s, n=n, d=d, group=group) -> bool:
                ok = 0
                for s in range(seeds):
                    diverged = rng.random() < p_diverge
                    success = (not diverged) and m >= m_s[s]
                    ok += success
                    cfg = {"task.name": "ftc_relabel", "task.n": n, "task.k": int(k_ratio * n), "task.dim": 8,
                           "task.tol": 1e-3, "adapter.name": "additive_relu", param: m, curve_col: d,
                           "train.method": "adam", "train.lr": 3e-3, "train.steps": 3000, "seed": s}
                    rows.append({**_base(sweep, s, "diverged" if diverged else "ok"), **cfg, "group": group,
                                 "run_id": _run_id({**cfg, "sweep": sweep}),
                                 "fit/max_err": math.nan if diverged else (1e-4 if success else 0.5),
                                 "fit/success": None if diverged else bool(success),
                                 "train/loss": math.nan if diverged else (1e-8 if success else 0.1), **meta})
                return bool(passes(ok / seeds, quorum))

            m, last_fail = lo, None
            while not probe(m):
                last_fail = m
                if m >= hi:
                    break
                m = min(2 * m, hi)
            else:
                while last_fail is not None and m - last_fail > 1:
                    mid = (m + last_fail) // 2
                    if probe(mid):
                        m = mid
                    else:
                        last_fail = mid
    return pd.DataFrame(rows)


def rank_runs(*, sweep: str = "syn_rank", width: int = 16, depth: int = 2, target_depth: int = 1,
              ranks=range(1, 17), lrs=(1e-2, 1e-3), wds=(0.0, 1e-3), seeds: int = 3, rng=0) -> pd.DataFrame:
    """Rows of a rank-curve sweep (panels task.pretrained False/True, curves adam/construction)."""
    rng = np.random.default_rng(rng)
    r_star = math.ceil(width * target_depth / depth)
    meta = {"search.kind": "grid", "search.param": "", "search.success": "", "search.quorum": math.nan,
            "report.kind": "rank_curve", "report.x": "adapter.rank", "report.curve_by": "train.method",
            "report.panel_by": "task.pretrained", "report.theory": "{}", "report.y": "test/mse",
            "report.select": "val/mse"}
    rows = []
    for pre in (False, True):
        base = 0.01 if pre else 0.05
        for method in ("construction", "adam"):
            settings = [(1e-2, 0.0)] if method == "construction" else [(lr, wd) for lr in lrs for wd in wds]
            for r in ranks:
                for lr, wd in settings:
                    for s in range(seeds):
                        noise = math.exp(0.1 * rng.standard_normal())
                        if method == "construction":
                            rel = (1 - r / r_star) ** 2 * noise if r < r_star else 1e-10 * noise
                        else:  # the best setting (lr 1e-3, wd 0) has the lowest floor
                            floor = 0.02 * (1 + 4 * (lr != 1e-3) + 2 * (wd != 0.0))
                            rel = (max(1 - r / r_star, 0) ** 2 + floor) * noise
                        diverged = method == "adam" and lr == 1e-2 and wd != 0.0 and s == 0
                        cfg = {"task.name": "lora_teacher", "task.pretrained": pre, "task.target_depth": target_depth,
                               "model.width": width, "model.depth": depth, "adapter.name": "lora", "adapter.rank": r,
                               "train.method": method, "train.lr": lr, "train.weight_decay": wd,
                               "train.steps": 0 if method == "construction" else 5000, "seed": s}
                        mse = math.nan if diverged else rel * base
                        rows.append({**_base(sweep, s, "diverged" if diverged else "ok"), **cfg,
                                     "run_id": _run_id({**cfg, "sweep": sweep}),
                                     "group": f"adapter.rank={r},train.lr={lr},train.weight_decay={wd}",
                                     "test/mse": mse, "val/mse": mse * 1.05 if mse == mse else mse,
                                     "test/mse_rel": math.nan if diverged else rel, "test/mse_base": base, **meta})
    return pd.DataFrame(rows)


def write_parts(df: pd.DataFrame, dir: str | Path, table: str = "runs", n_parts: int = 2) -> list[Path]:
    """Write `df` as DIR/<table>/part-0000k.parquet, rows dealt round-robin; each part drops its all-null
    columns, so parts have different column sets as a real sink's would."""
    out = Path(dir) / table
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n_parts):
        part = df.iloc[k::n_parts].dropna(axis=1, how="all").reset_index(drop=True)
        path = out / f"part-{k:05d}.parquet"
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), path)
        paths.append(path)
    return paths


def curves_for(runs: pd.DataFrame, steps=(0, 50, 100)) -> pd.DataFrame:
    """A curves table for `runs`: train/loss = exp(-step / 50) per run."""
    return pd.DataFrame([{"run_id": rid, "step": st, "train/loss": math.exp(-st / 50)}
                         for rid in runs["run_id"] for st in steps])
