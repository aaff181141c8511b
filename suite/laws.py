"""Fitted cost laws: a point's peak memory, trace bytes, time and gradient error predicted from
the points a run measured, each prediction with its interval and its extrapolation factor, and
those predictions checked against a second run (:func:`check_predictions`).

Everything here is a pure function of a records frame (``suite.records.load_frame``).

**Series.** A series is (problem, problem options, strategy, strategy options, framework,
device, dtype); n and K vary across its points. Seeds are pooled: the records of one (n, K)
(several seeds, a point measured twice) are reduced to their median, so each law rests on one
value per (n, K). Options are compared with their declared defaults filled in (``momentum=0.0``
written out and left out are one series); ``problem_options`` / ``strategy_options`` hold the
non-default ones as ``k=v,…``.

**Cost laws** (one per series and metric). The constant a of each law is the constant-overhead
regime; where the data cannot carry a constant (too few levels, below), the points in that
regime are left out instead (``suite.analysis.fit_window`` along n at each K measured at ≥ 3
values of n). Dropping points by their noisy slopes where a constant can be fitted would select
on the noise and shrink the intervals, so it is done only where it must be.

* memory (``trace_bytes``, ``peak_bytes``): y = a + (c + b·K^e)·n^p. b·K^e·n^p is what the
  strategy stores per step; c·n^p the buffers sized by the state and θ that it holds whatever
  K (x and θ themselves, a checkpoint's segment boundaries), so the intercept in K grows with
  n; a what grows with neither (the runtime). e comes from the strategy's ``Theory.memory_K``:
  its value where the band is one value; fitted within the band where the band is a range and
  ≥ 2 values of K were measured; else the band's upper end ("assumed"). p is fitted where ≥ 2
  values of n were measured, else ``Theory.memory_n``'s upper end ("exponent in n assumed from
  theory"). c is left out where e = 0 (it is b) and where fewer than 2 values of n were each
  measured at ≥ 2 values of K (the intercept in K, a + c·n^p, is seen once per such n: with
  one, a and c are one number).
* time (``time_s``): y = a + (d + b·n^p)·K^t + c·n^q: the forward's K steps, each costing
  b·n^p plus a per-step overhead d that does not grow with n (dispatch, a solver's scalar
  work; paid per step, so it shares t), and the backward's term c·n^q. t from
  ``Theory.time_K`` as e above, fitted within a range from 3 values of K. p is fitted where
  ≥ 2 values of n were measured; q and d each where ≥ 3 values of n were each measured at ≥ 2
  values of K — the backward's term is seen only through one intercept in K per such n, d only
  through one slope in K per such n (d + b·n^p: three parameters) — else q = p and no d (an
  L-shaped grid has one such n). With one n, p = q = ``Theory.memory_n``'s upper end: the work
  of a step taken to scale like the state it touches — an assumption, and the law says so (it
  under-predicts beyond the measured n a step whose work grows faster than its state: a dense
  matrix–vector product, n² work on n state).

Identifiability: a term the data cannot determine is dropped (or its exponent assumed) and the
law records which (``fitted``, ``assumed``). The c·n^q term needs ≥ 2 values of K (one K
cannot split forward from backward) and a time that grows with K; the constant a needs as many
distinguishable levels (values of n where the law is flat in K, else points) as a, the
coefficients and the free exponents together; and no law has more free parameters than points
(dropping, in order, for memory: a, c, the K exponent, p; for time: a, d, the K exponent, q,
p, the c term). A law the data determine exactly (no residual degree of freedom: two points,
two parameters) is kept — a wrong form with an interval predicts worse than the right form
without one — and its predictions carry no interval (NaN).

The size variable is n as recorded. The records' ``dim_x`` is proportional to it in the
suite's problems (deq: batch·width, imaml: ≈ 70·n, gd: n), so it would give the same laws.

**Fit.** Least squares on the log scale, min Σ (log y − log law)², with nonnegative a, b, c,
d, n exponents in ``N_EXPONENT_BOUNDS``, K exponents within the theory band
(``scipy.optimize.least_squares``, 'trf', a few starts; the best is kept).

**Prediction interval** (one method, for every law here): the log-residual spread with a
t-quantile and leverage. With s² = Σ r²/(m − k) over the m points and k free parameters not at
a bound, and j the gradient of log law with respect to those parameters at the prediction,
log y ∈ log ŷ ± t_{m−k, (1+COVERAGE)/2} · s·√(1 + jᵀ(JᵀJ)⁻¹j) (J: the same gradients at the
fitted points). It is a prediction interval — for a new measurement, noise included — at
``COVERAGE``, exact for a linear law with normal log-noise and a first-order approximation
otherwise (tests/test_laws.py checks its coverage on synthetic series). A deterministic meter
that the law fits exactly gets a zero-width interval: the interval says nothing about a regime
change beyond the data, which is what the extrapolation factor is for.

**Gradient-error law** (:class:`ErrorLaw`), from ``grad_error_converged`` against K, n pooled:
points below ``rounding_floor(dtype)`` are at rounding and not fitted. Over the per-K medians, a
*plateau* is the longest tail of steps in K along which the error falls by less than
``PLATEAU_FACTOR``; a series whose last step is such a step is ``"bias"`` (the level: the
geometric mean of the plateau's errors; a geometric transient fitted on the K before it where
there are ≥ 2), otherwise ``"geometric"``: log error = log C + K·log ρ by least squares (the
same interval method). ``"rounding"``: fewer than two K above the floor (with one, the rate
that joins it to the error at the next K is an upper bound on the K to reach). Beside it
(:class:`ResidualLaw`) the relation to the forward residual ‖F(θ, x_K)‖ (``inner_residual``):
log error = log c + α·log residual, so a user who knows the solver's tolerance reads the
gradient error there (α ≈ 0 says the error does not follow the residual: a biased strategy).

**Extrapolation factor** of a prediction: max over n and K of (requested / largest measured)
and (smallest measured / requested), 1 inside the measured box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

import backends
import problems
from suite.analysis import fit_window
from suite.plugin.errors import UsageError

#: beyond this factor outside the measured n or K, ``advise`` reports a prediction but refuses
#: to rank on it. The laws rest on one to two decades of data: two decades further, an exponent
#: off by 0.1 (half the tolerance the analysis allows a fitted exponent) is already a factor
#: 100^0.1 ≈ 1.6, and regime changes (caches giving way to DRAM, a constant overtaken, a
#: solver's iteration count growing with n) are typical at that distance — the interval, which
#: assumes the law's form, cannot see them.
MAX_EXTRAPOLATION = 100.0
#: nominal coverage of every prediction interval
COVERAGE = 0.90
#: fewest points (distinct (n, K)) a law is fitted on
MIN_POINTS = 2
#: where a fitted exponent in n may lie
N_EXPONENT_BOUNDS = (0.0, 4.0)
#: a step in K along which the gradient error falls by less than this factor is flat (bias)
PLATEAU_FACTOR = 2.0
#: the metrics with a cost law
COST_METRICS = ("trace_bytes", "peak_bytes", "time_s")
MEMORY_METRICS = ("trace_bytes", "peak_bytes")
#: the error metric of the gradient-error law
ERROR_METRIC = "grad_error_converged"
#: what identifies a series (n and K vary inside it; seeds are pooled)
SERIES_FIELDS = ("problem", "problem_options", "backend", "strategy_options", "framework",
                 "device", "dtype")
_EPS = {"float64": 2.220446049250313e-16, "float32": 1.1920929e-07, "float16": 9.765625e-04,
        "bfloat16": 7.8125e-03}


def rounding_floor(dtype: str) -> float:
    """Gradient errors below 0.01·√ε (1.5e-10 in float64, 3.5e-6 in float32) are taken as
    rounding and not fitted. A converged gradient through a solve of condition κ is accurate to
    about κ·ε, which for the suite's problems (κ up to ~10⁵) lies between ε and ~1e-11 in
    float64: the floor sits above that band, so rounding noise does not bend the geometric fit,
    and below the tolerances one asks of a gradient (≥ 1e-8). No error is predicted below it.
    """
    return 0.01 * math.sqrt(_EPS.get(str(dtype), _EPS["float64"]))


# --------------------------------------------------------------------------- series
@dataclass(frozen=True, order=True)
class SeriesKey:
    problem: str
    problem_options: str
    backend: str
    strategy_options: str
    framework: str
    device: str
    dtype: str

    def label(self, problem: bool = False) -> str:
        """``unrolled [k=5] (torch)``; with ``problem``, ``gd momentum=0.9: …`` first."""
        head = ""
        if problem:
            head = self.problem + (f" {self.problem_options}" if self.problem_options else "") \
                + ": "
        opts = f" [{self.strategy_options}]" if self.strategy_options else ""
        return f"{head}{self.backend}{opts} ({self.framework})"

    def to_json(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in SERIES_FIELDS}


def _fmt_value(value: Any) -> str:
    return str(value)


@cache
def _declared(problem: str, backend: str) -> tuple[dict, dict]:
    found = problems.find(problem)
    strategy = backends.registry().get(backend)
    return ({o.name: o for o in found.options} if found is not None else {},
            {o.name: o for o in strategy.options} if strategy is not None else {})


def _canonical(given: dict[str, Any], declared: dict) -> str:
    out = []
    for name in sorted(given):
        value = given[name]
        option = declared.get(name)
        if option is not None:
            try:
                value = option.parse(value)
            except UsageError:
                pass
            if option.default is not None and value == option.default:
                continue  # written out at its default: the same series as left out
        out.append(f"{name}={_fmt_value(value)}")
    return ",".join(out)


def canonical_options(problem: str, backend: str, options: dict[str, Any] | None
                      ) -> tuple[str, str]:
    """(problem options, strategy options) of a point as ``k=v,…`` with the values parsed by
    their declarations and the ones at their declared default left out."""
    own_problem, own_strategy = _declared(str(problem), str(backend))
    options = options if isinstance(options, dict) else {}
    return (_canonical({k: v for k, v in options.items() if k in own_problem}, own_problem),
            _canonical({k: v for k, v in options.items() if k not in own_problem},
                       own_strategy))


def series_points(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (series, n, K) of the ok records: the median over its records (seeds
    pooled) of each cost metric, the gradient error and the forward residual; ``records``
    counts them."""
    columns = [*SERIES_FIELDS, "n", "K", *COST_METRICS, ERROR_METRIC, "inner_residual",
               "records"]
    if frame.empty or "status" not in frame:
        return pd.DataFrame(columns=columns)
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    data = pd.DataFrame({name: ok[name].astype(str) if name in ok else ""
                         for name in ("problem", "backend", "framework", "device", "dtype")})
    opts = [canonical_options(p, b, o) for p, b, o in
            zip(ok["problem"], ok["backend"], ok.get("options", [None] * len(ok)), strict=True)]
    data["problem_options"] = [p for p, _ in opts]
    data["strategy_options"] = [s for _, s in opts]
    data["n"] = pd.to_numeric(ok["n"]).astype(int).to_numpy()
    data["K"] = pd.to_numeric(ok["K"]).astype(int).to_numpy()
    for name in (*COST_METRICS, ERROR_METRIC, "inner_residual"):
        data[name] = (pd.to_numeric(ok[name], errors="coerce").astype(float).to_numpy()
                      if name in ok else math.nan)
    data["records"] = 1
    keys = [*SERIES_FIELDS, "n", "K"]
    grouped = data.groupby(keys, as_index=False, dropna=False)
    out = grouped[[*COST_METRICS, ERROR_METRIC, "inner_residual"]].median()
    out["records"] = grouped["records"].sum()["records"].to_numpy()
    return out[columns].sort_values(keys).reset_index(drop=True)


# --------------------------------------------------------------------------- predictions
def extrapolation_factor(n: float, K: float, n_range: tuple[float, float],
                         K_range: tuple[float, float] | None) -> float:
    """max(n/n_max, n_min/n, K/K_max, K_min/K, 1)."""
    factors = [1.0, n / n_range[1], n_range[0] / n]
    if K_range is not None:
        factors += [K / K_range[1], K_range[0] / K]
    return float(max(factors))


def extrapolation_text(n: float, K: float, n_range: tuple[float, float],
                       K_range: tuple[float, float]) -> str:
    """The largest of the four factors in words ("n 20× beyond the largest measured")."""
    cases = [(n / n_range[1], f"n {{f}} beyond the largest measured (n ≤ {n_range[1]:g})"),
             (n_range[0] / n, f"n {{f}} below the smallest measured (n ≥ {n_range[0]:g})"),
             (K / K_range[1], f"K {{f}} beyond the largest measured (K ≤ {K_range[1]:g})"),
             (K_range[0] / K, f"K {{f}} below the smallest measured (K ≥ {K_range[0]:g})")]
    factor, text = max(cases, key=lambda c: c[0])
    if factor <= 1.0:
        return "within the measured range"
    return text.format(f=format_factor(factor))


def format_factor(factor: float) -> str:
    """``4×``, ``3.33×``, ``1000×``."""
    return f"{factor:.3g}×" if factor < 100 else f"{factor:.0f}×"


@dataclass(frozen=True)
class Prediction:
    """A predicted value with its ``COVERAGE`` prediction interval [low, high] (NaN where the
    law has none) and its extrapolation factor."""

    value: float
    low: float
    high: float
    extrapolation: float

    def to_json(self) -> dict[str, float | None]:
        return {k: _finite(getattr(self, k)) for k in ("value", "low", "high", "extrapolation")}


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _t_quantile(dof: int) -> float:
    from scipy.stats import t as student_t

    return float(student_t.ppf((1 + COVERAGE) / 2, dof))


def _interval(log_value: float, grad: np.ndarray, sigma: float, dof: int,
              cov: np.ndarray) -> tuple[float, float]:
    if dof < 1 or not math.isfinite(sigma):
        return math.nan, math.nan
    leverage = float(grad @ cov @ grad) if grad.size else 0.0
    half = _t_quantile(dof) * sigma * math.sqrt(1.0 + max(leverage, 0.0))
    return math.exp(log_value - half), math.exp(log_value + half)


# --------------------------------------------------------------------------- cost laws
@dataclass(frozen=True)
class _Term:
    coef: str
    k_exp: str | None
    n_exp: str | None


@dataclass(frozen=True)
class Law:
    """One fitted cost law of a series: ``metric`` ≈ ``form`` with ``params`` (in bytes or
    seconds, n and K as measured). ``fitted``: the parameters fitted; ``assumed``: why the
    others take the values they do; ``points``: the (n, K, value) fitted; ``dropped``: the
    (n, K) left out as constant-overhead regime."""

    metric: str
    form: str
    params: dict[str, float]
    fitted: tuple[str, ...]
    assumed: tuple[str, ...]
    n_range: tuple[float, float]
    K_range: tuple[float, float]
    points: tuple[tuple[int, int, float], ...]
    dropped: tuple[tuple[int, int], ...]
    dof: int
    sigma: float
    interval_method: str = ("log-residual spread, t-quantile and leverage, "
                            f"{COVERAGE:.0%} prediction interval")
    # the fit in normalised units (n/n0, K/K0, y/y0) and the covariance of its free parameters
    _constant: bool = field(default=False, repr=False)
    _terms: tuple[_Term, ...] = field(default=(), repr=False)
    _norm: dict[str, float] = field(default_factory=dict, repr=False)
    _free: tuple[str, ...] = field(default=(), repr=False)
    _cov: tuple[tuple[float, ...], ...] = field(default=(), repr=False)
    _scale: tuple[float, float, float] = field(default=(1.0, 1.0, 1.0), repr=False)
    _zero: bool = field(default=False, repr=False)

    def predict(self, n: float, K: float) -> Prediction:
        extrapolation = extrapolation_factor(n, K, self.n_range, self.K_range)
        if self._zero:
            return Prediction(0.0, 0.0, 0.0, extrapolation)
        n0, K0, y0 = self._scale
        law, grad = _evaluate(self._constant, self._terms, self._norm, self._free,
                              np.array([n / n0]), np.array([K / K0]))
        value = float(law[0]) * y0
        low, high = _interval(math.log(value), grad[0], self.sigma, self.dof,
                              np.array(self._cov, dtype=float).reshape(len(self._free),
                                                                       len(self._free)))
        return Prediction(value, low, high, extrapolation)

    def describe(self) -> str:
        """The law with its numbers, e.g. ``1.2e+06 + 40·K^1·n^1.01``."""
        if self._zero:
            return "0"
        parts = [f"{self.params['a']:.3g}"] if self._constant else []
        for term in self._terms:
            text = f"{self.params[term.coef]:.3g}"
            if term.k_exp is not None:
                text += f"·K^{self.params[term.k_exp]:.3g}"
            if term.n_exp is not None:
                text += f"·n^{self.params[term.n_exp]:.3g}"
            parts.append(text)
        return " + ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "form": self.form, "law": self.describe(),
                "params": {k: _finite(v) for k, v in self.params.items()},
                "fitted": list(self.fitted), "assumed": list(self.assumed),
                "n_range": list(self.n_range), "K_range": list(self.K_range),
                "points": len(self.points), "dropped": [list(p) for p in self.dropped],
                "dof": self.dof, "sigma_log": _finite(self.sigma),
                "interval_method": self.interval_method}


def _evaluate(constant: bool, terms: tuple[_Term, ...], values: dict[str, float],
              free: tuple[str, ...], u: np.ndarray, v: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """The law at normalised (u = n/n0, v = K/K0) and the gradient of its log with respect to
    the ``free`` parameters (rows: points)."""
    law = np.full(u.shape, values.get("a", 0.0) if constant else 0.0, dtype=float)
    parts: dict[str, np.ndarray] = {}
    for term in terms:
        g = u ** values[term.n_exp] if term.n_exp is not None else np.ones(u.shape)
        if term.k_exp is not None:
            g = g * v ** values[term.k_exp]
        parts[term.coef] = g
        law = law + values[term.coef] * g
    law = np.maximum(law, 1e-300)
    grad = np.zeros((u.size, len(free)))
    for j, name in enumerate(free):
        if name == "a":
            grad[:, j] = 1.0 / law
            continue
        for term in terms:
            contribution = values[term.coef] * parts[term.coef]
            if name == term.coef:
                grad[:, j] += parts[term.coef] / law
            if term.n_exp is not None and name == term.n_exp:
                grad[:, j] += contribution * np.log(u) / law
            if name == term.k_exp:
                grad[:, j] += contribution * np.log(v) / law
    return law, grad


@dataclass
class _Spec:
    constant: bool
    terms: list[_Term]
    fixed: dict[str, float]
    free: list[str]
    bounds: dict[str, tuple[float, float]]
    assumed: list[str]
    form: str = ""
    #: coefficients of the terms that refine the plain law (memory's c, time's d): the fit
    #: also starts from the plain law (them at their floor), so where the data do not ask for
    #: them they stay there instead of stopping short of it
    refinements: tuple[str, ...] = ()


def _theory(backend: str):
    strategy = backends.registry().get(backend)
    return getattr(strategy, "theory", None) if strategy is not None else None


def _k_exponent(name: str, band: tuple[float, float], NK: int, spec: _Spec, label: str,
                need: int) -> None:
    lo, hi = float(band[0]), float(band[1])
    if lo == hi:
        spec.fixed[name] = lo
    elif NK >= need:
        spec.free.append(name)
        spec.bounds[name] = (lo, hi)
    else:
        spec.fixed[name] = hi
        spec.assumed.append(f"{name}: exponent in K assumed from theory ({label} band "
                            f"[{lo:g}, {hi:g}], upper end): {NK} value(s) of K")


def _memory_spec(theory: Any, Nn: int, NK: int, N: int, Nn_multi: int) -> _Spec:
    band_K = theory.memory_K if theory is not None else (0.0, 1.0)
    band_n = theory.memory_n if theory is not None else (1.0, 1.0)
    spec = _Spec(constant=False, terms=[_Term("b", "e", "p")], fixed={}, free=["b"],
                 bounds={"b": (1e-12, math.inf)}, assumed=[])
    if theory is None:
        spec.assumed.append("no theory for this strategy: K band [0, 1], n exponent 1")
    _k_exponent("e", band_K, NK, spec, "memory_K", need=2)
    flat_in_K = NK == 1 or (spec.fixed.get("e") == 0.0)
    if Nn >= 2:
        spec.free.append("p")
        spec.bounds["p"] = N_EXPONENT_BOUNDS
    else:
        spec.fixed["p"] = float(band_n[1])
        spec.assumed.append(f"p: exponent in n assumed from theory (memory_n = {band_n[1]:g}): "
                            "one value of n")
    # c·n^p: the buffers sized by the state and θ that every strategy holds whatever K. With
    # e = 0 it is b itself; otherwise it is the growth in n of the intercept in K, seen at
    # the values of n measured at ≥ 2 values of K: it needs two of them (with one, a and c
    # are one number)
    if spec.fixed.get("e") != 0.0:
        if Nn_multi >= 2:
            spec.terms.append(_Term("c", None, "p"))
            spec.free.append("c")
            spec.bounds["c"] = (1e-12, math.inf)
            spec.refinements = ("c",)
        else:
            spec.assumed.append(f"c: no K-independent term in n (the intercept in K is seen at "
                                f"{Nn_multi} value(s) of n; it needs 2)")
    levels = Nn if flat_in_K else N
    varies = Nn >= 2 or not flat_in_K
    spec.constant = varies and levels >= 1 + len(spec.free)
    _keep_determined(spec, N, order=("a", "c", "e", "p"), theory_values={"e": band_K[1],
                                                                 "p": band_n[1]})
    has_c = any(t.coef == "c" for t in spec.terms)
    spec.form = (("a + " if spec.constant else "")
                 + ("(c + b·K^e)·n^p" if has_c else "b·K^e·n^p"))
    return spec


def _time_spec(theory: Any, Nn: int, NK: int, N: int, Nn_multi: int) -> _Spec:
    band_K = theory.time_K if theory is not None else (1.0, 1.0)
    band_n = theory.memory_n if theory is not None else (1.0, 1.0)
    spec = _Spec(constant=False, terms=[_Term("b", "t", "p")], fixed={}, free=["b"],
                 bounds={"b": (1e-12, math.inf)}, assumed=[])
    if theory is None:
        spec.assumed.append("no theory for this strategy: time linear in K, n exponent 1")
    flat = float(band_K[1]) == 0.0
    two_terms = NK >= 2 and not flat
    _k_exponent("t", band_K, NK if two_terms else 0, spec, "time_K", need=3)
    if NK == 1 and not flat:
        spec.assumed.append("one value of K: a single term b·K^t·n^p (the forward's K steps "
                            "cannot be told from the backward)")
    n_assumed = float(band_n[1])
    if Nn >= 2:
        spec.free.append("p")
        spec.bounds["p"] = N_EXPONENT_BOUNDS
    else:
        spec.fixed["p"] = n_assumed
        spec.assumed.append(
            f"p: exponent in n of the time assumed = Theory.memory_n = {n_assumed:g} (one "
            "value of n: the growth of time in n is not measured; the work of a step is "
            "taken to scale like the state it holds, which under-predicts beyond the measured "
            "n where a step's work grows faster than its state, e.g. a dense matrix-vector "
            "product: n² work on n state)")
    if two_terms:
        spec.free.append("c")
        spec.bounds["c"] = (1e-12, math.inf)
        if Nn_multi >= 3:
            spec.terms.append(_Term("c", None, "q"))
            spec.free.append("q")
            spec.bounds["q"] = N_EXPONENT_BOUNDS
        else:
            # the backward's term is seen only through the intercepts in K, one per n: two
            # noisy differences would fix q exactly, so it shares the forward's exponent
            spec.terms.append(_Term("c", None, "p"))
            spec.assumed.append(f"q = p: the backward's exponent in n taken equal to the "
                                f"forward's ({Nn_multi} value(s) of n measured at ≥ 2 values "
                                "of K; q is fitted from 3)")
        # d·K^t, the per-step cost that does not grow with n (dispatch, a solver's scalar
        # work), is seen only through the slope in K at each n: d + b·n^p has three
        # parameters, so it needs slopes at 3 values of n (each measured at ≥ 2 values of K)
        if Nn_multi >= 3:
            spec.terms.insert(1, _Term("d", "t", None))
            spec.free.append("d")
            spec.bounds["d"] = (1e-12, math.inf)
            spec.refinements = ("d",)
        else:
            spec.assumed.append(f"d: no per-step term independent of n (the slope in K is "
                                f"seen at {Nn_multi} value(s) of n; d is fitted from 3)")
        # the K-independent part a + c·n^q is seen at Nn levels
        spec.constant = Nn >= 3
    else:
        levels = Nn if (NK == 1 or flat) else N
        spec.constant = Nn >= 2 and levels >= 1 + len(spec.free)
    _keep_determined(spec, N, order=("a", "d", "t", "q", "p", "c"),
                     theory_values={"t": band_K[1], "p": n_assumed, "q": n_assumed})
    has_d = any(t.coef == "d" for t in spec.terms)
    spec.form = (("a + " if spec.constant else "")
                 + ("(d + b·n^p)·K^t" if has_d else "b·K^t·n^p")
                 + "".join(f" + c·n^{t.n_exp}" for t in spec.terms if t.coef == "c"))
    return spec


def _keep_determined(spec: _Spec, N: int, order: tuple[str, ...], theory_values: dict
                    ) -> None:
    """Drop terms, in ``order``, until no more parameters are free than there are points."""
    def count() -> int:
        return len(spec.free) + (1 if spec.constant else 0)

    for name in order:
        if count() <= N:
            return
        if name == "a" and spec.constant:
            spec.constant = False
            spec.assumed.append(f"a: no constant term ({N} points)")
        elif name in ("c", "d") and name in spec.free:
            spec.free.remove(name)
            spec.terms = [t for t in spec.terms if t.coef != name]
            spec.assumed.append(f"{name}: term dropped ({N} points)")
        elif name in spec.free:
            spec.free.remove(name)
            spec.fixed[name] = float(theory_values[name])
            spec.assumed.append(f"{name}: assumed {theory_values[name]:g} ({N} points)")


def _fit_spec(spec: _Spec, u: np.ndarray, v: np.ndarray, y: np.ndarray
              ) -> tuple[dict[str, float], float, np.ndarray, tuple[str, ...]]:
    """Least squares on the log scale over the free parameters: (values, RSS, the Jacobian
    of log law at the fitted points in the free parameters not at a bound, their names)."""
    from scipy.optimize import least_squares

    free = (["a"] if spec.constant else []) + spec.free
    bounds = {**spec.bounds, "a": (0.0, math.inf)}
    log_y = np.log(y)
    terms = tuple(spec.terms)

    def unpack(theta: np.ndarray) -> dict[str, float]:
        return {**spec.fixed, **dict(zip(free, (float(t) for t in theta), strict=True))}

    def residual(theta: np.ndarray) -> np.ndarray:
        law, _ = _evaluate(spec.constant, terms, unpack(theta), (), u, v)
        return np.log(law) - log_y

    def jacobian(theta: np.ndarray) -> np.ndarray:
        return _evaluate(spec.constant, terms, unpack(theta), tuple(free), u, v)[1]

    # starts: the slope of log y in log n for the n exponents, band middles for K's, and the
    # constant at 0 and at half the smallest value
    slope_n = 1.0
    if np.ptp(np.log(u)) > 0:
        slope_n = float(np.clip(np.polyfit(np.log(u), log_y, 1)[0], *N_EXPONENT_BOUNDS))
    top = float(y[np.argmax(u * v)]) if y.size else 1.0
    best = None
    for a0 in ([0.0, 0.5 * float(y.min())] if spec.constant else [0.0]):
        for n_start in dict.fromkeys((slope_n, 1.0)):
            # the plain law's start once per constant start (from the measured slope)
            plains = [False, True] if spec.refinements and n_start == slope_n else [False]
            for plain in plains:
                start = []
                for name in free:
                    lo, hi = bounds[name]
                    if name == "a":
                        value = a0
                    elif plain and name in spec.refinements:
                        value = lo
                    elif name in ("b", "c", "d"):
                        value = max(top - a0, 1e-6) / len(terms)
                    elif name in ("p", "q"):
                        value = n_start
                    else:
                        value = (lo + hi) / 2
                    start.append(float(np.clip(value, lo, hi)))
                lo_b = [bounds[name][0] for name in free]
                hi_b = [bounds[name][1] for name in free]
                fit = least_squares(residual, np.array(start), jac=jacobian,
                                    bounds=(lo_b, hi_b), method="trf", x_scale="jac",
                                    max_nfev=500)
                if best is None or fit.cost < best.cost:
                    best = fit
    assert best is not None
    values = unpack(best.x)
    at_bound = [abs(best.x[i] - bounds[name][0]) <= 1e-9 * max(1.0, abs(best.x[i]))
                or abs(best.x[i] - bounds[name][1]) <= 1e-9 * max(1.0, abs(best.x[i]))
                for i, name in enumerate(free)]
    active = tuple(name for name, hit in zip(free, at_bound, strict=True) if not hit)
    jac = _evaluate(spec.constant, terms, values, active, u, v)[1]
    return values, float(2 * best.cost), jac, active


def _overhead_dropped(n: np.ndarray, K: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mask of the points in the constant-overhead regime: at each K measured at ≥ 3 values
    of n, the leading n that ``analysis.fit_window`` drops."""
    mask = np.zeros(n.shape, dtype=bool)
    for k in np.unique(K):
        at = np.flatnonzero(K == k)
        order = at[np.argsort(n[at])]
        if len(order) >= 3 and np.all(y[order] > 0):
            start = fit_window(n[order].astype(float), y[order].astype(float))
            mask[order[:start]] = True
    return mask


def fit_law(metric: str, backend: str, n: np.ndarray, K: np.ndarray, y: np.ndarray,
            field_name: str = "points") -> Law:
    """The law of ``metric`` over points (n, K, y) of one series (one value per (n, K)) of
    strategy ``backend`` (whose theory gives the K exponent's band)."""
    n, K, y = (np.asarray(x, dtype=float) for x in (n, K, y))
    keep = np.isfinite(y) & (y >= 0)
    n, K, y = n[keep], K[keep], y[keep]
    if len(y) < MIN_POINTS:
        raise UsageError(field_name, f"{metric}: {len(y)} point(s) (n, K) with a value: too "
                         "few to fit a law", f"at least {MIN_POINTS} points (n, K) per series")
    all_points = tuple((int(a), int(b), float(c)) for a, b, c in zip(n, K, y, strict=True))
    if np.all(y == 0):
        return Law(metric, "0", {}, (), ("every measured value is 0",),
                   (float(n.min()), float(n.max())), (float(K.min()), float(K.max())),
                   all_points, (), len(y) - 1, 0.0, _zero=True)
    zeros = y <= 0
    theory = _theory(backend)
    make_spec = _memory_spec if metric in MEMORY_METRICS else _time_spec

    def spec_for(mask: np.ndarray) -> _Spec:
        kept_n, kept_K = n[~mask], K[~mask]
        multi = sum(len(np.unique(kept_K[kept_n == v])) >= 2 for v in np.unique(kept_n))
        return make_spec(theory, len(np.unique(kept_n)), len(np.unique(kept_K)),
                         int((~mask).sum()), int(multi))

    dropped_mask = zeros
    spec = spec_for(dropped_mask)
    if not spec.constant:
        # no constant term to carry the overhead: leave its regime out where it is seen
        overhead = _overhead_dropped(n, K, y) & ~zeros
        if overhead.any():
            dropped_mask = zeros | overhead
            spec = spec_for(dropped_mask)
    n_fit, K_fit, y_fit = n[~dropped_mask], K[~dropped_mask], y[~dropped_mask]
    N = len(y_fit)
    if zeros.any():
        spec.assumed.append(f"{int(zeros.sum())} point(s) at 0 left out of the log fit")
    n0, K0, y0 = float(n_fit.max()), float(K_fit.max()), float(np.median(y_fit))
    u, v, yn = n_fit / n0, K_fit / K0, y_fit / y0
    values, rss, jac, active = _fit_spec(spec, u, v, yn)
    dof = N - len(active)
    sigma = math.sqrt(rss / dof) if dof >= 1 else math.nan
    cov = np.linalg.pinv(jac.T @ jac) if active else np.zeros((0, 0))
    free_all = (["a"] if spec.constant else []) + spec.free
    # original units: a·y0; coef·y0 / (K0^k · n0^p)
    params: dict[str, float] = {}
    if spec.constant:
        params["a"] = values["a"] * y0
    for term in spec.terms:
        scale = ((n0 ** values[term.n_exp] if term.n_exp else 1.0)
                 * (K0 ** values[term.k_exp] if term.k_exp else 1.0))
        params[term.coef] = values[term.coef] * y0 / scale
        if term.n_exp is not None:
            params[term.n_exp] = values[term.n_exp]
        if term.k_exp is not None:
            params[term.k_exp] = values[term.k_exp]
    return Law(metric=metric, form=spec.form, params=params, fitted=tuple(free_all),
               assumed=tuple(spec.assumed),
               n_range=(float(n_fit.min()), float(n_fit.max())),
               K_range=(float(K_fit.min()), float(K_fit.max())),
               points=tuple((int(a), int(b), float(c))
                            for a, b, c in zip(n_fit, K_fit, y_fit, strict=True)),
               dropped=tuple((int(a), int(b)) for a, b in
                             zip(n[dropped_mask], K[dropped_mask], strict=True)),
               dof=dof, sigma=sigma, _constant=spec.constant, _terms=tuple(spec.terms),
               _norm=values, _free=active,
               _cov=tuple(tuple(float(x) for x in row) for row in cov),
               _scale=(n0, K0, y0))


# --------------------------------------------------------------------------- error laws
@dataclass(frozen=True)
class _Linear:
    """OLS of log y on the columns of X, with what the interval needs."""

    beta: tuple[float, ...]
    sigma: float
    dof: int
    cov: tuple[tuple[float, ...], ...]

    @classmethod
    def fit(cls, X: np.ndarray, log_y: np.ndarray) -> _Linear:
        beta, *_ = np.linalg.lstsq(X, log_y, rcond=None)
        dof = len(log_y) - X.shape[1]
        rss = float(np.sum((X @ beta - log_y) ** 2))
        sigma = math.sqrt(rss / dof) if dof >= 1 else math.nan
        cov = np.linalg.pinv(X.T @ X)
        return cls(tuple(float(b) for b in beta), sigma, dof,
                   tuple(tuple(float(c) for c in row) for row in cov))

    def predict(self, x: np.ndarray) -> tuple[float, float, float]:
        log_value = float(np.dot(self.beta, x))
        low, high = _interval(log_value, np.asarray(x, float), self.sigma, self.dof,
                              np.array(self.cov))
        return math.exp(log_value), low, high


@dataclass(frozen=True)
class ResidualLaw:
    """log error = log c + α·log residual over a series' points (forward residual
    ‖F(θ, x_K)‖ > 0, error above the rounding floor)."""

    c: float
    alpha: float
    residual_range: tuple[float, float]
    points: int
    _fit: _Linear = field(repr=False)

    def predict(self, residual: float) -> Prediction:
        value, low, high = self._fit.predict(np.array([1.0, math.log(residual)]))
        lo, hi = self.residual_range
        return Prediction(value, low, high, max(1.0, residual / hi, lo / residual))

    def to_json(self) -> dict[str, Any]:
        return {"c": _finite(self.c), "alpha": _finite(self.alpha),
                "residual_range": list(self.residual_range), "points": self.points}


@dataclass(frozen=True)
class ErrorLaw:
    """How the gradient error (``grad_error_converged``) falls with K, n pooled.

    ``kind``: ``"geometric"`` (error ≈ max(C·ρ^K, floor)), ``"bias"`` (a plateau at ``bias``,
    after a geometric transient where one was measured), ``"rounding"`` (at the rounding floor
    from ``rounding_K`` on; where one K lies above it, C and ρ join that point to the error
    measured at ``rounding_K``: the slowest geometric rate that reaches it there, so its
    K to reach a tolerance is an upper bound)."""

    kind: str
    C: float
    rho: float
    bias: float
    floor: float
    K_range: tuple[float, float]
    points: int
    plateau_K: tuple[int, ...] = ()
    rounding_K: float = math.nan
    _geometric: _Linear | None = field(default=None, repr=False)
    _bias: _Linear | None = field(default=None, repr=False)

    def predict(self, K: float) -> Prediction:
        extrapolation = max(1.0, K / self.K_range[1], self.K_range[0] / K)
        if self.kind == "rounding" and self._geometric is None:
            return Prediction(self.floor, math.nan, math.nan, extrapolation)
        transient = (self._geometric.predict(np.array([1.0, K]))
                     if self._geometric is not None else None)
        if self.kind in ("geometric", "rounding"):
            assert transient is not None
            chosen = transient
        else:
            assert self._bias is not None
            level = self._bias.predict(np.array([1.0]))
            chosen = transient if transient is not None and transient[0] > level[0] else level
        # no error below rounding: a geometric law extrapolated past the floor stops there
        value, low, high = (max(x, self.floor) if math.isfinite(x) else x for x in chosen)
        return Prediction(value, low, high, extrapolation)

    def K_to_reach(self, tol: float) -> float | None:
        """The K from which the predicted error is ≤ ``tol``; None where it never is (a bias
        or the rounding floor above ``tol``). Where the data only bound it (the first K of a
        plateau, the first K at rounding), that bound."""
        if self.kind == "rounding" and (tol < self.floor or self._geometric is None):
            return self.rounding_K if tol >= self.floor else None
        if self.kind == "bias" and tol < self.bias:
            return None
        if self._geometric is not None and self.rho < 1:
            log_c, log_rho = self._geometric.beta
            return max(1.0, (math.log(tol) - log_c) / log_rho)
        return float(self.plateau_K[0]) if self.plateau_K else None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "C": _finite(self.C), "rho": _finite(self.rho),
                "bias": _finite(self.bias), "rounding_floor": self.floor,
                "plateau_K": list(self.plateau_K), "rounding_K": _finite(self.rounding_K),
                "K_range": list(self.K_range), "points": self.points}


def fit_error_law(K: np.ndarray, err: np.ndarray, dtype: str = "float64",
                  field_name: str = "points") -> ErrorLaw:
    """The error law over (K, error) points of one series (n pooled; see the module doc)."""
    K, err = np.asarray(K, float), np.asarray(err, float)
    keep = np.isfinite(err) & (err >= 0)
    K, err = K[keep], err[keep]
    if len(np.unique(K)) < MIN_POINTS:
        raise UsageError(field_name, f"{ERROR_METRIC}: {len(np.unique(K))} value(s) of K with "
                         "an error: too few to fit a law", f"at least {MIN_POINTS} values of K")
    floor = rounding_floor(dtype)
    above = err > floor
    K_range = (float(K.min()), float(K.max()))
    Ks = np.unique(K[above])
    if len(Ks) < 2:
        at_rounding = np.setdiff1d(np.unique(K), Ks)
        if len(Ks) == 1:
            at_rounding = at_rounding[at_rounding > Ks[0]]
        first = float(at_rounding.min()) if at_rounding.size else math.nan
        geometric = None
        if len(Ks) == 1 and at_rounding.size:
            ends = np.log([float(np.median(err[above])),
                           max(float(np.median(err[K == first])), 1e-300)])
            geometric = _Linear.fit(np.array([[1.0, Ks[0]], [1.0, first]]), ends)
        C, rho = ((math.exp(geometric.beta[0]), math.exp(geometric.beta[1]))
                  if geometric is not None else (math.nan, math.nan))
        return ErrorLaw("rounding", C, rho, math.nan, floor, K_range, len(K),
                        rounding_K=first, _geometric=geometric)
    medians = np.array([np.median(err[above & (K == k)]) for k in Ks])
    j = len(Ks) - 1
    while j >= 1 and medians[j] > medians[j - 1] / PLATEAU_FACTOR:
        j -= 1
    if j < len(Ks) - 1:  # the last step (at least) is flat: a bias
        plateau = Ks[j:]
        in_plateau = above & np.isin(K, plateau)
        level = _Linear.fit(np.ones((int(in_plateau.sum()), 1)), np.log(err[in_plateau]))
        transient = None
        if j >= 2:
            before = above & np.isin(K, Ks[:j])
            transient = _Linear.fit(np.column_stack([np.ones(int(before.sum())), K[before]]),
                                    np.log(err[before]))
            if transient.beta[1] >= 0:
                transient = None
        C, rho = ((math.exp(transient.beta[0]), math.exp(transient.beta[1]))
                  if transient is not None else (math.nan, math.nan))
        return ErrorLaw("bias", C, rho, math.exp(level.beta[0]), floor, K_range, len(K),
                        plateau_K=tuple(int(k) for k in plateau), _geometric=transient,
                        _bias=level)
    X = np.column_stack([np.ones(int(above.sum())), K[above]])
    geometric = _Linear.fit(X, np.log(err[above]))
    return ErrorLaw("geometric", math.exp(geometric.beta[0]), math.exp(geometric.beta[1]),
                    math.nan, floor, K_range, len(K), _geometric=geometric)


def fit_residual_law(residual: np.ndarray, err: np.ndarray, dtype: str = "float64"
                     ) -> ResidualLaw | None:
    """log error against log forward residual; None with fewer than 3 usable points or one
    residual."""
    residual, err = np.asarray(residual, float), np.asarray(err, float)
    keep = (np.isfinite(residual) & (residual > 0) & np.isfinite(err)
            & (err > rounding_floor(dtype)))
    residual, err = residual[keep], err[keep]
    if len(err) < 3 or len(np.unique(residual)) < 2:
        return None
    fit = _Linear.fit(np.column_stack([np.ones(len(err)), np.log(residual)]), np.log(err))
    return ResidualLaw(math.exp(fit.beta[0]), fit.beta[1],
                       (float(residual.min()), float(residual.max())), len(err), fit)


# --------------------------------------------------------------------------- per series
@dataclass(frozen=True)
class SeriesLaws:
    """A series' laws: one per cost metric it could be fitted for (``skipped``: why not),
    its gradient-error law and its error-vs-residual relation."""

    key: SeriesKey
    laws: dict[str, Law]
    skipped: dict[str, str]
    error: ErrorLaw | None
    error_note: str | None
    residual: ResidualLaw | None
    n_values: tuple[int, ...]
    K_values: tuple[int, ...]

    @property
    def n_range(self) -> tuple[float, float]:
        return float(min(self.n_values)), float(max(self.n_values))

    @property
    def K_range(self) -> tuple[float, float]:
        return float(min(self.K_values)), float(max(self.K_values))

    def extrapolation(self, n: float, K: float) -> float:
        """The largest extrapolation factor of this series' predictions at (n, K)."""
        factors = [law.predict(n, K).extrapolation for law in self.laws.values()]
        return max(factors or [extrapolation_factor(n, K, self.n_range, self.K_range)])

    def to_json(self) -> dict[str, Any]:
        return {**self.key.to_json(), "laws": {m: law.to_json() for m, law in self.laws.items()},
                "skipped": dict(self.skipped),
                "error_law": self.error.to_json() if self.error else None,
                "error_note": self.error_note,
                "residual_law": self.residual.to_json() if self.residual else None,
                "n_values": list(self.n_values), "K_values": list(self.K_values)}


def fit_series(key: SeriesKey, points: pd.DataFrame) -> SeriesLaws:
    """Every law of one series from its rows of :func:`series_points`."""
    n = points["n"].to_numpy(float)
    K = points["K"].to_numpy(float)
    laws: dict[str, Law] = {}
    skipped: dict[str, str] = {}
    for metric in COST_METRICS:
        try:
            laws[metric] = fit_law(metric, key.backend, n, K, points[metric].to_numpy(float))
        except UsageError as exc:
            skipped[metric] = exc.detail
    error, note = None, None
    try:
        error = fit_error_law(K, points[ERROR_METRIC].to_numpy(float), key.dtype)
    except UsageError as exc:
        note = exc.detail
    residual = fit_residual_law(points["inner_residual"].to_numpy(float),
                                points[ERROR_METRIC].to_numpy(float), key.dtype)
    return SeriesLaws(key, laws, skipped, error, note, residual,
                      tuple(sorted({int(x) for x in n})), tuple(sorted({int(x) for x in K})))


def fit_laws(frame: pd.DataFrame, problem: str | None = None,
             field_name: str = "records") -> list[SeriesLaws]:
    """The laws of every series of ``frame`` (of ``problem`` only, when given), sorted by
    series. A UsageError naming ``field_name`` where the frame has no ok record, or no series
    with enough points for any law; naming ``problem`` where the run did not measure it."""
    points = series_points(frame)
    if points.empty:
        raise UsageError(field_name, "no ok record to fit laws on",
                         "a run with measured (ok) points")
    if problem is not None:
        measured = sorted(points["problem"].unique())
        if problem not in measured:
            raise UsageError("problem", f"{problem!r} was not measured in this run", measured)
        points = points[points["problem"] == problem]
    out = []
    for values, group in points.groupby(list(SERIES_FIELDS), sort=True, dropna=False):
        out.append(fit_series(SeriesKey(*(str(v) for v in values)), group))
    if not any(s.laws for s in out):
        most = int(points.groupby(list(SERIES_FIELDS)).size().max())
        raise UsageError(field_name, f"too few points to fit a law: the series have at most "
                         f"{most} point(s) (n, K) each",
                         f"at least {MIN_POINTS} ok points (n, K) per series")
    return out


# --------------------------------------------------------------------------- the check
@dataclass(frozen=True)
class Target:
    """A hit: ``kind`` "relative" (|predicted/measured − 1| ≤ tolerance) or "factor"
    (1/tolerance ≤ predicted/measured ≤ tolerance); the target: hits on ≥ ``rate``."""

    metric: str
    what: str
    kind: str
    tolerance: float
    rate: float

    def hit(self, predicted: float, measured: float) -> bool:
        if measured == 0 or predicted == 0:
            return predicted == measured
        ratio = predicted / measured
        if self.kind == "factor":
            return 1 / self.tolerance <= ratio <= self.tolerance
        return abs(ratio - 1) <= self.tolerance + 1e-12


#: the tolerance the check measures "K to reach" at
CHECK_TOL = 1e-6
#: what the issue asks of the laws (the last rate is ours: the issue names none)
TARGETS = (Target("trace_bytes", "within 10 %", "relative", 0.10, 0.90),
           Target("peak_bytes", "within 25 %", "relative", 0.25, 0.80),
           Target("time_s", "within a factor 2", "factor", 2.0, 0.80),
           Target("K_to_reach", f"K to reach {CHECK_TOL:g} within ±30 %", "relative", 0.30,
                  0.80))


@dataclass(frozen=True)
class CheckPoint:
    """One prediction against its measurement (``K`` is None for ``K_to_reach``, whose
    ``predicted``/``measured`` are K values and None where never reached)."""

    key: SeriesKey
    n: int
    K: int | None
    metric: str
    predicted: float | None
    low: float | None
    high: float | None
    measured: float | None
    ratio: float | None
    hit: bool
    extrapolation: float
    #: K_to_reach measured only as the interval (measured_low, measured]: the first error at
    #: or below the tolerance was at rounding
    measured_low: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {**self.key.to_json(), "n": self.n, "K": self.K, "metric": self.metric,
                "predicted": _finite(self.predicted), "low": _finite(self.low),
                "high": _finite(self.high), "measured": _finite(self.measured),
                "measured_low": _finite(self.measured_low),
                "ratio": _finite(self.ratio), "hit": self.hit,
                "extrapolation": _finite(self.extrapolation)}


@dataclass(frozen=True)
class Rate:
    metric: str
    what: str
    hits: int
    total: int
    target: float

    @property
    def rate(self) -> float:
        return self.hits / self.total if self.total else math.nan

    @property
    def met(self) -> bool | None:
        return None if not self.total else self.rate >= self.target

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "what": self.what, "hits": self.hits,
                "total": self.total, "rate": _finite(self.rate), "target": self.target,
                "met": self.met}


@dataclass(frozen=True)
class CheckResult:
    points: tuple[CheckPoint, ...]
    rates: tuple[Rate, ...]
    #: series of the checked run with no law in the fitted one (not predicted)
    unmatched: tuple[SeriesKey, ...]
    #: (series, n, why) where the measured K to reach ``CHECK_TOL`` is not measurable
    not_measurable: tuple[tuple[SeriesKey, int, str], ...]

    @property
    def misses(self) -> tuple[CheckPoint, ...]:
        return tuple(p for p in self.points if not p.hit)

    def to_json(self) -> dict[str, Any]:
        return {"points": [p.to_json() for p in self.points],
                "rates": [r.to_json() for r in self.rates],
                "unmatched": [k.to_json() for k in self.unmatched],
                "not_measurable": [{**k.to_json(), "n": n, "why": why}
                                   for k, n, why in self.not_measurable]}


def measured_K_to_reach(K: np.ndarray, err: np.ndarray, tol: float, floor: float = 0.0
                        ) -> tuple[float | None, float | None, str]:
    """The K at which measured errors (one per K) first reach ``tol``, log-linearly
    interpolated between the last K above it and the first at or below it, and a lower bound:
    None where that first error is a measurement, the K before it where that error is at
    rounding (≤ ``floor``: the error may have reached ``tol`` anywhere after the K before, and
    the interpolation is only an upper bound). (None, None, why) where the data do not
    bracket it."""
    order = np.argsort(K)
    K, err = np.asarray(K, float)[order], np.asarray(err, float)[order]
    keep = np.isfinite(err)
    K, err = K[keep], err[keep]
    below = np.flatnonzero(err <= tol)
    if not below.size:
        return None, None, (f"not reached by K = {K.max():g}" if K.size
                            else "no error measured")
    i = int(below[0])
    if i == 0:
        return None, None, f"already reached at the smallest K measured ({K[0]:g})"
    lo, hi = math.log(err[i - 1]), math.log(max(err[i], 1e-300))
    frac = (math.log(tol) - lo) / (hi - lo) if hi != lo else 1.0
    bound = float(K[i - 1]) if err[i] <= floor else None
    return float(K[i - 1] + frac * (K[i] - K[i - 1])), bound, ""


def check_predictions(laws: list[SeriesLaws], frame: pd.DataFrame,
                      tol: float = CHECK_TOL) -> CheckResult:
    """Every ok point of ``frame`` whose series has laws in ``laws``, predicted and compared
    per metric (hits by ``TARGETS``), and per (series, n) the K to reach ``tol``."""
    by_key = {s.key: s for s in laws}
    points = series_points(frame)
    out: list[CheckPoint] = []
    unmatched: list[SeriesKey] = []
    not_measurable: list[tuple[SeriesKey, int, str]] = []
    targets = {t.metric: t for t in TARGETS}
    for values, group in points.groupby(list(SERIES_FIELDS), sort=True, dropna=False):
        key = SeriesKey(*(str(v) for v in values))
        series = by_key.get(key)
        if series is None:
            unmatched.append(key)
            continue
        for _, row in group.iterrows():
            for metric in COST_METRICS:
                measured = row[metric]
                law = series.laws.get(metric)
                if law is None or not math.isfinite(measured):
                    continue
                p = law.predict(row["n"], row["K"])
                ratio = p.value / measured if measured else (1.0 if p.value == 0 else math.inf)
                out.append(CheckPoint(key, int(row["n"]), int(row["K"]), metric, p.value,
                                      p.low, p.high, float(measured), ratio,
                                      targets[metric].hit(p.value, float(measured)),
                                      p.extrapolation))
        if series.error is None:
            continue
        for n_value, at_n in group.groupby("n"):
            measured_K, low, why = measured_K_to_reach(
                at_n["K"].to_numpy(float), at_n[ERROR_METRIC].to_numpy(float), tol,
                rounding_floor(key.dtype))
            if measured_K is None:
                not_measurable.append((key, int(n_value), why))
                continue
            predicted = series.error.K_to_reach(tol)
            target = targets["K_to_reach"]
            if predicted is None:
                hit = False
            elif low is None:
                hit = target.hit(predicted, measured_K)
            else:  # measured within (low, measured_K]: a hit anywhere in it ± the tolerance
                hit = (1 - target.tolerance) * low <= predicted <= \
                    (1 + target.tolerance) * measured_K
            extrapolation = (max(1.0, measured_K / series.error.K_range[1],
                                 series.error.K_range[0] / measured_K))
            out.append(CheckPoint(key, int(n_value), None, "K_to_reach", predicted, None, None,
                                  measured_K,
                                  None if predicted is None else predicted / measured_K,
                                  hit, extrapolation, measured_low=low))
    rates = tuple(Rate(t.metric, t.what, sum(p.hit for p in out if p.metric == t.metric),
                       sum(p.metric == t.metric for p in out), t.rate) for t in TARGETS)
    return CheckResult(tuple(out), rates, tuple(unmatched), tuple(not_measurable))
