"""Per-run measures of a batch-selection sweep (papers.md §3; read by analysis.batch_report): for each run's
curve of the rule metric y(t) (e.g. `opt/gap` = full loss − optimum, or `test/retrieval`), logged at steps
t_0 = 0 < t_1 < … < t_K = T (the budget):

    hit_ε     first logged step with y(t) op ε (e.g. gap ≤ ε); censored at T when no step satisfies the rule
    cost_ε    the cumulative compute (`cost/forwards`, pair-forwards: ftcore.batching.cost) at that row
    area      (1/T) ∫_0^T g(y(t)) dt by the trapezoid rule — the area under the curve per step, censoring-free;
              g = log10 max(y, CLIP) for a lower-is-better rule (the log-gap curve), g = y otherwise
    tail      the run's level over the last TAIL of its logged steps: the geometric mean of max(y, CLIP) for a
              lower-is-better rule (constant-lr SGD's noise floor), the arithmetic mean otherwise (a plateau)
    final     y(T)

A rule set `report.select` is "<metric><op><ε>[; <metric><op><ε> …]": several ε for one metric and one
direction (`<=`/`<` lower is better, `>=`/`>` higher is better).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.meta import require

DEFAULT_SELECT = "opt/gap<=0.001"
RULE = re.compile(r"^\s*(?P<metric>[^<>=!\s;]+)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[-+0-9.eE]+)\s*$")
OPS = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}
CLIP = 1e-7          # gaps below are float32 round-off of the full loss: clipped before logs
TAIL = 0.25          # the floor/plateau: the last quarter of the logged steps


@dataclass(frozen=True)
class Rule:
    metric: str
    op: str
    eps: float

    @property
    def lower(self) -> bool:
        """True when smaller values are better (the rule is an upper bound on the metric)."""
        return self.op in ("<=", "<")

    def text(self) -> str:
        return f"{self.metric}{self.op}{self.eps:g}"


def parse_rules(text: str | None) -> list[Rule]:
    """'opt/gap<=0.03; opt/gap<=0.01' -> [Rule, …] (one metric, one direction), one-line ValueError otherwise."""
    rules = []
    for part in filter(str.strip, (text or DEFAULT_SELECT).split(";")):
        m = RULE.match(part)
        if not m:
            raise ValueError(f"report.select: each rule must read '<metric><op><value>', several separated by ';', "
                             f"e.g. opt/gap<=0.03; opt/gap<=0.01 (got {part.strip()!r})")
        rules.append(Rule(m["metric"], m["op"], float(m["value"])))
    if not rules:
        raise ValueError(f"report.select: no rule in {text!r}")
    if len({r.metric for r in rules}) > 1 or len({r.lower for r in rules}) > 1:
        raise ValueError(f"report.select: the rules must share one metric and one direction (got {text!r})")
    return sorted(rules, key=lambda r: r.eps, reverse=rules[0].lower)     # easiest target first


def transform(y: np.ndarray, lower: bool) -> np.ndarray:
    """g(y) of the area and the tail: log10 of the clipped metric when lower is better, else y."""
    return np.log10(np.maximum(y, CLIP)) if lower else y


def area(steps: np.ndarray, y: np.ndarray, lower: bool) -> float:
    """(1/T) ∫ g(y) dt over the logged steps (trapezoid); NaN for a curve with fewer than 2 points."""
    if len(steps) < 2 or steps[-1] <= steps[0]:
        return np.nan
    g = transform(y, lower)
    return float(np.sum((g[1:] + g[:-1]) / 2 * np.diff(steps)) / (steps[-1] - steps[0]))


def tail_level(steps: np.ndarray, y: np.ndarray, lower: bool) -> float:
    """The level over the last TAIL of the budget (in g's scale, mapped back: a gap, or a plateau value)."""
    keep = steps >= steps[-1] - TAIL * (steps[-1] - steps[0])
    g = transform(y[keep], lower).mean()
    return float(10 ** g) if lower else float(g)


def run_measures(runs: pd.DataFrame, curves: pd.DataFrame, rules: list[Rule], cost: str | None) -> pd.DataFrame:
    """One row per run: run_id, budget, final, area, tail, and per rule i: hit_i, censored_i, cost_i."""
    metric = rules[0].metric
    require(curves, [metric, "step", "run_id"], "report.select (curves table)")
    cost = cost if cost and cost in curves.columns else None
    out = []
    for rid, c in curves[curves["run_id"].isin(set(runs["run_id"]))].groupby("run_id"):
        c = c.sort_values("step")
        st, y = c["step"].to_numpy(float), c[metric].to_numpy(float)
        ok = np.isfinite(y)
        st, y, spent = st[ok], y[ok], (c[cost].to_numpy(float)[ok] if cost else np.full(ok.sum(), np.nan))
        if not len(st):
            continue
        row = {"run_id": rid, "budget": st[-1], "final": y[-1], "area": area(st, y, rules[0].lower),
               "tail": tail_level(st, y, rules[0].lower), "cost_per_step": spent[-1] / max(st[-1], 1.0)}
        for i, r in enumerate(rules):
            hit = OPS[r.op](y, r.eps)
            k = int(hit.argmax()) if hit.any() else len(st) - 1
            row.update({f"hit_{i}": st[k], f"censored_{i}": not bool(hit.any()), f"cost_{i}": spent[k]})
        out.append(row)
    cols = ["run_id", "budget", "final", "area", "tail", "cost_per_step"] + \
        [f"{k}_{i}" for i in range(len(rules)) for k in ("hit", "censored", "cost")]
    return pd.DataFrame(out, columns=cols)
