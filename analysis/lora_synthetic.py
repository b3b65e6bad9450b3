"""Synthetic rows of a `lora_threshold` sweep, with chosen per-seed gradient thresholds (tests, examples).

Per setting (D, L, L̄, activation), method (construction, adam) and seed, ranks 1..D; adam has two lr
settings, the worse one (lr 1e-1) 10× above the better on every metric, so selection matters. Values of
`test/mse_rel` (target variance 1): the construction reaches 1e-12 at R >= R*, and (1 − R/R*)² below;
adam for seed s reaches eps/10 at R >= thresholds[s] (None: never — it stays at 2·eps), 0.5·(1 − R/T) above
eps below it. Identity settings carry `test/ey_tail` = (1 − L·R/D)²⁺ and adam's test/mse = tail · ey_factor
below R* (the construction's = the tail).
"""
from __future__ import annotations

import hashlib
import json
import math

import pandas as pd

REPORT = {"report.kind": "lora_threshold", "report.x": "adapter.rank", "report.y": "test/mse_rel",
          "report.select": "val/mse", "report.curve_by": "train.method",
          "report.panel_by": "model.activation,model.width,model.depth,task.target_depth"}


def _rid(row: dict) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()[:16]


def lora_runs(settings, *, eps: float = 1e-2, ey_factor: float = 1.0, sweep: str = "syn_lora_threshold",
              theory: dict | None = None) -> pd.DataFrame:
    """settings: list of (D, L, L̄, activation, thresholds[, ey_factor]) with thresholds one entry per seed
    (int or None); the optional sixth entry overrides `ey_factor` for that setting."""
    rows = []
    for D, L, Lb, act, thresholds, *own in settings:
        factor = own[0] if own else ey_factor
        r_star = -(-D * Lb // L)
        for method in ("construction", "adam"):
            lrs = [0.0] if method == "construction" else [1e-2, 1e-1]
            for r in range(1, D + 1):
                tail = max(1 - L * r / D, 0.0) ** 2 if act == "identity" else math.nan
                for lr in lrs:
                    for s, t in enumerate(thresholds):
                        if method == "construction":
                            y = 1e-12 if r >= r_star else (1 - r / r_star) ** 2
                            if act == "identity":
                                y = max(tail, 1e-12)
                        elif t is None:
                            y = 2 * eps
                        else:
                            y = eps / 10 if r >= t else max(0.5 * (1 - r / t), 2 * eps)
                            if act == "identity" and r < r_star and tail > 0:
                                y = tail * factor
                        y *= 10.0 if lr == 1e-1 else 1.0
                        cfg = {"model.width": D, "model.depth": L, "task.target_depth": Lb, "model.activation": act,
                               "train.method": method, "adapter.rank": r, "train.lr": lr,
                               "train.weight_decay": 0.0, "seed": s}
                        rows.append({"sweep": sweep, "status": "ok", "trial_id": "t0", "run_id": _rid({**cfg, "sweep": sweep}),
                                     **cfg, "test/mse_rel": y, "test/mse": y, "test/target_var": 1.0,
                                     "val/mse": y * 1.01, "test/ey_tail": tail, "test/ey_tail_rel": tail,
                                     **REPORT, "report.theory": json.dumps(theory if theory is not None
                                                                           else {"epsilon": eps})})
    return pd.DataFrame(rows)
