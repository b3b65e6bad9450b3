"""Power-law fits y = a * x^b in log-log space: `fit_powerlaw` (OLS, union interval; used by
`analysis.retrieval_report`) and `fit_censored_powerlaw` (Tobit, one Wald t-interval; the capacity reports).

With u_i = log x_i, v_i = log y_i (natural logs), OLS on v = alpha + b u gives

    b = sum (u_i - u_bar)(v_i - v_bar) / sum (u_i - u_bar)^2,   alpha = v_bar - b u_bar  (= log a),
    se(b) = sqrt( sum r_i^2 / (n - 2) / sum (u_i - u_bar)^2 ),   r_i = v_i - alpha - b u_i,
    R^2 = 1 - sum r_i^2 / sum (v_i - v_bar)^2.

Interval: the union (min of lows, max of highs) of
  (i)  the t-interval  b +- t_{0.975, n-2} se(b), and
  (ii) when bootstrap replicates of the y values are given (e.g. the capacity thresholds recomputed
       on resampled seeds, `analysis.thresholds`), the 2.5/97.5 percentiles of b refitted on each
       replicate. (i) knows the scatter of the points about the line, (ii) the seed noise of each
       point; with 3-6 discretised points neither alone is trustworthy, so we take both.
Fewer than 3 finite positive points, or a single distinct x, gives a result of NaNs and a `reason`.

`fit_censored_powerlaw` is the capacity reports' fit (one interval method): censored points are kept as
bounds. With c_i = 0 (exact), +1 (right-censored: y_i is a lower bound, m* > y_i) or −1 (left-censored:
m* <= y_i), the Tobit model v_i = alpha + b u_i + sigma eps_i, eps_i ~ N(0, 1), has the log-likelihood

    l(alpha, b, sigma) = sum_{c=0} [log phi(z_i) − log sigma] + sum_{c=+1} log(1 − Phi(z_i)) + sum_{c=−1} log Phi(z_i),
    z_i = (v_i − alpha − b u_i) / sigma,

maximised over (alpha, b, log sigma) (sigma floored at SIGMA_MIN, below the integer resolution of m*).
Interval: Wald from the observed information I (numerical Hessian of −l at the maximum),
b +- t_{0.975, n−2} sqrt((I^-1)_bb · n/(n−2)), n = all points, censored included. Without censored points
the estimate is OLS and the interval is exactly the OLS t-interval above.
`upper_half` picks the points of the upper half of the distinct x values (the fit's `"range": "upper"`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats

MIN_POINTS = 3
SIGMA_MIN = 1e-3
TOBIT_METHOD = ("Tobit maximum likelihood on log y vs log x (censored points kept as bounds); "
                "Wald 95% interval with t(n−2) quantile (= OLS t-interval without censoring)")


@dataclass(frozen=True)
class PowerLawFit:
    """y = exp(intercept) * x^exponent; ci_* is the 95% (by default) interval of the exponent."""
    exponent: float
    intercept: float          # alpha = log a (natural log)
    ci_low: float
    ci_high: float
    n_points: int
    r2: float
    method: str
    t_ci: tuple[float, float] = (math.nan, math.nan)
    boot_ci: tuple[float, float] = (math.nan, math.nan)
    n_boot_used: int = 0
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def prefactor(self) -> float:
        return math.exp(self.intercept) if math.isfinite(self.intercept) else math.nan

    def predict(self, x) -> np.ndarray:
        return self.prefactor * np.asarray(x, dtype=float) ** self.exponent

    def contains(self, slope: float) -> bool:
        return bool(self.ci_low <= slope <= self.ci_high)

    def to_dict(self) -> dict:
        return asdict(self)


def _failed(n: int, reason: str) -> PowerLawFit:
    nan = math.nan
    return PowerLawFit(nan, nan, nan, nan, n, nan, "ols-loglog", reason=reason)


def _ols(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Slopes of weighted OLS of v on u along the last axis (w in {0,1} masks points out)."""
    with np.errstate(invalid="ignore", divide="ignore"):  # an all-masked row gives NaN, filtered by callers
        sw = w.sum(-1, keepdims=True)
        ub = (w * u).sum(-1, keepdims=True) / sw
        vb = (w * v).sum(-1, keepdims=True) / sw
        sxx = (w * (u - ub) ** 2).sum(-1)
        return (w * (u - ub) * (v - vb)).sum(-1) / sxx


def bootstrap_slopes(x, replicates) -> np.ndarray:
    """Slope refitted on each replicate column of `replicates` (n_points, B); replicates where fewer
    than 3 finite positive points remain (censored replicate values are dropped) are skipped."""
    u = np.log(np.asarray(x, dtype=float))[:, None]
    r = np.asarray(replicates, dtype=float)
    good = np.isfinite(r) & (r > 0)
    v = np.log(np.where(good, r, 1.0))
    w = good.astype(float)
    n_ok = good.sum(0)
    distinct = np.where(good, u, -np.inf).max(0) > np.where(good, u, np.inf).min(0)  # >= 2 distinct x
    slopes = _ols(u.T.repeat(r.shape[1], 0), v.T, w.T)
    return slopes[(n_ok >= MIN_POINTS) & distinct & np.isfinite(slopes)]


def fit_powerlaw(x, y, *, replicates=None, level: float = 0.95) -> PowerLawFit:
    """Fit y = a x^b on the points with finite positive x and y (see module docstring).

    replicates: optional (len(x), B) array of bootstrap replicates of y, row-aligned with x.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    n = int(keep.sum())
    if n < MIN_POINTS:
        return _failed(n, f"needs >= {MIN_POINTS} finite positive points, got {n}")
    u, v = np.log(x[keep]), np.log(y[keep])
    if np.unique(u).size < 2:
        return _failed(n, "all x values are equal")
    b = float(_ols(u, v, np.ones_like(u)))
    alpha = float(v.mean() - b * u.mean())
    resid = v - alpha - b * u
    sxx = float(((u - u.mean()) ** 2).sum())
    ssr, sst = float((resid ** 2).sum()), float(((v - v.mean()) ** 2).sum())
    se = math.sqrt(ssr / (n - 2) / sxx)
    tq = float(stats.t.ppf(0.5 + level / 2, n - 2))
    t_ci = (b - tq * se, b + tq * se)
    r2 = 1 - ssr / sst if sst > 0 else math.nan
    lo, hi, boot_ci, n_used, method = *t_ci, (math.nan, math.nan), 0, "ols-loglog; t-interval"
    if replicates is not None:
        reps = np.asarray(replicates, dtype=float)
        if reps.ndim != 2 or reps.shape[0] != len(x):
            raise ValueError(f"replicates must be (len(x), B) = ({len(x)}, B), got {reps.shape}")
        slopes = bootstrap_slopes(x[keep], reps[keep])
        n_used = int(slopes.size)
        if n_used:
            alpha_q = 100 * (1 - level) / 2
            boot_ci = tuple(float(q) for q in np.percentile(slopes, [alpha_q, 100 - alpha_q]))
            lo, hi = min(lo, boot_ci[0]), max(hi, boot_ci[1])
            method = f"ols-loglog; union of t-interval and seed-bootstrap percentile interval (B={reps.shape[1]})"
    return PowerLawFit(b, alpha, float(lo), float(hi), n, float(r2), method, t_ci, boot_ci, n_used)


def upper_half(x) -> np.ndarray:
    """Mask of the points whose x is among the upper ceil(n/2) of the n distinct finite x values."""
    x = np.asarray(x, dtype=float)
    distinct = np.unique(x[np.isfinite(x)])
    if distinct.size == 0:
        return np.zeros(x.shape, bool)
    cut = distinct[distinct.size // 2] if distinct.size % 2 == 0 else distinct[(distinct.size - 1) // 2]
    return np.isfinite(x) & (x >= cut)


def _tobit_nll(theta, u, v, c) -> float:
    alpha, b, log_s = theta
    s = max(math.exp(log_s), SIGMA_MIN)
    z = (v - alpha - b * u) / s
    return -float(np.sum(np.where(c == 0, stats.norm.logpdf(z) - math.log(s), 0.0))
                  + np.sum(stats.norm.logsf(z[c > 0])) + np.sum(stats.norm.logcdf(z[c < 0])))


def _hessian(f, theta: np.ndarray, h: float = 1e-4) -> np.ndarray:
    n = theta.size
    H = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            ei, ej = np.eye(n)[i] * h, np.eye(n)[j] * h
            H[i, j] = H[j, i] = (f(theta + ei + ej) - f(theta + ei - ej) - f(theta - ei + ej)
                                 + f(theta - ei - ej)) / (4 * h * h)
    return H


def fit_censored_powerlaw(x, y, censored=None, *, level: float = 0.95) -> PowerLawFit:
    """Fit y = a x^b with censored points as bounds (module docstring): censored[i] in {0, +1, −1}."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    c = np.zeros(x.shape, int) if censored is None else np.asarray(censored, dtype=int)
    if c.shape != x.shape:
        raise ValueError(f"censored must have the shape of x {x.shape}, got {c.shape}")
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y, c = x[keep], y[keep], c[keep]
    n, exact = int(keep.sum()), c == 0
    fail = lambda why: PowerLawFit(*(math.nan,) * 4, n, math.nan, TOBIT_METHOD, reason=why)  # noqa: E731
    if n < MIN_POINTS:
        return fail(f"needs >= {MIN_POINTS} finite positive points, got {n}")
    u, v = np.log(x), np.log(y)
    if np.unique(u[exact]).size < 2:
        return fail("needs uncensored points at >= 2 distinct x values")
    b0 = float(_ols(u[exact], v[exact], np.ones(int(exact.sum()))))
    a0 = float(v[exact].mean() - b0 * u[exact].mean())
    r0 = v[exact] - a0 - b0 * u[exact]
    theta0 = np.array([a0, b0, math.log(max(float(np.sqrt(np.mean(r0 ** 2))), SIGMA_MIN))])
    if exact.all():
        theta = theta0                                   # the Tobit MLE without censoring is OLS
    else:
        opt = optimize.minimize(_tobit_nll, theta0, args=(u, v, c), method="Nelder-Mead",
                                options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000, "maxfev": 40000})
        theta = opt.x
        if not np.all(np.isfinite(theta)):
            return fail("censored fit did not converge")
    b, alpha = float(theta[1]), float(theta[0])
    if exact.all():                                      # closed form: the OLS standard error
        sxx = float(((u - u.mean()) ** 2).sum())
        se = math.sqrt(float(((v - alpha - b * u) ** 2).sum()) / (n - 2) / sxx)
    else:
        theta[2] = max(theta[2], math.log(SIGMA_MIN))
        try:
            var_b = float(np.linalg.inv(_hessian(lambda t: _tobit_nll(t, u, v, c), theta))[1, 1])
        except np.linalg.LinAlgError:
            var_b = math.nan
        se = math.sqrt(var_b * n / (n - 2)) if var_b >= 0 else math.nan
    tq = float(stats.t.ppf(0.5 + level / 2, n - 2))
    resid = v[exact] - alpha - b * u[exact]
    sst = float(((v[exact] - v[exact].mean()) ** 2).sum())
    r2 = 1 - float((resid ** 2).sum()) / sst if sst > 0 else math.nan
    if not math.isfinite(se):
        return PowerLawFit(b, alpha, math.nan, math.nan, n, r2, TOBIT_METHOD, reason="singular information matrix")
    return PowerLawFit(b, alpha, b - tq * se, b + tq * se, n, float(r2), TOBIT_METHOD, (b - tq * se, b + tq * se))
