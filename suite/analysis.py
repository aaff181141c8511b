"""Analysis of a results frame: scaling exponents against theory, crossovers, Pareto fronts,
per-step tape cost.

Everything here is a pure function of the records (a pandas DataFrame from
``suite.records.load_frame``), so it can be tested on a frame built by hand.

A *series* is one (problem, backend, framework, device, dtype, seed, problem options, strategy
options) at one n (swept over K) or at one K (swept over n). Nothing here aggregates across two
series: medians are taken only over records of the same point (repeated records of one point).
How the report words and formats these results (summary verdicts, notes on disagreeing fits,
which records make one figure, figure titles, cell formats) is ``reports/``'s business:
``reports.fit_summary``, ``reports.figure_groups``, ``reports.cells``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

import backends
import problems

#: a fitted exponent "agrees" with theory when it lies within this distance of the band
EXPONENT_TOLERANCE = 0.2
#: an exponent is given a verdict only when fitted on at least this many values of the swept
#: variable, spanning at least this factor (a decade), above the constant-overhead regime
MIN_FIT_POINTS = 3
MIN_FIT_SPAN = 10.0
#: what identifies a series apart from the swept and the held size
SERIES_KEYS = ["problem", "backend", "framework", "device", "dtype", "seed", "problem_options",
               "strategy_options"]
#: the former key (options as one string) is kept in the exponents' rows for the gate
SERIES = SERIES_KEYS + ["options_str"]
#: what a figure group holds fixed besides the held size (K figures: n; n figures: K)
GROUP_KEYS = ["problem", "problem_options", "dtype", "device", "seed"]
METRICS = ("trace_bytes", "peak_bytes", "time_s")
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "complex128": 16,
            "complex64": 8}


def _split_options(row: pd.Series) -> tuple[str, str]:
    """(problem options, strategy options) of a record as ``k=v,…`` strings."""
    problem = problems.find(row["problem"])
    declared = {o.name for o in problem.options} if problem is not None else set()
    opts = row["options"] if isinstance(row["options"], dict) else {}
    own = sorted(opts.items())
    return (",".join(f"{k}={v}" for k, v in own if k in declared),
            ",".join(f"{k}={v}" for k, v in own if k not in declared))


def annotate(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``problem_options`` (shared by every strategy of a comparison) and
    ``strategy_options`` (what distinguishes, say, two truncations) columns."""
    out = frame.copy()
    if "options_str" not in out:
        out["options_str"] = ""
    parts = [_split_options(row) for _, row in out.iterrows()]
    out["problem_options"] = [p for p, _ in parts]
    out["strategy_options"] = [s for _, s in parts]
    return out


def ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[frame["status"] == "ok"]
    out = annotate(out) if "strategy_options" not in out else out.copy()
    for col in ("device", "seed", "dtype", "problem_options", "strategy_options", "options_str"):
        if col not in out:
            out[col] = ""
    return out


def theory_band(backend: str, metric: str, variable: str) -> tuple[float, float] | None:
    strategy = backends.registry().get(backend)
    if strategy is None or not hasattr(strategy, "theory"):
        return None
    theory = strategy.theory
    if metric in ("peak_bytes", "trace_bytes"):
        return theory.memory_K if variable == "K" else theory.memory_n
    if metric == "time_s" and variable == "K":
        return theory.time_K
    return None


def fit_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(lx, ly, 1)[0])


def fit_window(x: np.ndarray, y: np.ndarray, tolerance: float = EXPONENT_TOLERANCE) -> int:
    """Index of the first point above the constant-overhead regime (x sorted ascending).

    With y = c + b·x^p, the constant c bends the log–log curve at small x: the local slope
    there is below p. A leading point is taken to lie in that regime when the slope from it to
    the next point differs by more than ``tolerance`` from the slope fitted over the points
    after it; such points are dropped one by one, a point being examined only while at least
    three remain (so a bent 3-point grid keeps 2 and gets no verdict). Three collinear points
    (no bend) are all kept.
    """
    start = 0
    while len(x) - start >= 3:
        head = fit_slope(x[start:start + 2], y[start:start + 2])
        rest = fit_slope(x[start + 1:], y[start + 1:])
        if abs(head - rest) <= tolerance:
            break
        start += 1
    return start


def _verdict(slope: float, band: tuple[float, float] | None, fitted: bool) -> str:
    if not fitted:
        return "too few points"
    if band is None:
        return "no theory"
    ok = band[0] - EXPONENT_TOLERANCE <= slope <= band[1] + EXPONENT_TOLERANCE
    return "agrees" if ok else "disagrees"


def scaling_exponents(frame: pd.DataFrame, variable: str = "K", tail: int | None = None,
                      metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """One row per (series, the other size held fixed, metric): the log–log slope of the metric
    against ``variable`` ("K" or "n") over the points above the constant-overhead regime
    (``fit_window``; or the ``tail`` largest values when given), the theory band, and

    * ``verdict``: "agrees"/"disagrees" with the band ± ``EXPONENT_TOLERANCE`` when the fit
      rests on ≥ ``MIN_FIT_POINTS`` values spanning ≥ ``MIN_FIT_SPAN``; otherwise "too few
      points" (the slope is still given, marked provisional);
    * ``agrees``: the band check on whatever was fitted (≥ 2 points) — what the gate reads;
    * ``used``: the values of ``variable`` the fit used.
    """
    fixed = "n" if variable == "K" else "K"
    rows = []
    data = ok_rows(frame)
    for key, group in data.groupby(SERIES + [fixed], dropna=False):
        for metric in metrics:
            if metric not in group:
                continue
            values = pd.to_numeric(group[metric], errors="coerce")
            sub = group[values.notna() & (values >= 0)].assign(**{metric: values})
            sub = sub.groupby(variable, as_index=False)[metric].median().sort_values(variable)
            all_zero = len(sub) >= 2 and bool((sub[metric] == 0).all())
            if not all_zero:  # a log–log fit ignores zeros; exactly 0 everywhere is flat
                sub = sub[sub[metric] > 0]
            if len(sub) < 2:
                continue
            x, y = sub[variable].to_numpy(float), sub[metric].to_numpy(float)
            if all_zero:
                start, slope = 0, 0.0
            else:
                start = len(x) - tail if tail else fit_window(x, y)
            x, y = x[max(start, 0):], y[max(start, 0):]
            if not all_zero:
                slope = fit_slope(x, y)
            fitted = len(x) >= MIN_FIT_POINTS and x[-1] / x[0] >= MIN_FIT_SPAN
            band = theory_band(key[1], metric, variable)
            agrees = (None if band is None else
                      bool(band[0] - EXPONENT_TOLERANCE <= slope <= band[1] + EXPONENT_TOLERANCE))
            rows.append({**dict(zip(SERIES + [fixed], key, strict=True)), "variable": variable,
                         "metric": metric, "slope": slope, "points": len(x),
                         "x_min": x[0], "x_max": x[-1],
                         "used": ", ".join(f"{v:g}" for v in x),
                         "dropped": ", ".join(f"{v:g}" for v in
                                              sub[variable].to_numpy(float)[:len(sub) - len(x)]),
                         "theory_lo": band[0] if band else math.nan,
                         "theory_hi": band[1] if band else math.nan, "agrees": agrees,
                         "fitted": fitted, "verdict": _verdict(slope, band, fitted),
                         "all_zero": all_zero})
    # no fit at all (no ok record with a meter: a run of failures, records made by hand): the
    # columns still exist, so that selecting by series finds nothing instead of failing
    return pd.DataFrame(rows, columns=[*SERIES, fixed, "variable", "metric", "slope", "points",
                                       "x_min", "x_max", "used", "dropped", "theory_lo",
                                       "theory_hi", "agrees", "fitted", "verdict", "all_zero"])


# --------------------------------------------------------------------------- crossovers
def _crossing(ks: list[int], better: list[bool], good: str = "faster",
              bad: str = "slower") -> tuple[int | None, str]:
    """The first K of a bracket (``bad`` at the K before, ``good`` from here on) and a verdict
    in words; ``None`` where the data show no bracket."""
    if len(ks) == 1:
        return None, f"{good if better[0] else bad} at K = {ks[0]} (one K: no crossover)"
    if all(better):
        return None, f"{good} at every K (≥ {ks[0]})"
    if not any(better):
        return None, f"never {good} (K ≤ {ks[-1]})"
    # the first index from which every larger K is better (len(ks): none, e.g. worse at the top)
    first = next(i for i in range(len(ks) + 1) if all(better[i:]))
    if first == len(ks):  # better somewhere, but not from some K on
        return None, f"mixed: {good} at K = " + ", ".join(
            str(k) for k, b in zip(ks, better, strict=True) if b)
    return ks[first], f"{good} from K = {ks[first]} ({bad} at {ks[first - 1]})"


#: the report's claim (Sec. 4.2) concerns the dense (naive) IFT solve
NAIVE_IFT = ("ift-direct",)


def _n_squared_verdict(backend: str, ks: list[int], faster: list[bool], n2: int) -> str:
    if backend not in NAIVE_IFT:
        return "– (dense solve only)"
    early = [k for k, f in zip(ks, faster, strict=True) if f and k <= n2]
    late = [k for k, f in zip(ks, faster, strict=True) if f and k > n2]
    if early:
        return f"contradicts: faster at K = {early[0]} ≤ n²"
    if late:
        return f"confirms: faster only at K = {late[0]} > n²"
    if max(ks) <= n2:
        return "consistent: never faster (no K > n² measured)"
    return "consistent: never faster"


def crossovers(frame: pd.DataFrame, baseline: str = "unrolled") -> pd.DataFrame:
    """For each problem, n, problem options, dtype, framework and IFT strategy: where it becomes
    faster than, and smaller in peak memory than, ``baseline`` at the same point. A crossover
    K is only claimed from a bracket (worse at one K, better at every larger measured K);
    otherwise the verdict says what the data show. ``n_squared`` uses n = dim x (the report's
    x ∈ ℝⁿ), with a verdict on "naive IFT is faster only for K > n²"."""
    data = ok_rows(frame)
    keys = ["problem", "framework", "device", "dtype", "seed", "n", "problem_options"]
    cols = keys + ["K", "time_s", "peak_bytes"]
    base = data[data["backend"] == baseline][cols].groupby(keys + ["K"], dropna=False) \
        .median().reset_index()
    rows = []
    ift = data[data["backend"].str.startswith("ift-")]
    for key, group in ift.groupby(keys + ["backend", "strategy_options"], dropna=False):
        own = group.groupby(keys + ["K"], dropna=False, as_index=False)[
            ["time_s", "peak_bytes", "dim_x"]].median()
        info = dict(zip(keys + ["backend", "strategy_options"], key, strict=True))
        merged = own.merge(base, on=keys + ["K"], suffixes=("", "_base")).sort_values("K")
        if merged.empty:
            continue
        ks = [int(k) for k in merged["K"]]
        faster = list(merged["time_s"] < merged["time_s_base"])
        smaller = list(merged["peak_bytes"] < merged["peak_bytes_base"])
        time_k, time_verdict = _crossing(ks, faster)
        mem_k, mem_verdict = _crossing(ks, smaller, "smaller", "larger")
        dim = merged["dim_x"].dropna()
        n_state = int(dim.iloc[0]) if len(dim) else int(info["n"])
        rows.append({**info, "K_grid": ", ".join(map(str, ks)),
                     "crossover_time_K": time_k, "time_verdict": time_verdict,
                     "crossover_memory_K": mem_k, "memory_verdict": mem_verdict,
                     "dim_x": n_state, "n_squared": n_state ** 2,
                     "n_squared_verdict": _n_squared_verdict(info["backend"], ks, faster,
                                                             n_state ** 2)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Pareto
def pareto_front(frame: pd.DataFrame, error: str = "grad_error_converged") -> pd.DataFrame:
    """At the largest K of each (problem, n, problem options, dtype, device, seed): every
    (strategy, framework, strategy options) with its peak memory, time and gradient error, and
    whether no other point is at least as good in all three and better in one (minimisation).
    Fronts never mix two n or two problem options."""
    data = ok_rows(frame)
    if data.empty:
        return pd.DataFrame()
    if error not in data or data[error].isna().all():
        error = "grad_rel_error"
    rows = []
    for key, group in data.groupby(GROUP_KEYS + ["n"], dropna=False):
        info = dict(zip(GROUP_KEYS + ["n"], key, strict=True))
        top = group[group["K"] == group["K"].max()]
        points = top[["backend", "framework", "strategy_options", "K", "peak_bytes", "time_s",
                      error]].dropna(subset=["peak_bytes", "time_s", error])
        values = points[["peak_bytes", "time_s", error]].to_numpy(float)
        for i, (_, row) in enumerate(points.iterrows()):
            others = np.delete(values, i, axis=0)
            dominated = bool(np.any(np.all(others <= values[i], axis=1)
                                    & np.any(others < values[i], axis=1)))
            rows.append({**info, **row.to_dict(), "error_metric": error,
                         "error": row[error], "pareto": not dominated})
    out = pd.DataFrame(rows)
    return out.drop(columns=[error]) if error in out and error != "error" else out


# --------------------------------------------------------------------------- tape cost
def _linear_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y against x (bytes per solver step)."""
    return float(np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)[0])


def tape_cost(frame: pd.DataFrame) -> pd.DataFrame:
    """Per reverse-mode series (theory: memory grows with K), the bytes kept per solver step —
    the slope b of the linear fit bytes ≈ a + b·K, for ``trace_bytes`` and ``peak_bytes`` —
    over the bytes of the solver state, dim x × itemsize: the factor above the physical
    minimum of one state per step."""
    data = ok_rows(frame)
    rows = []
    for key, group in data.groupby(SERIES_KEYS + ["n"], dropna=False):
        info = dict(zip(SERIES_KEYS + ["n"], key, strict=True))
        band = theory_band(info["backend"], "peak_bytes", "K")
        if band is None or band[1] <= 0:
            continue
        per_k = group.groupby("K")[["trace_bytes", "peak_bytes", "dim_x"]].median()
        if len(per_k) < 2 or per_k["dim_x"].isna().all():
            continue
        state = float(per_k["dim_x"].dropna().iloc[0]) * ITEMSIZE.get(str(info["dtype"]), 8)
        row = {**info, "K_used": ", ".join(str(int(k)) for k in per_k.index),
               "state_bytes": state}
        for metric in ("trace_bytes", "peak_bytes"):
            col = per_k[metric].dropna()
            per_step = _linear_slope(col.index.to_numpy(), col.to_numpy()) \
                if len(col) >= 2 else math.nan
            row[f"{metric}_per_step"] = per_step
            row[f"{metric}_factor"] = per_step / state
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- timing
def timing(frame: pd.DataFrame) -> pd.DataFrame:
    """Per point: forward solve vs backward (time − forward), the spread over repeats (the
    per-repeat ``times_s`` when recorded, else min vs median), compile time, inner residual."""
    data = ok_rows(frame)
    if data.empty:
        return data
    out = data[SERIES_KEYS + ["n", "K"]].copy()
    time_s = pd.to_numeric(data["time_s"], errors="coerce")
    fwd = pd.to_numeric(data.get("forward_time_s"), errors="coerce")
    out["time_s"] = time_s
    out["forward_time_s"] = fwd
    # JAX times the forward solve as its own compiled program: at small K it can take longer
    # than the whole gradient (dispatch dominates), and the difference is no backward time
    backward = (time_s - fwd).where(time_s >= fwd)
    out["backward_time_s"] = backward
    out["backward_share"] = backward / time_s
    tmin = pd.to_numeric(data.get("time_min_s"), errors="coerce")
    tmax = tmin * math.nan
    if "times_s" in data:
        times = data["times_s"].map(lambda t: t if isinstance(t, list) and t else None)
        tmin = times.map(lambda t: min(t) if t else math.nan).fillna(tmin)
        tmax = times.map(lambda t: max(t) if t else math.nan)
    out["time_min_s"] = tmin
    out["time_max_s"] = tmax
    out["spread"] = (time_s - tmin) / time_s
    for col in ("compile_s", "inner_residual", "repeats"):
        out[col] = pd.to_numeric(data[col], errors="coerce") if col in data else math.nan
    return out
