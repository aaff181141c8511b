"""``ift-bench advise``: predict before you run.

``advise RUN_DIR --problem P --n N --K K``: every strategy the run measured on P (peers
included), its predicted peak memory, trace bytes and time with their intervals and its
gradient error at K, from the laws fitted to the run (suite.laws); whether it meets the
memory, tolerance and time budgets; how far the request lies outside what was measured; and a
ranking — least memory, least time — among the strategies within the budgets, refusing to rank
a prediction extrapolated beyond ``suite.laws.MAX_EXTRAPOLATION``.

``advise --check RUN_SMALL RUN_LARGE``: fit on RUN_SMALL, predict every ok point of RUN_LARGE
whose series RUN_SMALL has, and report predicted against measured per point and the hit rates
against the targets (suite.laws.TARGETS). Exit 0 either way: the rates are the answer.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

from suite.cli.arguments import ALLOWED, numbers, readable_run
from suite.inputs import K_MAX, N_MAX
from suite.plugin.errors import UsageError

_SECONDS = {"": 1.0, "s": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0}
_TIME_ALLOWED = "a positive duration such as 10s, 500ms, 2min, 1h (a bare number: seconds)"


def _positive_number(flag: str) -> Any:
    """argparse type: a finite number > 0 (a tolerance, a residual), errors naming ``flag``."""
    return numbers(flag, integer=False, minimum=0, exclusive_minimum=True, maximum=1e300,
                   what="a number")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "advise", help="predict each strategy's memory, time and gradient error at a size "
                       "not yet run, from a run's fitted laws; --check: predictions against a "
                       "larger run")
    p.add_argument("run_dir", nargs="?", type=Path, default=None, metavar="RUN_DIR",
                   help="the run whose laws predict")
    p.add_argument("--check", nargs=2, type=Path, default=None,
                   metavar=("RUN_SMALL", "RUN_LARGE"),
                   help="fit on RUN_SMALL, predict RUN_LARGE's points, print the hit rates")
    p.add_argument("--problem", default=None, help="the problem (required without --check)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="problem option selecting the run's series (default: the problem's "
                        "defaults); repeatable")
    p.add_argument("--n", type=numbers("--n", integer=True, minimum=1, maximum=N_MAX,
                                        what="an integer"), default=None,
                   help="the size to predict at (required without --check)")
    p.add_argument("--K", type=numbers("--K", integer=True, minimum=1, maximum=K_MAX,
                                        what="an integer"), default=None,
                   help="the number of solver steps to predict at (required without --check)")
    p.add_argument("--framework", default=None, help="only this framework's series")
    p.add_argument("--memory", default=None, metavar="SIZE",
                   help="memory budget for the predicted peak, e.g. 16GiB")
    p.add_argument("--tol", type=_positive_number("--tol"), default=None,
                   help="largest acceptable gradient error against the converged gradient")
    p.add_argument("--time-budget", default=None, metavar="DURATION",
                   help="time budget for one gradient, e.g. 10s")
    p.add_argument("--residual", type=_positive_number("--residual"), default=None,
                   help="also predict the gradient error at this forward residual ‖F(θ, x)‖")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def parse_duration(text: str | None, field: str = "--time-budget") -> float | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-z]*)\s*", text)
    if not match or match.group(2) not in _SECONDS:
        raise UsageError(field, f"cannot read {text!r} as a duration", _TIME_ALLOWED)
    seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(field, f"{text!r} is not a positive duration", _TIME_ALLOWED)
    return seconds


def _frame(field: str, run_dir: Path):
    from suite.rundir import RunDir

    readable_run(field, run_dir, f"{field}: ")
    frame = RunDir(run_dir).frame()
    if frame.empty or not (frame["status"] == "ok").any():
        raise UsageError(field, f"{str(run_dir)!r} holds no ok record: nothing to fit",
                         "a run with measured (ok) points")
    return frame


def run(args: argparse.Namespace) -> int:
    if args.check is not None:
        if args.run_dir is not None:
            raise UsageError("RUN_DIR", "given together with --check",
                             "either RUN_DIR --problem P --n N --K K, or --check RUN_SMALL "
                             "RUN_LARGE")
        return _run_check(args)
    if args.run_dir is None:
        raise UsageError("RUN_DIR", "required", "a results/<run-id> directory (or --check "
                         "RUN_SMALL RUN_LARGE)")
    for flag, value in (("--problem", args.problem), ("--n", args.n), ("--K", args.K)):
        if value is None:
            raise UsageError(flag, "required", ALLOWED[flag])
    return _run_advise(args)


# --------------------------------------------------------------------------- advise
def _select(laws: list, problem: str, option_args: list[str], framework: str | None) -> list:
    """The series of ``problem`` with the problem options the user named (defaults filled)."""
    import problems
    from suite.laws import canonical_options
    from suite.plugin.options import parse_assignments

    given = parse_assignments(option_args)
    found = problems.find(problem)
    declared = {o.name: o for o in found.options} if found is not None else {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise UsageError("--option", f"{unknown[0]!r} is not an option of {problem}",
                         sorted(declared) or ["(none)"])
    for name, raw in given.items():  # a value its option cannot read: that option's error
        given[name] = declared[name].parse(raw)
    wanted, _ = canonical_options(problem, "", given)
    measured = sorted({s.key.problem_options for s in laws})
    chosen = [s for s in laws if s.key.problem_options == wanted]
    if not chosen:
        raise UsageError("--option", f"{problem} was not measured with "
                         f"{wanted or 'its default options'!r} in this run",
                         [m or "(defaults: no --option)" for m in measured])
    if framework is not None:
        frameworks = sorted({s.key.framework for s in chosen})
        chosen = [s for s in chosen if s.key.framework == framework]
        if not chosen:
            raise UsageError("--framework", f"{framework!r} was not measured for {problem} in "
                             "this run", frameworks)
    return chosen


def _status(value: float, high: float, budget: float | None) -> str:
    if budget is None:
        return "–"
    if value > budget:
        return "no"
    return "yes" if not math.isfinite(high) or high <= budget else "maybe"


def _row(series: Any, n: int, K: int, memory: float | None, tol: float | None,
         time_budget: float | None, residual: float | None) -> dict[str, Any]:
    from suite.laws import MAX_EXTRAPOLATION, extrapolation_text, format_factor

    key = series.key
    row: dict[str, Any] = {**key.to_json(), "label": key.label(), "predictions": {},
                           "laws": {m: law.to_json() for m, law in series.laws.items()},
                           "skipped": dict(series.skipped)}
    for metric, law in series.laws.items():
        row["predictions"][metric] = law.predict(n, K).to_json()
    error = series.error.predict(K) if series.error is not None else None
    row["grad_error"] = error.to_json() if error is not None else None
    row["error_law"] = series.error.to_json() if series.error is not None else None
    row["error_note"] = series.error_note
    row["K_to_reach_tol"] = (series.error.K_to_reach(tol)
                             if series.error is not None and tol is not None else None)
    if residual is not None:
        at = series.residual.predict(residual) if series.residual is not None else None
        row["grad_error_at_residual"] = at.to_json() if at is not None else None
    factor = series.extrapolation(n, K)
    if series.error is not None:
        factor = max(factor, error.extrapolation)
    row["extrapolation"] = factor
    row["extrapolation_text"] = extrapolation_text(n, K, series.n_range, series.K_range)
    peak = row["predictions"].get("peak_bytes")
    time_ = row["predictions"].get("time_s")
    row["meets"] = {
        "memory": (_status(peak["value"], peak["high"] or math.nan, memory) if peak
                   else ("unknown" if memory is not None else "–")),
        "tol": ("–" if tol is None else "unknown" if error is None
                else "yes" if error.value <= tol else "no"),
        "time": (_status(time_["value"], time_["high"] or math.nan, time_budget) if time_
                 else ("unknown" if time_budget is not None else "–")),
    }
    why: list[str] = []
    if factor > MAX_EXTRAPOLATION:
        why.append(f"extrapolation {format_factor(factor)} > {MAX_EXTRAPOLATION:g}× "
                   f"({row['extrapolation_text']}): not ranked on a guess")
    for name, label in (("memory", "memory budget"), ("tol", "tol"),
                        ("time", "time budget")):
        verdict = row["meets"][name]
        if verdict == "no":
            why.append(f"misses the {label}")
        elif verdict == "unknown":
            why.append(f"no law to check the {label} against")
    row["excluded"] = why
    return row


def _rank(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    eligible = [r for r in rows if not r["excluded"] and metric in r["predictions"]]
    eligible.sort(key=lambda r: (r["predictions"][metric]["value"], r["label"]))
    return [{"label": r["label"], "backend": r["backend"], "framework": r["framework"],
             "strategy_options": r["strategy_options"],
             "value": r["predictions"][metric]["value"]} for r in eligible]


def _run_advise(args: argparse.Namespace) -> int:
    from suite.config import parse_bytes
    from suite.laws import COVERAGE, MAX_EXTRAPOLATION, fit_laws

    memory = parse_bytes(args.memory, "--memory") if args.memory is not None else None
    time_budget = parse_duration(args.time_budget)
    frame = _frame("RUN_DIR", args.run_dir)
    measured = sorted(frame.loc[frame["status"] == "ok", "problem"].astype(str).unique())
    if args.problem not in measured:
        raise UsageError("--problem", f"{args.problem!r} was not measured in "
                         f"{str(args.run_dir)!r}", measured)
    laws = fit_laws(frame, args.problem, field_name="RUN_DIR")
    chosen = _select(laws, args.problem, args.option, args.framework)
    if not any(s.laws for s in chosen):
        which = chosen[0].key.problem_options or "its default options"
        others = sorted({s.key.problem_options or "(defaults: no --option)" for s in laws
                         if s.laws and s.key.problem_options != chosen[0].key.problem_options})
        raise UsageError("RUN_DIR", f"too few points to fit: every series of {args.problem} "
                         f"with {which} has fewer than 2 points (n, K)",
                         "a run with at least 2 ok points (n, K) per series"
                         + (f"; or --option for an option set fitted in this run: "
                            f"{', '.join(others)}" if others else ""))
    rows = [_row(s, args.n, args.K, memory, args.tol, time_budget, args.residual)
            for s in chosen]
    result = {"run": str(args.run_dir), "problem": args.problem,
              "problem_options": chosen[0].key.problem_options, "n": args.n, "K": args.K,
              "budgets": {"memory_bytes": memory, "tol": args.tol,
                          "time_s": time_budget, "residual": args.residual},
              "coverage": COVERAGE, "max_extrapolation": MAX_EXTRAPOLATION,
              "strategies": rows,
              "ranking": {"least_memory": _rank(rows, "peak_bytes"),
                          "least_time": _rank(rows, "time_s")},
              "not_ranked": [{"label": r["label"], "why": r["excluded"]}
                             for r in rows if r["excluded"]]}
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(render_advice(result))
    return 0


def _bytes(x: float | None) -> str:
    from reports.units import format_bytes

    return format_bytes(x)


def _seconds(x: float | None) -> str:
    from reports.units import format_seconds

    return format_seconds(x)


def _with_interval(p: dict[str, Any] | None, fmt) -> str:
    if p is None:
        return "–"
    if p["low"] is None:
        return f"{fmt(p['value'])} (no interval)"
    return f"{fmt(p['value'])} [{fmt(p['low'])}, {fmt(p['high'])}]"


def _error_text(row: dict[str, Any]) -> str:
    err, law = row["grad_error"], row["error_law"]
    if err is None:
        return f"– ({row['error_note']})" if row["error_note"] else "–"
    kind = law["kind"]
    detail = {"geometric": f"geometric, ρ = {law['rho']:.4g}" if law["rho"] else "geometric",
              "bias": f"bias {law['bias']:.3g}" if law["bias"] is not None else "bias",
              "rounding": "at rounding"}[kind]
    floor = law.get("rounding_floor")
    if floor is not None and err["value"] <= floor:  # the law does not go below rounding
        return f"≤ {floor:.2g}, the rounding floor ({detail})"
    return f"{err['value']:.3g} ({detail})"


def render_advice(r: dict[str, Any]) -> str:
    """The advice as a person reads it: one block per strategy, then the two rankings and
    what was not ranked, with why."""
    b = r["budgets"]
    opts = f" ({r['problem_options']})" if r["problem_options"] else ""
    budgets = [f"memory {_bytes(b['memory_bytes'])}" if b["memory_bytes"] is not None else None,
               f"tol {b['tol']:g}" if b["tol"] is not None else None,
               f"time {_seconds(b['time_s'])}" if b["time_s"] is not None else None]
    lines = [f"advise: {r['problem']}{opts} at n = {r['n']}, K = {r['K']}, from {r['run']} "
             f"({r['coverage']:.0%} prediction intervals)",
             "budgets: " + (", ".join(x for x in budgets if x) or "none")]
    for row in r["strategies"]:
        p = row["predictions"]
        meets = row["meets"]
        lines.append(f"  {row['label']}")
        lines.append(f"    peak {_with_interval(p.get('peak_bytes'), _bytes)}   trace "
                     f"{_with_interval(p.get('trace_bytes'), _bytes)}   time "
                     f"{_with_interval(p.get('time_s'), _seconds)}")
        line = f"    gradient error at K = {r['K']}: {_error_text(row)}"
        if b["tol"] is not None and row["error_law"] is not None:
            reach = row["K_to_reach_tol"]
            line += (f"; K to reach {b['tol']:g}: "
                     + (f"≈ {reach:.3g}" if reach is not None else "never (by the law)"))
        lines.append(line)
        if b["residual"] is not None:
            at = row.get("grad_error_at_residual")
            lines.append(f"    gradient error at forward residual {b['residual']:g}: "
                         + (f"{at['value']:.3g}" if at else "– (no residual law)"))
        lines.append(f"    meets: memory {meets['memory']}, tol {meets['tol']}, time "
                     f"{meets['time']}; extrapolation {_factor(row['extrapolation'])} "
                     f"({row['extrapolation_text']})")
        guessed = [m for m, law in row["laws"].items()
                   if any("exponent in n" in a for a in law.get("assumed", []))
                   and r["n"] not in law.get("n_range", [])]
        if guessed:  # the run has one n for these: their growth in n is theory's, not measured
            lines.append(f"    exponent in n assumed from theory, not measured (one n in the "
                         f"run): {', '.join(guessed)}")
        for metric, why in row["skipped"].items():
            lines.append(f"    no {metric} law: {why}")
    for title, key, fmt in (("least memory within budgets", "least_memory", _bytes),
                            ("least time within budgets", "least_time", _seconds)):
        ranked = r["ranking"][key]
        lines.append(f"{title}:" + ("" if ranked else " none"))
        lines += [f"  {i}. {e['label']}  {fmt(e['value'])}" for i, e in enumerate(ranked, 1)]
    if r["not_ranked"]:
        lines.append("not ranked:")
        lines += [f"  {e['label']}: {'; '.join(e['why'])}" for e in r["not_ranked"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- --check
def _run_check(args: argparse.Namespace) -> int:
    from suite.laws import check_predictions, fit_laws

    small_dir, large_dir = args.check
    small = _frame("RUN_SMALL", small_dir)
    large = _frame("RUN_LARGE", large_dir)
    if args.problem is not None:
        for field, frame in (("RUN_SMALL", small), ("RUN_LARGE", large)):
            measured = sorted(frame.loc[frame["status"] == "ok", "problem"].astype(str).unique())
            if args.problem not in measured:
                raise UsageError("--problem", f"{args.problem!r} was not measured in {field}",
                                 measured)
        large = large[large["problem"] == args.problem]
    laws = fit_laws(small, args.problem, field_name="RUN_SMALL")
    result = check_predictions(laws, large)
    if not result.points:
        raise UsageError("RUN_LARGE", "shares no series with RUN_SMALL: nothing was "
                         "predicted", "two runs of the same series (problem, options, "
                         "strategy, framework, device, dtype)")
    if args.json:
        print(json.dumps({"run_small": str(small_dir), "run_large": str(large_dir),
                          **result.to_json()}, allow_nan=False))
    else:
        print(render_check(result, str(small_dir), str(large_dir)))
    return 0


_METRIC_FMT = {"trace_bytes": ("trace", _bytes), "peak_bytes": ("peak", _bytes),
               "time_s": ("time", _seconds)}


def _measured_K(p: Any) -> str:
    """``80.7``, or ``(30, 80.7]`` where the first error below the tolerance was at rounding."""
    if p.measured_low is None:
        return f"{p.measured:.3g}"
    return f"({p.measured_low:.3g}, {p.measured:.3g}]"


def _factor(x: float) -> str:
    from suite.laws import format_factor

    return format_factor(x)


def _ratio(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.3f}"


def render_check(result: Any, small: str, large: str) -> str:
    """Per point of the large run: predicted / measured (ratio, hit) per metric; per
    (series, n): the K to reach the tolerance; then the hit rates and the misses."""
    from suite.laws import CHECK_TOL

    points: dict[tuple, dict[str, Any]] = {}
    reach = []
    for p in result.points:
        if p.metric == "K_to_reach":
            reach.append(p)
            continue
        points.setdefault((p.key, p.n, p.K), {})[p.metric] = p
    series = {p.key for p in result.points}
    lines = [f"check: laws fitted on {small} predict {large}: {len(points)} points of "
             f"{len(series)} series"
             + (f" ({len(result.unmatched)} series of {large} have no law: not predicted)"
                if result.unmatched else "")]
    width = max((len(k.label(problem=True)) for k in series), default=10)
    for (key, n, K), by_metric in sorted(points.items()):
        cells = []
        for metric, (name, fmt) in _METRIC_FMT.items():
            p = by_metric.get(metric)
            if p is None:
                continue
            cells.append(f"{name} {fmt(p.predicted)}/{fmt(p.measured)} {_ratio(p.ratio)}"
                         + ("" if p.hit else " MISS"))
        lines.append(f"  {key.label(problem=True):{width}s} n={n:<6d} K={K:<6d} "
                     + "  ".join(cells))
    if reach or result.not_measurable:
        lines.append(f"K to reach {CHECK_TOL:g} (predicted / measured; (a, b]: the first error "
                     "below it was at rounding, so it was reached somewhere in there):")
        for p in sorted(reach, key=lambda q: (q.key, q.n)):
            pred = "never" if p.predicted is None else f"{p.predicted:.3g}"
            lines.append(f"  {p.key.label(problem=True):{width}s} n={p.n:<6d} {pred} / "
                         f"{_measured_K(p)}  {_ratio(p.ratio)}" + ("" if p.hit else " MISS"))
        for key, n, why in result.not_measurable:
            lines.append(f"  {key.label(problem=True):{width}s} n={n:<6d} not measurable: "
                         f"{why}")
    lines.append("hit rates:")
    for rate in result.rates:
        if not rate.total:
            lines.append(f"  {rate.metric:12s} {rate.what:32s} no point")
            continue
        verdict = "met" if rate.met else "missed"
        lines.append(f"  {rate.metric:12s} {rate.what:32s} {rate.hits}/{rate.total} = "
                     f"{rate.rate:.1%}  (target ≥ {rate.target:.0%}: {verdict})")
    misses = result.misses
    if misses:
        lines.append(f"misses ({len(misses)}):")
        for p in misses:
            at = f"n={p.n}" + (f" K={p.K}" if p.K is not None else "")
            if p.metric == "K_to_reach":
                pred = "never" if p.predicted is None else f"{p.predicted:.3g}"
                lines.append(f"  {p.key.label(problem=True)} {at} K_to_reach: predicted "
                             f"{pred}, measured {_measured_K(p)}")
            else:
                fmt = _METRIC_FMT[p.metric][1]
                lines.append(f"  {p.key.label(problem=True)} {at} {p.metric}: predicted "
                             f"{fmt(p.predicted)}, measured {fmt(p.measured)} (ratio "
                             f"{_ratio(p.ratio)}, extrapolation {_factor(p.extrapolation)})")
    return "\n".join(lines)
