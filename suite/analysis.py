"""Analysis of a results frame: scaling exponents against theory, crossovers, Pareto fronts.

Everything here is a pure function of the records (a pandas DataFrame from
``suite.records.load_frame``), so it can be tested on a frame built by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

import backends
import problems

#: a fitted exponent "agrees" with theory when it lies within this distance of the band
EXPONENT_TOLERANCE = 0.2
#: exponents are fitted over the largest this-many values of the swept variable: the
#: asymptotic regime, where constant overheads (interpreter, allocator) no longer dominate
TAIL_POINTS = 3
SERIES = ["problem", "backend", "framework", "device", "dtype", "seed", "options_str"]
METRICS = ("peak_bytes", "trace_bytes", "time_s")


def _split_options(row: pd.Series) -> tuple[str, str]:
    """(problem options, strategy options) of a record as ``k=v,…`` strings."""
    declared = {o.name for o in problems.registry()[row["problem"]].options} \
        if row["problem"] in problems.registry() else set()
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
    return annotate(out) if "strategy_options" not in out else out.copy()


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


def scaling_exponents(frame: pd.DataFrame, variable: str = "K", tail: int = TAIL_POINTS,
                      metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """One row per (series, the other size held fixed, metric): the fitted log–log slope of
    the metric against ``variable`` ("K" or "n") over its ``tail`` largest values, the
    theoretical band from DESIGN.md's table, and whether they agree within the tolerance."""
    fixed = "n" if variable == "K" else "K"
    rows = []
    data = ok_rows(frame)
    for key, group in data.groupby(SERIES + [fixed], dropna=False):
        for metric in metrics:
            sub = group[group[metric].notna() & (group[metric] > 0)]
            sub = sub.groupby(variable, as_index=False)[metric].median().sort_values(variable)
            if len(sub) < 2:
                continue
            sub = sub.tail(tail)
            slope = fit_slope(sub[variable].to_numpy(), sub[metric].to_numpy())
            band = theory_band(key[1], metric, variable)
            agrees = (None if band is None else
                      bool(band[0] - EXPONENT_TOLERANCE <= slope <= band[1] + EXPONENT_TOLERANCE))
            rows.append({**dict(zip(SERIES + [fixed], key, strict=True)), "variable": variable,
                         "metric": metric, "slope": slope, "points": len(sub),
                         "x_min": sub[variable].min(), "x_max": sub[variable].max(),
                         "theory_lo": band[0] if band else math.nan,
                         "theory_hi": band[1] if band else math.nan, "agrees": agrees})
    return pd.DataFrame(rows)


def crossovers(frame: pd.DataFrame, baseline: str = "unrolled") -> pd.DataFrame:
    """For each problem, size and IFT strategy: the smallest K of the grid at which the
    strategy is cheaper than ``baseline`` in time and in peak memory (same framework, dtype,
    n, K and problem options), beside the report's n² (Sec. 4.2: naive IFT pays off in time
    only when K > n²). ``None`` where it never is within the grid."""
    data = ok_rows(frame)
    keys = ["problem", "framework", "device", "dtype", "seed", "n", "problem_options"]
    base = data[data["backend"] == baseline][keys + ["K", "time_s", "peak_bytes"]]
    rows = []
    ift = data[data["backend"].str.startswith("ift-")]
    for key, group in ift.groupby(keys + ["backend", "strategy_options"], dropna=False):
        merged = group.merge(base, on=keys + ["K"], suffixes=("", "_base")).sort_values("K")
        if merged.empty:
            continue
        faster = merged[merged["time_s"] < merged["time_s_base"]]
        smaller = merged[merged["peak_bytes"] < merged["peak_bytes_base"]]
        info = dict(zip(keys + ["backend", "strategy_options"], key, strict=True))
        rows.append({**info, "K_grid": f"{merged['K'].min()}–{merged['K'].max()}",
                     "crossover_time_K": int(faster["K"].min()) if len(faster) else None,
                     "crossover_memory_K": int(smaller["K"].min()) if len(smaller) else None,
                     "n_squared": int(info["n"]) ** 2})
    return pd.DataFrame(rows)


def pareto_front(frame: pd.DataFrame, error: str = "grad_error_converged") -> pd.DataFrame:
    """At each problem's largest K (and each n there): every (strategy, framework, options)
    with its peak memory, time and gradient error, and whether no other point is at least as
    good in all three and better in one (minimisation)."""
    data = ok_rows(frame)
    if data.empty:
        return pd.DataFrame()
    if error not in data or data[error].isna().all():
        error = "grad_rel_error"
    rows = []
    for (problem, n, problem_options, dtype), group in data.groupby(
            ["problem", "n", "problem_options", "dtype"]):
        top = group[group["K"] == group["K"].max()]
        points = top[["backend", "framework", "strategy_options", "K", "peak_bytes", "time_s",
                      error]].dropna(subset=["peak_bytes", "time_s", error])
        values = points[["peak_bytes", "time_s", error]].to_numpy(float)
        for i, (_, row) in enumerate(points.iterrows()):
            others = np.delete(values, i, axis=0)
            dominated = bool(np.any(np.all(others <= values[i], axis=1)
                                    & np.any(others < values[i], axis=1)))
            rows.append({"problem": problem, "n": n, "problem_options": problem_options,
                         "dtype": dtype, **row.to_dict(), "error_metric": error,
                         "error": row[error], "pareto": not dominated})
    out = pd.DataFrame(rows)
    return out.drop(columns=[error]) if error in out and error != "error" else out


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Strategy × problem (per framework): memory and time exponents in K, the error at the
    largest K, and whether the memory exponent agrees with theory."""
    exps = scaling_exponents(frame, "K", metrics=("peak_bytes", "time_s"))
    data = ok_rows(frame)
    rows = []
    for (problem, backend, framework), group in data.groupby(["problem", "backend", "framework"]):
        ex = exps[(exps["problem"] == problem) & (exps["backend"] == backend)
                  & (exps["framework"] == framework)] if len(exps) else exps
        mem = ex[ex["metric"] == "peak_bytes"] if len(ex) else ex
        tim = ex[ex["metric"] == "time_s"] if len(ex) else ex
        last = group[group["K"] == group["K"].max()]
        band = theory_band(backend, "peak_bytes", "K")
        rows.append({
            "problem": problem, "backend": backend, "framework": framework,
            "memory_exponent": float(mem["slope"].median()) if len(mem) else math.nan,
            "memory_theory": f"{band[0]:g}–{band[1]:g}" if band and band[0] != band[1]
            else (f"{band[0]:g}" if band else "?"),
            "time_exponent": float(tim["slope"].median()) if len(tim) else math.nan,
            "error_at_max_K": float(last["grad_rel_error"].median()),
            "max_K": int(group["K"].max()),
            "agrees": bool(mem["agrees"].all()) if len(mem) and mem["agrees"].notna().all()
            else None,
        })
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = {name: i for i, name in enumerate(backends.registry())}
    out["_order"] = out["backend"].map(lambda b: order.get(b, len(order)))
    out["_fw"] = out["framework"] != "torch"
    return out.sort_values(["problem", "_order", "_fw"]).drop(columns=["_order", "_fw"])
