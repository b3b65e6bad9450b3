"""analysis.rank_curves: theory rank, hyper-parameter selection on the validation metric, exact rank."""
import math

import numpy as np
import pandas as pd
import pytest

from analysis.rank_curves import exact_rank, select_rank_curves, theory_rank
from analysis.synthetic import rank_runs


@pytest.mark.parametrize("width,depth,target,expect", [
    (16, 2, 1, 8),    # Lbar | L: ceil(16 * 1 / 2)
    (16, 4, 2, 8),
    (10, 4, 1, 3),    # ceil(10 / 4) = 3
    (16, 3, 2, 16),   # Lbar does not divide L: ceil(16 / floor(3 / 2)) = 16
    (16, 5, 2, 8),    # ceil(16 / floor(5 / 2)) = 8
    (15, 7, 3, 8),    # ceil(15 / 2) = 8
])
def test_theory_rank(width, depth, target, expect):
    df = pd.DataFrame({"model.width": [width], "model.depth": [depth], "task.target_depth": [target]})
    assert theory_rank(df).iloc[0] == expect


def test_theory_rank_missing_columns_is_nan():
    assert theory_rank(pd.DataFrame({"model.width": [16]})).isna().all()


def select(runs, **kw):
    kw = {"x": "adapter.rank", "y": "test/mse", "select": "val/mse", "curve_by": ["train.method"],
          "panel_by": ["task.pretrained"], **kw}
    return select_rank_curves(runs, **kw)


def test_selection_picks_lowest_median_validation_metric():
    runs = rank_runs()
    tab = select(runs)
    assert len(tab) == 2 * 2 * 16
    adam = tab[tab["curve"] == "train.method=adam"]
    assert (adam["n_settings"] == 4).all() and (adam["n_seeds"] == 3).all()
    # recompute one cell by hand
    cell = runs[(runs["train.method"] == "adam") & (runs["adapter.rank"] == 12) & (~runs["task.pretrained"])]
    med = cell.groupby(["train.lr", "train.weight_decay"])["val/mse"].median()
    lr, wd = med.idxmin()
    row = adam[(adam["x"] == 12) & (adam["panel"] == "task.pretrained=false")].iloc[0]
    assert (row["train.lr"], row["train.weight_decay"]) == (lr, wd) == (1e-3, 0.0)
    chosen = cell[(cell["train.lr"] == lr) & (cell["train.weight_decay"] == wd)]["test/mse"]
    assert row["median"] == chosen.median() and row["ymin"] == chosen.min() and row["ymax"] == chosen.max()
    assert row["select_median"] == med.min()


def test_diverged_seed_counts_as_infinite():
    """A setting whose surviving seeds look best is not chosen when one seed diverged (NaN -> +inf)."""
    rows = []
    for s in range(3):
        rows.append({"adapter.rank": 1, "train.lr": 0.1, "seed": s, "val/mse": np.nan if s < 2 else 1e-9, "test/mse": 1e-9})
        rows.append({"adapter.rank": 1, "train.lr": 0.01, "seed": s, "val/mse": 1.0, "test/mse": 1.0})
    tab = select_rank_curves(pd.DataFrame(rows), x="adapter.rank", y="test/mse", select="val/mse")
    assert tab["train.lr"].iloc[0] == 0.01 and tab["median"].iloc[0] == 1.0


def test_without_select_all_rows_are_pooled():
    runs = rank_runs(ranks=[4])
    for sel in (None, "", "no/such_metric"):
        tab = select(runs, select=sel)
        adam = tab[tab["curve"] == "train.method=adam"]
        assert (adam["n_runs"] == 12).all() and adam["train.lr"].isna().all()
        pooled = runs[(runs["train.method"] == "adam") & runs["task.pretrained"]]["test/mse"]
        assert adam[adam["panel"] == "task.pretrained=true"]["median"].iloc[0] == np.median(pooled.fillna(np.inf))


def test_exact_rank_of_construction():
    runs = rank_runs()
    ex = exact_rank(runs, x="adapter.rank", panel_by=["task.pretrained"])
    assert ex["exact_rank"].tolist() == [8, 8] and ex["panel"].tolist() == ["task.pretrained=false", "task.pretrained=true"]
    late = runs.copy()
    late.loc[(late["train.method"] == "construction") & (late["adapter.rank"] == 8), "test/mse_rel"] = 1e-3
    assert exact_rank(late, x="adapter.rank", panel_by=["task.pretrained"])["exact_rank"].tolist() == [9, 9]
    never = runs.assign(**{"test/mse_rel": 1.0})
    assert math.isnan(exact_rank(never, x="adapter.rank")["exact_rank"].iloc[0])
    assert exact_rank(runs.drop(columns="test/mse_rel"), x="adapter.rank").empty
