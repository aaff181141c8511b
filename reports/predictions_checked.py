"""The report's "Predictions checked" section: the cost and error laws fitted on another run
(``suite.laws``) predict every ok point of this one, and the section says how often they hit.

Given the records of the run the laws are fitted on (typically a smaller sweep) and this run's,
it gives the hit rate per metric against the targets (``suite.laws.TARGETS``), the same rates
by how far the prediction extrapolated (a law that holds at 4× may fail at 16×: a regime
change the fit could not see), and every miss with its series, predicted and measured value.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from reports.units import format_bytes
from suite.laws import CheckPoint, check_predictions, fit_laws
from suite.plugin.errors import UsageError

#: extrapolation bands of the rates table: (upper bound, label)
BANDS = ((1.0, "inside the fitted range"), (4.0, "up to 4× beyond"),
         (16.0, "4–16× beyond"), (math.inf, "more than 16× beyond"))
#: misses listed in the report at most (the rest are counted)
MAX_MISSES = 200


def _value(metric: str, v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if metric in ("trace_bytes", "peak_bytes"):
        return format_bytes(v)
    if metric == "time_s":
        return f"{v:.3g} s"
    return f"{v:.3g}"  # K to reach


def _label(rate: Any) -> str:
    """"trace_bytes within 10 %"; the K-to-reach target names itself."""
    return rate.what if rate.metric == "K_to_reach" else f"{rate.metric} {rate.what}"


def _band(extrapolation: float) -> str:
    return next(label for bound, label in BANDS if extrapolation <= bound)


def _rate(points: list[CheckPoint]) -> str:
    if not points:
        return "–"
    hits = sum(p.hit for p in points)
    return f"{hits}/{len(points)} ({hits / len(points):.0%})"


def predictions_checked(fitted: pd.DataFrame, frame: pd.DataFrame, source: str) -> dict[str, Any]:
    """The section's view: ``source`` names the fitted run; ``fitted`` and ``frame`` are the
    two runs' records. A fitted run that gives no law says so instead of a table."""
    try:
        result = check_predictions(fit_laws(fitted), frame)
    except UsageError as exc:
        return {"source": source, "error": str(exc)}
    rates = [{"metric": _label(r), "hits": f"{r.hits}/{r.total}" if r.total else "–",
              "rate": f"{r.rate:.0%}" if r.total else "–", "target": f"≥ {r.target:.0%}",
              "met": "–" if r.met is None else ("yes" if r.met else "no")}
             for r in result.rates]
    metrics = [r.metric for r in result.rates]
    by_band = []
    for _, label in BANDS:
        row = {"band": label}
        for metric in metrics:
            row[metric] = _rate([p for p in result.points
                                 if p.metric == metric and _band(p.extrapolation) == label])
        if any(row[m] != "–" for m in metrics):
            by_band.append(row)
    misses = [{"series": f"{p.key.backend} ({p.key.framework})"
                         + (f" {p.key.strategy_options}" if p.key.strategy_options else ""),
               "problem": p.key.problem + (f" ({p.key.problem_options})"
                                           if p.key.problem_options else ""),
               "n": p.n, "K": "–" if p.K is None else p.K, "metric": p.metric,
               "predicted": _value(p.metric, p.predicted),
               "measured": _value(p.metric, p.measured),
               "ratio": "–" if p.ratio is None else f"{p.ratio:.2f}",
               "extrapolation": f"{p.extrapolation:.3g}×"}
              for p in result.misses]
    return {"source": source, "error": None, "rates": rates, "metrics": metrics,
            "metric_names": [_label(r) for r in result.rates], "by_band": by_band,
            "misses": misses[:MAX_MISSES], "misses_total": len(misses),
            "unmatched": len(result.unmatched), "points": len(result.points)}
