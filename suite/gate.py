"""The CI regression gate: a small sweep compared cell by cell with a committed baseline.

A cell is one (problem, strategy, framework, dtype, n, K, options). Rules:

* deterministic meters (``trace_bytes`` — XLA's memory analysis for JAX — and the exact counts)
  equal the baseline within 1 %, in both directions: an unexplained improvement also fails until
  the baseline is updated;
* ``peak_bytes`` (memray) at most max(5 %, 64 KiB) above the baseline;
* ``grad_rel_error`` below the cell's threshold stored in the baseline;
* scaling: the fitted exponent in K of every series' ``trace_bytes`` inside the strategy's
  theory band (± ``analysis.EXPONENT_TOLERANCE``), except the series of ``EXPONENT_EXEMPT``
  (each with the reason; listed, and still held to the baseline by the 1 % rule at every K);
* time, never in seconds: each strategy's time over ``unrolled``'s in the same cell, both timed
  alternately in one process (``time_ratio``), at most 25 % above the baseline's ratio;
* a baseline cell missing from the run, or a run cell missing from the baseline, fails.

The baseline records the torch / jax / jaxlib / python versions it was made with. When they
differ from the running ones, the deterministic meters of the affected frameworks are re-based:
listed with both values, not compared, and announced — never silently passed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from suite import analysis
from suite.env import package_versions
from suite.errors import UsageError

DETERMINISTIC = ("trace_bytes", "step_evals", "vjp_evals", "jvp_evals", "hvp_evals",
                 "solver_iters")
DETERMINISTIC_TOLERANCE = 0.01
PEAK_TOLERANCE, PEAK_SLACK_BYTES = 0.05, 64 * 1024
TIME_TRIPWIRE = 0.25
#: (problem, strategy) series whose trace exponent cannot reach its theory band at any K the
#: gate can afford, and why. Their trace_bytes are still compared with the baseline at each K.
EXPONENT_EXEMPT = {
    ("sparsemax", "unrolled"):
        "reverse mode keeps one predicate (≈ 1 byte) per bisection step beside a constant of a "
        "few hundred bytes, so the fitted slope stays near 0 until K ≫ 10³",
}
#: which versions each framework's deterministic meters depend on
VERSION_KEYS = {"torch": ("torch", "python"), "jax": ("jax", "jaxlib", "python")}
#: the committed baseline, found from the project's root whatever the working directory
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = PROJECT_ROOT / "benchmarks" / "baseline.json"


@dataclass
class Finding:
    cell: str
    metric: str
    baseline: Any
    now: Any
    change: str
    rule: str


@dataclass
class GateResult:
    failures: list[Finding] = field(default_factory=list)
    rebased: list[Finding] = field(default_factory=list)
    #: exponents outside their band in an ``EXPONENT_EXEMPT`` series (not failures)
    exempt: list[Finding] = field(default_factory=list)
    version_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    cells: int = 0

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "cells": self.cells,
                "failures": [asdict(f) for f in self.failures],
                "rebased": [asdict(f) for f in self.rebased],
                "exempt": [asdict(f) for f in self.exempt],
                "version_changes": {k: list(v) for k, v in self.version_changes.items()}}


def cell_key(row: pd.Series | dict) -> str:
    opts = row.get("options_str") or ""
    return (f"{row['problem']}/{row['backend']}/{row['framework']}/{row['dtype']}"
            f"/n={int(row['n'])}/K={int(row['K'])}" + (f"/{opts}" if opts else ""))


def error_threshold(error: float) -> float:
    """Rounding-level errors may grow to 100× (still ≤ 1e-12); larger, by-design errors
    (truncation, JFB, an unconverged IFT) by 10 %."""
    if error is None or (isinstance(error, float) and math.isnan(error)):
        return math.nan
    if error < 1e-10:
        return max(100 * error, 1e-12)
    return 1.1 * error


def deterministic_differs(old: float, new: float) -> bool:
    """A deterministic meter moved by more than 1 % (of at least 1), either way."""
    return abs(new - old) > DETERMINISTIC_TOLERANCE * max(abs(old), 1)


def peak_regressed(old: float, new: float) -> bool:
    """Peak memory more than max(5 %, 64 KiB) above the old value (lower is always fine)."""
    return new > old + max(PEAK_TOLERANCE * old, PEAK_SLACK_BYTES)


def _number(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def build_baseline(frame: pd.DataFrame, config_name: str) -> dict[str, Any]:
    cells: dict[str, dict[str, Any]] = {}
    for _, row in frame[frame["status"] == "ok"].iterrows():
        cells[cell_key(row)] = {
            **{m: _number(row[m]) for m in DETERMINISTIC},
            "peak_bytes": _number(row["peak_bytes"]),
            "grad_rel_error": _number(row["grad_rel_error"]),
            "grad_rel_error_threshold": error_threshold(row["grad_rel_error"]),
            "time_ratio": _number(row.get("time_ratio")),
        }
    versions = package_versions()
    return {"config": config_name,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": {k: versions.get(k) for k in ("python", "torch", "jax", "jaxlib")},
            "rules": {"deterministic_tolerance": DETERMINISTIC_TOLERANCE,
                      "peak_tolerance": PEAK_TOLERANCE, "peak_slack_bytes": PEAK_SLACK_BYTES,
                      "time_tripwire": TIME_TRIPWIRE,
                      "exponent_tolerance": analysis.EXPONENT_TOLERANCE},
            "cells": dict(sorted(cells.items()))}


def percent_change(base: float, now: float) -> str:
    if base == 0:
        return "n/a" if now == 0 else "+∞"
    return f"{(now - base) / base:+.1%}"


def compare(frame: pd.DataFrame, baseline: dict[str, Any],
            versions: dict[str, Any] | None = None) -> GateResult:
    """Every rule of the module docstring, on a run's frame against a baseline."""
    versions = versions or package_versions()
    result = GateResult()
    old_versions = baseline.get("versions", {})
    for key in ("python", "torch", "jax", "jaxlib"):
        if old_versions.get(key) is not None and old_versions.get(key) != versions.get(key):
            result.version_changes[key] = (old_versions.get(key), versions.get(key))
    rebase_frameworks = {fw for fw, keys in VERSION_KEYS.items()
                         if any(k in result.version_changes for k in keys)}

    rows = {cell_key(r): r for _, r in frame.iterrows()}
    cells = baseline.get("cells", {})
    result.cells = len(cells)
    for key in sorted(set(cells) - set(rows)):
        result.failures.append(Finding(key, "cell", "present", "missing", "–",
                                       "a baseline cell is missing from the run"))
    for key in sorted(set(rows) - set(cells)):
        result.failures.append(Finding(key, "cell", "missing", "present", "–",
                                       "a run cell is missing from the baseline "
                                       "(run the gate with --update-baseline)"))
    for key in sorted(set(rows) & set(cells)):
        row, base = rows[key], cells[key]
        if row["status"] != "ok":
            result.failures.append(Finding(key, "status", "ok", row["status"], "–",
                                           f"the point failed: {str(row['error'])[:200]}"))
            continue
        rebase = row["framework"] in rebase_frameworks
        for metric in DETERMINISTIC:
            old, new = base.get(metric), _number(row[metric])
            if old is None and new is None:
                continue
            finding = Finding(key, metric, old, new, percent_change(old or 0, new or 0), "")
            if rebase:
                finding.rule = "re-based: versions changed, not compared"
                result.rebased.append(finding)
            elif old is None or new is None or deterministic_differs(old, new):
                finding.rule = ("deterministic: equal within 1 % both ways"
                                + ("; an improvement — update the baseline if intended"
                                   if (old is not None and new is not None and new < old)
                                   else ""))
                result.failures.append(finding)
        old_peak, new_peak = base.get("peak_bytes"), _number(row["peak_bytes"])
        if old_peak is not None and new_peak is not None and peak_regressed(old_peak, new_peak):
            result.failures.append(Finding(key, "peak_bytes", old_peak, new_peak,
                                           percent_change(old_peak, new_peak),
                                           "peak: at most max(5 %, 64 KiB) above baseline"))
        threshold, error = base.get("grad_rel_error_threshold"), _number(row["grad_rel_error"])
        if threshold is not None and not (isinstance(threshold, float) and math.isnan(threshold)):
            if error is None or error > threshold:
                result.failures.append(Finding(key, "grad_rel_error", threshold, error,
                                               "–", "error: below the cell's threshold"))
        old_ratio, new_ratio = base.get("time_ratio"), _number(row.get("time_ratio"))
        if old_ratio is not None and new_ratio is not None and \
                new_ratio > (1 + TIME_TRIPWIRE) * old_ratio:
            result.failures.append(Finding(key, "time_ratio", round(old_ratio, 4),
                                           round(new_ratio, 4),
                                           percent_change(old_ratio, new_ratio),
                                           "time: ratio to unrolled at most 25 % above"))

    exponents = analysis.scaling_exponents(frame, "K", metrics=("trace_bytes",))
    for _, ex in exponents.iterrows():
        if ex["agrees"] is False or (ex["agrees"] is not None and not ex["agrees"]):
            series = (f"{ex['problem']}/{ex['backend']}/{ex['framework']}/{ex['dtype']}"
                      f"/n={int(ex['n'])}" + (f"/{ex['options_str']}" if ex["options_str"] else ""))
            finding = Finding(
                series, "exponent(trace_bytes, K)",
                f"{ex['theory_lo']:g}–{ex['theory_hi']:g}", round(float(ex["slope"]), 3), "–",
                f"scaling: inside the theory band ± {analysis.EXPONENT_TOLERANCE}")
            reason = EXPONENT_EXEMPT.get((ex["problem"], ex["backend"]))
            if reason is None:
                result.failures.append(finding)
            else:
                finding.rule = f"exempt: {reason}"
                result.exempt.append(finding)
    return result


def render(result: GateResult) -> str:
    lines = []
    if result.version_changes:
        changes = ", ".join(f"{k} {a} → {b}" for k, (a, b) in result.version_changes.items())
        lines.append(f"VERSIONS CHANGED since the baseline ({changes}): {len(result.rebased)} "
                     "deterministic values re-based (listed, not compared). Record them with "
                     "--update-baseline once reviewed.")
    if result.failures:
        headers = ("cell", "metric", "baseline", "now", "change", "rule")
        table = [headers] + [tuple(str(getattr(f, h)) for h in headers) for f in result.failures]
        widths = [min(max(len(r[i]) for r in table), 70) for i in range(len(headers))]
        for i, row in enumerate(table):
            lines.append("  ".join(c[:70].ljust(w) for c, w in zip(row, widths, strict=True)))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append(f"gate: FAILED — {len(result.failures)} finding(s) over {result.cells} "
                     "baseline cells")
    else:
        lines.append(f"gate: passed — {result.cells} cells within their rules")
    for f in result.exempt:
        lines.append(f"exempt from the exponent rule: {f.cell} slope {f.now} "
                     f"(band {f.baseline}): {f.rule.removeprefix('exempt: ')}")
    return "\n".join(lines)


def load_baseline(path: Path) -> dict[str, Any]:
    """The baseline file, checked for the shape ``compare`` reads: an object whose ``cells`` is
    an object of objects (anything else is bad input, not a traceback)."""
    allowed = "a baseline.json written by `gate --update-baseline`"
    if not path.is_file():
        raise UsageError("--baseline", f"no baseline file at {str(path)!r}", allowed)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError("--baseline", f"cannot read {str(path)!r}: {exc}", allowed) from None
    except json.JSONDecodeError as exc:
        raise UsageError("--baseline", f"{str(path)!r} is not valid JSON: {exc}",
                         allowed) from None
    if not isinstance(payload, dict):
        raise UsageError("--baseline", f"{str(path)!r} holds a JSON "
                         f"{type(payload).__name__}, not an object", allowed)
    cells = payload.get("cells")
    if not isinstance(cells, dict) or not all(isinstance(c, dict) for c in cells.values()):
        raise UsageError("--baseline", f"{str(path)!r}: 'cells' is not an object of cells",
                         allowed)
    if not isinstance(payload.get("versions", {}), dict):
        raise UsageError("--baseline", f"{str(path)!r}: 'versions' is not an object", allowed)
    return payload


def previous_baseline(path: Path) -> dict[str, Any] | None:
    """The baseline ``--update-baseline`` replaces, for its diff; None when there is none that
    can be read (it is being replaced either way)."""
    try:
        return load_baseline(path)
    except UsageError:
        return None


def baseline_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    if not isinstance(old, dict) or not isinstance(old.get("cells"), dict):
        return f"new baseline: {len(new['cells'])} cells"
    old_cells, new_cells = old.get("cells", {}), new["cells"]
    added = sorted(set(new_cells) - set(old_cells))
    removed = sorted(set(old_cells) - set(new_cells))
    changed = []
    for key in sorted(set(old_cells) & set(new_cells)):
        diffs = [m for m in DETERMINISTIC + ("peak_bytes",)
                 if old_cells[key].get(m) != new_cells[key].get(m)]
        if diffs:
            changed.append(f"  {key}: " + ", ".join(
                f"{m} {old_cells[key].get(m)} → {new_cells[key].get(m)}" for m in diffs))
    lines = [f"baseline updated: {len(new_cells)} cells ({len(added)} added, {len(removed)} "
             f"removed, {len(changed)} changed)"]
    lines += [f"  + {k}" for k in added] + [f"  - {k}" for k in removed] + changed[:50]
    return "\n".join(lines)
