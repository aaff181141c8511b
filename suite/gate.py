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
  alternately in one process (``time_ratio``, the median of the per-pair ratios
  ``time_ratios``), judged only against ratios measured on the same machine
  (``suite.fingerprint``) — a :class:`TimeReference`: the machine's own time baseline
  (``benchmarks/time/<slug>.json``) or, on a machine without one, the baseline's commit measured
  here in the same run (``suite.gate_sweep``). A cell fails when its ratio is more than 25 %
  above the reference's, more than ``SPREAD_Z`` robust σ beyond the run's other cells (two
  processes of the same code differ by more than their blocks say: :class:`Spread`), and,
  where both sides carry their blocks, the one-sided Mann–Whitney U test (``compare``'s) says
  the shift is significant (p < 0.001); and the run fails as a whole when the cells' median
  ratio is more than 25 % above 1. A cell's ratio can also sit in one of several modes fixed
  per process (a compiled program's layout: on the 2-core AMD VM, 8 gate runs of unchanged code
  read savi/ift-cg/jax K=128 at 0.12–0.13 or 0.44–0.46): ``gate --update-baseline`` measures
  the sweep in several processes and records each cell's ``time_process_range`` (largest over
  smallest ratio), and a cell is judged against its reference times that range; a cell that
  still fails is measured again in ``TIME_CONFIRMATIONS`` fresh processes
  (``gate_sweep.confirm_time``) and fails only if it fails in every one;
* a baseline cell missing from the run, or a run cell missing from the baseline, fails.

Deterministic meters, peaks and errors do not depend on the CPU: they live in
``benchmarks/baseline.json`` with the commit and the machine they were measured on.

The baseline records the torch / jax / jaxlib / python versions it was made with. When they
differ from the running ones, the deterministic meters of the affected frameworks are re-based:
listed with both values, not compared, and announced — never silently passed.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from suite import analysis, fingerprint
from suite.fingerprint import package_versions
from suite.frameworks import registry as framework_registry
from suite.plugin.errors import UsageError

DETERMINISTIC = ("trace_bytes", "step_evals", "vjp_evals", "jvp_evals", "hvp_evals",
                 "solver_iters")
DETERMINISTIC_TOLERANCE = 0.01
PEAK_TOLERANCE, PEAK_SLACK_BYTES = 0.05, 64 * 1024
TIME_TRIPWIRE = 0.25
#: fresh processes a cell's time finding is measured again in; it fails the gate only if the
#: cell fails the time rule in every one of them too (:func:`clear_unconfirmed`)
TIME_CONFIRMATIONS = 2
#: (problem, strategy) series whose trace exponent cannot reach its theory band at any K the
#: gate can afford, and why. Their trace_bytes are still compared with the baseline at each K.
EXPONENT_EXEMPT = {
    ("sparsemax", "unrolled"):
        "reverse mode keeps one predicate (≈ 1 byte) per bisection step beside a constant of a "
        "few hundred bytes, so the fitted slope stays near 0 until K ≫ 10³",
}
#: which versions each framework's deterministic meters depend on
VERSION_KEYS = {name: (*fw.packages, "python") for name, fw in framework_registry().items()}
#: the committed baseline, found from the project's root whatever the working directory
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = PROJECT_ROOT / "benchmarks" / "baseline.json"
#: one time baseline per machine fingerprint: ``<dir>/<slug>.json``
DEFAULT_TIME_DIR = PROJECT_ROOT / "benchmarks" / "time"
#: a time shift is significant below this p-value (one-sided Mann–Whitney U on the 11 ABBA
#: blocks a side; the smallest reachable is 1/C(22, 11) = 1.4e-6). Stricter than ``compare``'s
#: 0.01: some JAX programs time in two modes within one process (savi unrolled K = 128 here:
#: blocks at 0.18–0.22 and 0.44–0.47 in one run), and a base run with 3 of 11 blocks in the
#: slow mode gave p = 0.005 against a run with all 11 there, code unchanged
SIGNIFICANCE = 0.001
#: the fewest samples a side for a rank test (below it, the 25 % tripwire alone decides)
MIN_SAMPLES = 5


@dataclass
class Finding:
    cell: str
    metric: str
    baseline: Any
    now: Any
    change: str
    rule: str


@dataclass
class TimeReference:
    """The time ratios a run's are judged against, all measured on the run's machine.

    ``method``: ``same-machine`` (the machine's committed time baseline, ``source`` its file)
    or ``paired`` (the baseline's ``commit`` measured on this machine in the same run, interleaved
    with the current code's points under one timing lock; ``source`` its run directory).
    ``cells``: cell key → ``{"time_ratio": median, "time_ratios": [per-pair samples] | None}``.
    """

    method: str
    source: str
    commit: str | None
    cells: dict[str, dict[str, Any]]

    def describe(self) -> str:
        at = f" at {self.commit[:12]}" if self.commit else ""
        if self.method == "paired":
            return (f"paired: the baseline's commit{at} measured on this machine in the same "
                    f"run ({self.source}); per cell, this code's time_ratio over the base's, "
                    f"failing on a significant (Mann–Whitney p < {SIGNIFICANCE}) slowdown "
                    f"beyond {TIME_TRIPWIRE:.0%}")
        return (f"same machine: {self.source} (measured{at}); failing on a ratio more than "
                f"{TIME_TRIPWIRE:.0%} above it (and significant where both sides carry samples)")

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "source": self.source, "commit": self.commit,
                "cells": len(self.cells)}


@dataclass
class GateResult:
    failures: list[Finding] = field(default_factory=list)
    rebased: list[Finding] = field(default_factory=list)
    #: exponents outside their band in an ``EXPONENT_EXEMPT`` series (not failures)
    exempt: list[Finding] = field(default_factory=list)
    #: time findings a fresh process did not confirm (:func:`clear_unconfirmed`; not failures)
    time_cleared: list[Finding] = field(default_factory=list)
    version_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    cells: int = 0
    #: what time was judged against, or None with ``time_not_judged`` saying why
    time_reference: TimeReference | None = None
    time_not_judged: str | None = None
    #: cells whose time was judged (both sides had a ratio)
    time_cells: int = 0
    #: how the judged cells' ratios scatter (None below MIN_SPREAD_CELLS cells)
    time_spread: Spread | None = None
    #: the machine the run was measured on and the one the baseline was (suite.fingerprint)
    fingerprint: dict[str, Any] | None = None
    baseline_fingerprint: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        time = ({**self.time_reference.to_json(), "judged_cells": self.time_cells,
                 "rule": self.time_reference.describe(),
                 "spread": (None if self.time_spread is None else
                            {"median_ratio": math.exp(self.time_spread.median),
                             "sigma_factor": math.exp(self.time_spread.sigma),
                             "z_threshold": SPREAD_Z})}
                if self.time_reference is not None
                else {"method": "not judged", "reason": self.time_not_judged})
        return {"passed": self.passed, "cells": self.cells,
                "failures": [asdict(f) for f in self.failures],
                "rebased": [asdict(f) for f in self.rebased],
                "exempt": [asdict(f) for f in self.exempt],
                "time_cleared": [asdict(f) for f in self.time_cleared],
                "version_changes": {k: list(v) for k, v in self.version_changes.items()},
                "time": time, "fingerprint": self.fingerprint,
                "baseline_fingerprint": self.baseline_fingerprint}


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


def _samples(value: Any) -> list[float] | None:
    """A record's ``time_ratios`` as a list of floats, or None."""
    if not isinstance(value, list | tuple) or not value:
        return None
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return None if any(math.isnan(v) for v in out) else out


def process_ranges(frames: list[pd.DataFrame]) -> dict[str, float]:
    """Per cell timed in two or more of ``frames`` (runs of the same code, one process per
    point each): its largest ``time_ratio`` over its smallest."""
    seen: dict[str, list[float]] = {}
    for frame in frames:
        for _, row in frame[frame["status"] == "ok"].iterrows():
            ratio = _number(row.get("time_ratio"))
            if ratio is not None and ratio > 0:
                seen.setdefault(cell_key(row), []).append(float(ratio))
    return {key: max(r) / min(r) for key, r in seen.items() if len(r) >= 2}


def build_baseline(frame: pd.DataFrame, config_name: str,
                   measured_on: dict[str, Any] | None = None,
                   git: dict[str, Any] | None = None,
                   ranges: dict[str, float] | None = None) -> dict[str, Any]:
    """The machine-independent baseline: deterministic meters, peaks, error thresholds; with
    the commit they were measured at (the paired path's base) and the machine; and, where the
    sweep was measured in several processes, each timed cell's ``time_process_range``
    (:func:`process_ranges`)."""
    cells: dict[str, dict[str, Any]] = {}
    for _, row in frame[frame["status"] == "ok"].iterrows():
        key = cell_key(row)
        cells[key] = {
            **{m: _number(row[m]) for m in DETERMINISTIC},
            "peak_bytes": _number(row["peak_bytes"]),
            "grad_rel_error": _number(row["grad_rel_error"]),
            "grad_rel_error_threshold": error_threshold(row["grad_rel_error"]),
        }
        if ranges and key in ranges:
            cells[key]["time_process_range"] = round(ranges[key], 3)
    versions = package_versions()
    return {"config": config_name,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": (git or {}).get("commit"), "dirty": (git or {}).get("dirty"),
            "measured_on": measured_on,
            "versions": {k: versions.get(k) for k in fingerprint.VERSION_KEYS},
            "rules": {"deterministic_tolerance": DETERMINISTIC_TOLERANCE,
                      "peak_tolerance": PEAK_TOLERANCE, "peak_slack_bytes": PEAK_SLACK_BYTES,
                      "time_tripwire": TIME_TRIPWIRE,
                      "exponent_tolerance": analysis.EXPONENT_TOLERANCE},
            "cells": dict(sorted(cells.items()))}


def describe_ranges(baseline: dict[str, Any], processes: int) -> str:
    """One line for ``--update-baseline``: the processes measured and the cells whose time
    ratio moved between them by more than the tripwire."""
    if processes < 2:
        return "time: one process per cell measured: no process ranges recorded"
    wide = sorted(((c["time_process_range"], k) for k, c in baseline["cells"].items()
                   if c.get("time_process_range", 1) > 1 + TIME_TRIPWIRE), reverse=True)
    listed = "; ".join(f"{k} ×{r:.2f}" for r, k in wide) or "none"
    return (f"time: {processes} processes per cell; ratio ranges beyond "
            f"{TIME_TRIPWIRE:.0%}: {listed}")


def build_time_baseline(frame: pd.DataFrame, config_name: str, fingerprint: dict[str, Any],
                        git: dict[str, Any] | None = None) -> dict[str, Any]:
    """One machine's time baseline: each ok cell's ``time_ratio`` and its per-pair samples."""
    cells = {}
    for _, row in frame[frame["status"] == "ok"].iterrows():
        ratio = _number(row.get("time_ratio"))
        if ratio is not None:
            cells[cell_key(row)] = {"time_ratio": ratio,
                                    "time_ratios": _samples(row.get("time_ratios"))}
    return {"config": config_name,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": (git or {}).get("commit"), "dirty": (git or {}).get("dirty"),
            "fingerprint": fingerprint, "cells": dict(sorted(cells.items()))}


def time_baseline_path(fingerprint: dict[str, Any], time_dir: Path = DEFAULT_TIME_DIR) -> Path:
    return Path(time_dir) / f"{fingerprint['slug']}.json"


def load_time_baseline(path: Path) -> TimeReference:
    """A machine's time baseline file as the reference of the same-machine path."""
    payload = _cells_file(path, "--time-dir", "a benchmarks/time/<machine>.json written by "
                                              "`gate --update-baseline`")
    return TimeReference("same-machine", str(path), payload.get("commit"), payload["cells"])


def paired_reference(base: pd.DataFrame, source: str, commit: str | None) -> TimeReference:
    """The base commit's run, measured beside this one on this machine, as a reference."""
    cells = {cell_key(row): {"time_ratio": _number(row.get("time_ratio")),
                             "time_ratios": _samples(row.get("time_ratios"))}
             for _, row in base[base["status"] == "ok"].iterrows()}
    return TimeReference("paired", source, commit, cells)


def slower_p(now: list[float], base: list[float]) -> float:
    """One-sided p of "``now``'s samples are larger than ``base``'s": the exact Mann–Whitney U
    distribution (scipy's normal approximation claims p-values no rank order can have)."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(now, base, alternative="greater", method="exact").pvalue)


#: below this many judged cells the run's own spread is not estimated (the tripwire and the
#: rank test decide alone)
MIN_SPREAD_CELLS = 8
#: a cell must stand this many robust standard deviations above the run's other cells
SPREAD_Z = 6.0


@dataclass
class Spread:
    """How much the cells' ratios (now over reference) scatter between two processes of
    unchanged code: the median and robust σ (1.4826 × MAD) of their logarithms, over the
    cells judged. Each side of a cell is one process, and a process can sit 30 % off another
    in every one of its 11 blocks (seen on this VM: +29 % and +30 % at p = 0.0009 in a paired
    run of unchanged code), which no within-process test can see; the cells of the same run
    are the control that can."""

    median: float
    sigma: float
    cells: int

    @classmethod
    def of(cls, log_ratios: list[float]) -> Spread | None:
        if len(log_ratios) < MIN_SPREAD_CELLS:
            return None
        median = statistics.median(log_ratios)
        mad = statistics.median(abs(x - median) for x in log_ratios)
        return cls(median, 1.4826 * mad, len(log_ratios))

    def describe(self) -> str:
        return (f"cells' ratio now/reference: median ×{math.exp(self.median):.3f}, process-to-"
                f"process spread ×{math.exp(self.sigma):.3f} (robust σ of the logs, "
                f"{self.cells} cells)")


def time_finding(key: str, base: dict[str, Any], row: pd.Series | dict,
                 reference: TimeReference, spread: Spread | None = None) -> Finding | None:
    """The time rule on one cell (module doc); None when it holds or cannot be applied."""
    old, new = _number(base.get("time_ratio")), _number(row.get("time_ratio"))
    if old is None or new is None or old <= 0 or new <= 0:
        return None
    # the slowest mode processes of the reference's code were seen in (1: a single mode)
    reach = max(_number(base.get("time_process_range")) or 1.0, 1.0)
    if new <= (1 + TIME_TRIPWIRE) * old * reach:
        return None
    rule = (f"time: ratio to unrolled at most {TIME_TRIPWIRE:.0%} above "
            + ("the base commit's, measured beside it" if reference.method == "paired"
               else "this machine's time baseline")
            + (f" × the cell's process range {reach:.2f}" if reach > 1 else ""))
    if spread is not None:
        z = (math.log(new / old) - spread.median) / max(spread.sigma, 1e-12)
        if z < SPREAD_Z:
            return None  # within what two processes of the same code differ by here
        rule += f", {z:.1f} σ beyond the run's other cells"
    old_s, new_s = _samples(base.get("time_ratios")), _samples(row.get("time_ratios"))
    if old_s is not None and new_s is not None and min(len(old_s), len(new_s)) >= MIN_SAMPLES:
        p = slower_p(new_s, old_s)
        if p >= SIGNIFICANCE:
            return None  # beyond the tripwire, but within what these samples' spread allows
        rule += f" (Mann–Whitney p = {p:.2g} over {len(new_s)} vs {len(old_s)} blocks)"
    return Finding(key, "time_ratio", round(old, 4), round(new, 4), percent_change(old, new),
                   rule)


def time_cell(baseline: dict[str, Any], reference: TimeReference,
              key: str) -> dict[str, Any] | None:
    """What a cell's time is judged against: the reference's ratio and samples, with the
    baseline's process range for the cell."""
    cell = reference.cells.get(key)
    if cell is None:
        return None
    return {**cell, "time_process_range":
            baseline.get("cells", {}).get(key, {}).get("time_process_range")}


def clear_unconfirmed(result: GateResult, baseline: dict[str, Any],
                      remeasured: list[pd.DataFrame]) -> None:
    """Keep a cell's time finding only where the cell fails the time rule again in every frame
    of ``remeasured`` (the cell measured anew, each time in a fresh process), judged against the
    same reference and the first run's spread; otherwise move it to ``result.time_cleared``
    with the ratios the fresh processes read. A cell missing from a frame (its point failed)
    keeps its finding."""
    reference = result.time_reference
    if reference is None:
        return
    for finding in [f for f in result.failures if f.metric == "time_ratio"]:
        ratios, confirmed = [], True
        for frame in remeasured:
            row = next((r for _, r in frame[frame["status"] == "ok"].iterrows()
                        if cell_key(r) == finding.cell), None)
            if row is None:
                continue
            ratios.append(_number(row.get("time_ratio")))
            if time_finding(finding.cell, time_cell(baseline, reference, finding.cell), row,
                            reference, result.time_spread) is None:
                confirmed = False
        if not confirmed:
            result.failures.remove(finding)
            read = ", ".join(f"{r:.4g}" for r in ratios if r is not None)
            finding.rule = (f"not confirmed: {finding.now} in the gate's process, {read} in "
                            f"fresh processes — a mode of the cell, not a regression")
            result.time_cleared.append(finding)


def percent_change(base: float, now: float) -> str:
    if base == 0:
        return "n/a" if now == 0 else "+∞"
    return f"{(now - base) / base:+.1%}"


def compare(frame: pd.DataFrame, baseline: dict[str, Any],
            versions: dict[str, Any] | None = None,
            time: TimeReference | None = None, time_not_judged: str | None = None) -> GateResult:
    """Every rule of the module docstring, on a run's frame against a baseline; time against
    ``time`` (measured on the run's machine), or not at all, for the reason given."""
    versions = versions or package_versions()
    result = GateResult(time_reference=time,
                        time_not_judged=None if time is not None else
                        (time_not_judged or "no time reference measured on this machine"),
                        baseline_fingerprint=baseline.get("measured_on"))
    old_versions = baseline.get("versions", {})
    for key in fingerprint.VERSION_KEYS:
        if old_versions.get(key) is not None and old_versions.get(key) != versions.get(key):
            result.version_changes[key] = (old_versions.get(key), versions.get(key))
    rebase_frameworks = {fw for fw, keys in VERSION_KEYS.items()
                         if any(k in result.version_changes for k in keys)}

    rows = {cell_key(r): r for _, r in frame.iterrows()}
    timed: list[tuple[str, dict[str, Any], Any]] = []
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
        time_base = time_cell(baseline, time, key) if time is not None else None
        itself = row.get("time_ratio_to") == row["backend"]  # its ratio is 1 by definition
        old_ratio = _number(time_base.get("time_ratio")) if time_base is not None else None
        new_ratio = _number(row.get("time_ratio"))
        if not itself and old_ratio and new_ratio and old_ratio > 0 and new_ratio > 0:
            timed.append((key, time_base, row))
    if time is not None:
        judge_time(result, timed, time)

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


def judge_time(result: GateResult, timed: list[tuple[str, dict[str, Any], Any]],
                reference: TimeReference) -> None:
    """The time rule over every judged cell: each against the run's own spread, and the run
    as a whole (a slowdown of every strategy moves the median, not one cell)."""
    logs = [math.log(_number(row.get("time_ratio")) / _number(base.get("time_ratio")))
            for _, base, row in timed]
    spread = Spread.of(logs)
    result.time_cells, result.time_spread = len(timed), spread
    for key, base, row in timed:
        finding = time_finding(key, base, row, reference, spread)
        if finding is not None:
            result.failures.append(finding)
    if spread is not None and spread.median > math.log(1 + TIME_TRIPWIRE):
        result.failures.append(Finding(
            f"all {spread.cells} timed cells", "time_ratio (median over cells)", 1.0,
            round(math.exp(spread.median), 4), percent_change(1.0, math.exp(spread.median)),
            f"time: the cells' median ratio now/reference at most {TIME_TRIPWIRE:.0%} above 1"))


def render(result: GateResult) -> str:
    from suite.fingerprint import describe

    lines = [f"machine:  {describe(result.fingerprint)}",
             f"baseline: {describe(result.baseline_fingerprint)}"]
    if result.time_reference is not None:
        lines.append(f"time: {result.time_reference.describe()}; {result.time_cells} cells "
                     "judged")
        if result.time_spread is not None:
            lines.append(f"time: {result.time_spread.describe()}; a cell fails only "
                         f"{SPREAD_Z:g} σ beyond it")
    else:
        lines.append(f"time: not judged — {result.time_not_judged}")
    if result.version_changes:
        changes = ", ".join(f"{k} {a} → {b}" for k, (a, b) in result.version_changes.items())
        lines.append(f"VERSIONS CHANGED since the baseline ({changes}): {len(result.rebased)} "
                     "deterministic values re-based (listed, not compared). Record them with "
                     "--update-baseline once reviewed.")
    if result.failures:
        headers = ("cell", "metric", "baseline", "now", "change", "rule")
        table = [headers] + [tuple(str(getattr(f, h)) for h in headers) for f in result.failures]
        widths = [min(max(len(r[i]) for r in table), 70) for i in range(len(headers))]
        widths[-1] = max(len(r[-1]) for r in table)  # the rule, last, is said in full
        for i, row in enumerate(table):
            lines.append("  ".join(c[:w].ljust(w) for c, w in zip(row, widths, strict=True))
                         .rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append(f"gate: FAILED — {len(result.failures)} finding(s) over {result.cells} "
                     "baseline cells")
    else:
        lines.append(f"gate: passed — {result.cells} cells within their rules")
    for f in result.time_cleared:
        lines.append(f"time finding cleared: {f.cell} time_ratio {f.baseline} → {f.rule}")
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
    payload = _cells_file(path, "--baseline", allowed)
    if not isinstance(payload.get("versions", {}), dict):
        raise UsageError("--baseline", f"{str(path)!r}: 'versions' is not an object", allowed)
    return payload


def _cells_file(path: Path, flag: str, allowed: str) -> dict[str, Any]:
    """A JSON object whose ``cells`` is an object of objects, or one UsageError naming
    ``flag``."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(flag, f"cannot read {str(path)!r}: {exc}", allowed) from None
    except json.JSONDecodeError as exc:
        raise UsageError(flag, f"{str(path)!r} is not valid JSON: {exc}", allowed) from None
    if not isinstance(payload, dict):
        raise UsageError(flag, f"{str(path)!r} holds a JSON {type(payload).__name__}, not an "
                         "object", allowed)
    cells = payload.get("cells")
    if not isinstance(cells, dict) or not all(isinstance(c, dict) for c in cells.values()):
        raise UsageError(flag, f"{str(path)!r}: 'cells' is not an object of cells", allowed)
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
