"""Computed claims (DESIGN.md §8): a paper's effect as a number with a CI next to a control, and a verdict
decided by code that can reach both answers.

One interval method for every comparison of seeds, stated in each report: the Student-t 95% interval.

    difference   Δ = mean(a) − mean(b)
                 independent seeds: Welch,  se² = s_a²/n_a + s_b²/n_b,
                 ν = se⁴ / ((s_a²/n_a)²/(n_a−1) + (s_b²/n_b)²/(n_b−1))     (Welch–Satterthwaite)
                 paired seeds (a_i, b_i share seed i): the t-interval of d_i = a_i − b_i, ν = n − 1
    ratio        ρ = exp(mean(log a) − mean(log b))  (ratio of geometric means), the interval of the log
                 difference above, exponentiated; needs positive values
    one sample   m = mean(a) with the t-interval, ν = n − 1 (e.g. a gap against a fixed reference)

With zero spread on both sides (e.g. every seed at accuracy 1.0) the interval is the point. With fewer than 2
values on a side there is no interval (NaN) and no verdict can be "shows": a NaN bound never passes a test.

A `Claim` is a sentence ("spectral reaches ε sooner than shuffle"), the `Effect` that measures it and a rule on
the interval (`above`, `below`, `within`); its verdict is SHOWS only when the whole interval satisfies the rule.
Reports collect claims in `Section.claims`; `analysis.report` writes them to `report/claims.json`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

SHOWS, NOT = "shows", "does not show"
LEVEL = 0.95
METHOD = "Student-t 95% interval (Welch for independent seeds, paired t for shared seeds)"


@dataclass(frozen=True)
class Effect:
    """estimate with its interval [lo, hi]; `kind` difference | ratio | mean; `control` names side b."""
    estimate: float
    lo: float
    hi: float
    kind: str
    n: tuple[int, ...]
    method: str = METHOD

    def above(self, x: float) -> bool:
        return bool(self.lo > x)          # NaN -> False

    def below(self, x: float) -> bool:
        return bool(self.hi < x)

    def within(self, low: float, high: float) -> bool:
        return bool(self.lo >= low and self.hi <= high)

    def text(self, digits: int = 3) -> str:
        from analysis.markdown import interval, num
        unit = "×" if self.kind == "ratio" else ""
        return f"{num(self.estimate, digits)}{unit} {interval(self.lo, self.hi, digits)}"


def _clean(a) -> np.ndarray:
    a = np.asarray(a, dtype=float).ravel()
    return a[np.isfinite(a)]


def _t_interval(m: float, se: float, dof: float, level: float) -> tuple[float, float]:
    if not (math.isfinite(se) and dof > 0):
        return math.nan, math.nan
    if se == 0:
        return m, m
    t = float(stats.t.ppf(0.5 + level / 2, dof))
    return m - t * se, m + t * se


def mean_effect(a, *, level: float = LEVEL) -> Effect:
    """mean(a) with its one-sample t-interval."""
    a = _clean(a)
    m = float(a.mean()) if a.size else math.nan
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size >= 2 else math.nan
    lo, hi = _t_interval(m, se, a.size - 1, level)
    return Effect(m, lo, hi, "mean", (int(a.size),))


def _welch(a: np.ndarray, b: np.ndarray, level: float) -> tuple[float, float, float]:
    d = float(a.mean() - b.mean()) if a.size and b.size else math.nan
    if a.size < 2 or b.size < 2:
        return d, math.nan, math.nan
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)) if se > 0 else 1.0
    return d, *_t_interval(d, se, dof, level)


def difference(a, b, *, paired: bool = False, level: float = LEVEL) -> Effect:
    """mean(a) − mean(b); paired: a[i], b[i] come from the same seed (NaN pairs dropped together)."""
    if paired:
        a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
        if a.shape != b.shape:
            raise ValueError(f"paired difference needs equal lengths, got {a.size} and {b.size}")
        e = mean_effect(a - b, level=level)
        return Effect(e.estimate, e.lo, e.hi, "difference", e.n * 2)
    a, b = _clean(a), _clean(b)
    d, lo, hi = _welch(a, b, level)
    return Effect(d, lo, hi, "difference", (int(a.size), int(b.size)))


def ratio(a, b, *, paired: bool = False, level: float = LEVEL) -> Effect:
    """exp(mean log a − mean log b): the ratio of geometric means, interval from the log difference."""
    def logs(x):
        x = np.asarray(x, dtype=float).ravel()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)
    d = difference(logs(a), logs(b), paired=paired, level=level)
    return Effect(math.exp(d.estimate) if math.isfinite(d.estimate) else math.nan,
                  math.exp(d.lo) if math.isfinite(d.lo) else math.nan,
                  math.exp(d.hi) if math.isfinite(d.hi) else math.nan, "ratio", d.n)


@dataclass(frozen=True)
class Claim:
    """A statement about a paper's effect, the effect that measures it, the control, and the rule."""
    statement: str
    effect: Effect
    control: str
    rule: str                      # human-readable, e.g. "CI above 0"
    verdict: str

    @property
    def shows(self) -> bool:
        return self.verdict == SHOWS

    def line(self) -> str:
        """'**shows** — statement: 1.2 [1.1, 1.3] vs control (rule)'."""
        return (f"**{self.verdict}** — {self.statement}: {self.effect.text()} ({self.effect.kind} against "
                f"{self.control}; shows iff {self.rule})")

    def record(self, **where) -> dict:
        e = asdict(self.effect)
        return {**where, "statement": self.statement, "control": self.control, "rule": self.rule,
                "verdict": self.verdict, "estimate": e["estimate"], "ci_low": e["lo"], "ci_high": e["hi"],
                "kind": e["kind"], "n": list(e["n"]), "method": e["method"]}


def claim(statement: str, effect: Effect, control: str, *, above: float | None = None,
          below: float | None = None, within: tuple[float, float] | None = None) -> Claim:
    """SHOWS iff every given rule holds on the whole interval (exactly one rule or a pair above+below)."""
    rules, ok = [], []
    if above is not None:
        rules.append(f"CI above {above:g}")
        ok.append(effect.above(above))
    if below is not None:
        rules.append(f"CI below {below:g}")
        ok.append(effect.below(below))
    if within is not None:
        rules.append(f"CI within [{within[0]:g}, {within[1]:g}]")
        ok.append(effect.within(*within))
    if not rules:
        raise ValueError("claim needs a rule: above, below or within")
    return Claim(statement, effect, control, " and ".join(rules), SHOWS if all(ok) else NOT)


def all_show(statement: str, claims: list[Claim]) -> str:
    """The verdict of a conjunction: SHOWS iff there are claims and every one shows."""
    return SHOWS if claims and all(c.shows for c in claims) else NOT


def claims_markdown(claims: list[Claim]) -> str:
    """One bullet per claim, then the interval method."""
    if not claims:
        return ""
    return "\n".join(f"- {c.line()}" for c in claims) + f"\n\nIntervals: {METHOD}.\n"
