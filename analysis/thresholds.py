"""Capacity thresholds from an adaptive capacity search, with a bootstrap over seeds.

For one cell (panel, curve, x) the search probed capacity values c_1 < ... < c_P, each with the same
seeds s = 1..S. With success indicators z_{p,s} (status ok AND the success metric true) the success
fraction is f_p = (1/S) sum_s z_{p,s}, and the threshold is

    m* = min { c_p : f_p >= q }          (q = search.quorum)

the smallest passing probe, even when a larger probe fails (the search assumes success is monotone
in c; `monotone` says whether the probes agree). No passing probe: m* is censored (NaN, m* > c_P).
`lower_censored`: the smallest probe already passes, so m* <= c_1 is only an upper bound.

Bootstrap: resample the seed set with replacement, s*_1..s*_S ~ U{1..S}, recompute f_p and m* on the
same probes, B times (numpy Generator seeded per cell, so a cell's interval does not depend on
which other cells exist). The interval is the (2.5, 97.5) percentile of the non-censored replicates;
the censored fraction is reported. Replicates are returned row-aligned for the power-law fit's CI.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from analysis.meta import canon, label, require, sort_cells

QUORUM_EPS = 0.01  # the same rule as the capacity search (sweeps/search/capacity.py): 0.67 means 2 of 3


def success_flags(runs: pd.DataFrame, success: str) -> pd.Series:
    """z = (status == ok) and success metric true; a missing/NaN metric counts as a failure."""
    if success not in runs.columns:
        raise ValueError(f"success column {success!r} (search.success) not in runs; have {sorted(runs.columns)[:20]}")
    z = runs[success].astype("boolean").fillna(False).astype(bool)
    if "status" in runs.columns:
        z &= runs["status"].astype(str).eq("ok")
    return z


def passes(frac, quorum: float):
    """The quorum rule f >= q − 0.01, so quorums written as rounded fractions (0.67, 0.33) mean 2/3, 1/3."""
    return np.asarray(frac) >= quorum - QUORUM_EPS


def first_passing(probes: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Smallest probe passing along axis 0 of `ok` (P, ...); NaN where none passes."""
    return np.where(ok.any(axis=0), probes[np.argmax(ok, axis=0)], np.nan)


def _bootstrap(z: np.ndarray, probes: np.ndarray, quorum: float, n_boot: int, rng) -> np.ndarray:
    """Replicate thresholds (B,) from the success matrix z (P, S) with NaN for unprobed (probe, seed)."""
    idx = rng.integers(0, z.shape[1], size=(n_boot, z.shape[1]))  # (B, S) resampled seed indices
    zb = z[:, idx]                                                # (P, B, S)
    have = ~np.isnan(zb)
    frac = np.where(have, zb, 0.0).sum(-1) / np.maximum(have.sum(-1), 1)  # (P, B)
    return first_passing(probes, passes(frac, quorum) & have.any(-1))


def cell_threshold(c: np.ndarray, seed: np.ndarray, z: np.ndarray, quorum: float,
                   n_boot: int = 1000, rng=None, level: float = 0.95) -> tuple[dict, np.ndarray]:
    """Threshold, bootstrap interval and diagnostics of one cell from per-run (capacity, seed, success)."""
    tab = pd.DataFrame({"c": c, "s": seed, "z": z.astype(float)}).pivot_table(
        index="c", columns="s", values="z", aggfunc="mean", dropna=False)
    probes = tab.index.to_numpy(dtype=float)
    zm = tab.to_numpy(dtype=float)                                # (P, S)
    frac = np.nanmean(zm, axis=1)
    ok = passes(frac, quorum)
    thr = float(first_passing(probes, ok[:, None])[0])
    reps = _bootstrap(zm, probes, quorum, n_boot, rng or np.random.default_rng(0)) if n_boot else np.empty(0)
    good = reps[np.isfinite(reps)]
    alpha = (1 - level) / 2
    censored = not ok.any()
    lo, hi = (np.percentile(good, [100 * alpha, 100 * (1 - alpha)]) if good.size and not censored
              else (np.nan, np.nan))
    row = {
        "threshold": thr, "ci_low": float(lo), "ci_high": float(hi),
        "boot_censored_frac": float(np.mean(~np.isfinite(reps))) if reps.size else np.nan,
        "n_seeds": int(zm.shape[1]), "n_probes": int(len(probes)), "n_runs": int(len(c)),
        "min_probe": float(probes[0]), "max_probe": float(probes[-1]),
        "censored": censored,
        "lower_censored": bool(ok[0]),
        "monotone": bool(np.all(np.diff(ok.astype(int)) >= 0)),
        "probes": " ".join(f"{canon(p)}:{int(np.nansum(r))}/{int(np.sum(~np.isnan(r)))}" for p, r in zip(probes, zm)),
    }
    return row, reps


def capacity_thresholds(runs: pd.DataFrame, *, param: str, success: str, quorum: float, x: str,
                        curve_by=(), panel_by=(), n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95, group_col: str = "group") -> tuple[pd.DataFrame, np.ndarray]:
    """Per cell (panel, curve, x): threshold m*, bootstrap CI and diagnostics.

    Returns (table, replicates): table has columns panel, curve, <panel_by>, <curve_by>, x, threshold,
    ci_low, ci_high, boot_censored_frac, n_seeds, n_probes, n_runs, min_probe, max_probe, censored,
    lower_censored, monotone, probes; replicates[i] (B,) are the bootstrap thresholds of table row i.
    """
    curve_by, panel_by = list(curve_by), list(panel_by)
    require(runs, [param], "search.param")
    require(runs, [x], "report.x")
    require(runs, curve_by + panel_by, "report.curve_by/panel_by")
    z = success_flags(runs, success)
    runs = runs.assign(_z=z)[runs[param].notna()]
    seeds = runs["seed"] if "seed" in runs.columns else pd.Series(np.arange(len(runs)), index=runs.index)
    keys = [runs[c].map(canon) for c in panel_by + curve_by + [x]]
    if group_col in runs.columns:
        keys.append(runs[group_col].map(canon))
    rows, reps = [], []
    for _, cell in (runs.groupby(keys, sort=False, dropna=False) if len(runs) else []):
        first = cell.iloc[0]
        key = label(panel_by + curve_by + [x], [first[c] for c in panel_by + curve_by + [x]])
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        row, rep = cell_threshold(cell[param].to_numpy(float), seeds.loc[cell.index].to_numpy(),
                                  cell["_z"].to_numpy(), quorum, n_boot, rng, level)
        xval = pd.to_numeric(pd.Series([first[x]]), errors="coerce").iloc[0]
        rows.append({"panel": label(panel_by, [first[c] for c in panel_by]),
                     "curve": label(curve_by, [first[c] for c in curve_by]),
                     **{c: first[c] for c in panel_by + curve_by}, "x": xval, **row})
        reps.append(rep)
    cols = ["panel", "curve", *panel_by, *curve_by, "x"]
    table = pd.DataFrame(rows, columns=None if rows else cols)
    if not rows:
        return table, np.empty((0, n_boot))
    order = sort_cells(table, [*panel_by, *curve_by, "x"])
    return table.iloc[order].reset_index(drop=True), np.vstack(reps)[order]


def censoring(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold row, the value a censored fit uses and its censoring code (`analysis.powerlaw`):
    exact m* (0); right-censored m* > max_probe (+1); left-censored m* <= min_probe (−1) when the smallest
    probe already passes and is > 1 (m* <= 1 is exact for an integer capacity)."""
    right = table["censored"].to_numpy(bool)
    left = ~right & table["lower_censored"].to_numpy(bool) & (table["min_probe"].to_numpy(float) > 1)
    y = np.where(right, table["max_probe"].to_numpy(float), table["threshold"].to_numpy(float))
    return y, np.where(right, 1, np.where(left, -1, 0))
