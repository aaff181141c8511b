"""Run-to-run comparison (``ift-bench compare RUN_A RUN_B``): what changed from A to B, per cell.

Cells are matched by :func:`suite.gate.cell_key` (problem, strategy, framework, dtype, n, K,
options). For every cell in both runs the table gives the ratio B/A of ``time_s`` (the median of
the R timed repeats), ``peak_bytes``, ``trace_bytes``, ``grad_error_k_step`` and
``grad_error_converged``. A cell regresses, and the command exits 1, when B is worse than A
beyond the gate's own rules (``suite.gate``):

* a deterministic meter (``trace_bytes``, the exact counts) more than 1 % above A;
* ``peak_bytes`` more than max(5 %, 64 KiB) above A;
* an error above the gate's threshold for A's error (100 × for rounding-level errors, at most
  1e-12; +10 % for by-design errors);
* a point that was ``ok`` in A and is not in B;
* time: a *significant* slowdown (below).

Time is the one noisy meter, so a ratio alone decides nothing. Each record keeps its R
per-repeat gradient times (``times_s``); B's are tested against A's with the Mann–Whitney U rank
test (no normality assumed; asv decides the same way), one-sided in each direction. A change is
significant when its p-value is below ``SIGNIFICANCE`` (0.01) *and* the ratio of medians is
beyond ``MIN_FACTOR`` (1.1×) in that direction: a tiny but consistent shift is not worth a
reviewer's time. Why one-sided: with R repeats on each side the exact test has C(2R, R)
equally likely rank orders under "no change", so its smallest p is 1/C(2R, R) one-sided and
2/C(2R, R) two-sided. For R = 5 that is 1/252 ≈ 0.004 and 2/252 ≈ 0.0079: a two-sided test
would call a slowdown significant only when all 25 pairs are ordered (every B repeat slower than
every A repeat), while one-sided tests also allow one inverted pair (p = 2/252). Each direction
is its own test at 0.01 (together a two-sided level of 0.02). Below R = 5 per side no outcome
reaches 0.01 (R = 4: 1/70 ≈ 0.014), so such cells, and records of schema version 1 (no
``times_s``), are compared without a significance decision and say so.

Cells present in only one run are listed; they do not change the exit status (a config change,
not a regression).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from suite import gate

#: a time change is significant below this p-value (each one-sided Mann–Whitney U test)
SIGNIFICANCE = 0.01
#: … and when the ratio of medians is beyond this factor in the same direction (asv's default)
MIN_FACTOR = 1.1
#: the fewest repeats per side at which p < SIGNIFICANCE is reachable (1 / C(2R, R) ≤ 0.01)
MIN_REPEATS = 5
#: the ratio columns: B/A of each of these
RATIO_METRICS = ("time_s", "peak_bytes", "trace_bytes", "grad_error_k_step",
                 "grad_error_converged")
ERROR_METRICS = ("grad_error_k_step", "grad_error_converged")


@dataclass
class TimeTest:
    """The significance decision on one cell's per-repeat times."""

    ratio: float | None  # median(B) / median(A)
    p_slower: float | None  # one-sided p of "B's times are larger than A's"
    p_faster: float | None
    verdict: str  # "slower", "faster", "no change", or why no test was made

    @property
    def tested(self) -> bool:
        return self.p_slower is not None


@dataclass
class CellComparison:
    cell: str
    status_a: str
    status_b: str
    ratios: dict[str, float | None]
    time: TimeTest
    #: each way B is worse than A beyond the gate's rules, one line each
    regressions: list[str] = field(default_factory=list)
    #: deterministic meters that went down (not a failure, worth a look)
    improvements: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    cells: list[CellComparison]
    only_a: list[str]
    only_b: list[str]
    #: cells whose times could not be tested, by reason (schema version 1, too few repeats)
    untested: dict[str, int]

    @property
    def regressed(self) -> list[CellComparison]:
        return [c for c in self.cells if c.regressions]

    @property
    def passed(self) -> bool:
        return not self.regressed


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def ratio(a: Any, b: Any) -> float | None:
    """B/A; None when either is missing; 1 when both are 0, ∞ when only A is."""
    a, b = _number(a), _number(b)
    if a is None or b is None:
        return None
    if a == 0:
        return 1.0 if b == 0 else math.inf
    return b / a


def _times(value: Any) -> list[float] | None:
    if not isinstance(value, list | tuple) or not value:
        return None
    out = [_number(v) for v in value]
    return None if any(v is None for v in out) else out  # type: ignore[return-value]


def time_test(row_a: pd.Series | dict, row_b: pd.Series | dict) -> TimeTest:
    """Mann–Whitney U on the two cells' per-repeat times, one-sided each way (module doc)."""
    r = ratio(row_a.get("time_s"), row_b.get("time_s"))
    times_a, times_b = _times(row_a.get("times_s")), _times(row_b.get("times_s"))
    if times_a is None or times_b is None:
        return TimeTest(r, None, None, "not tested: no per-repeat times (schema version 1)")
    if min(len(times_a), len(times_b)) < MIN_REPEATS:
        return TimeTest(r, None, None, f"not tested: fewer than {MIN_REPEATS} repeats a side "
                        f"({len(times_a)} vs {len(times_b)}), so p < {SIGNIFICANCE} is out of "
                        "reach")
    # the exact permutation distribution, always: scipy's normal approximation (its choice
    # when two times tie) claims p-values below 1/C(2R, R), which no rank order can have
    p_slower = gate.slower_p(times_b, times_a)
    p_faster = gate.slower_p(times_a, times_b)
    verdict = "no change"
    if r is not None and p_slower < SIGNIFICANCE and r >= MIN_FACTOR:
        verdict = "slower"
    elif r is not None and p_faster < SIGNIFICANCE and r <= 1 / MIN_FACTOR:
        verdict = "faster"
    return TimeTest(r, p_slower, p_faster, verdict)


def compare_cell(cell: str, a: pd.Series, b: pd.Series) -> CellComparison:
    """One cell in both runs: the ratios, the time test and every regression by the gate's
    rules (module doc)."""
    out = CellComparison(cell, str(a["status"]), str(b["status"]),
                         {m: ratio(a.get(m), b.get(m)) for m in RATIO_METRICS},
                         time_test(a, b))
    if out.status_a != "ok" or out.status_b != "ok":
        if out.status_a == "ok":
            out.regressions.append(f"status: ok → {out.status_b}: {str(b.get('error'))[:120]}")
        return out
    for metric in gate.DETERMINISTIC:
        old, new = _number(a.get(metric)), _number(b.get(metric))
        if old is None and new is None:
            continue
        if old is None or new is None:
            out.regressions.append(f"{metric}: {old} → {new} (recorded in one run only)")
        elif gate.deterministic_differs(old, new):
            line = f"{metric}: {old:g} → {new:g} ({gate.percent_change(old, new)})"
            (out.regressions if new > old else out.improvements).append(
                line + ("; deterministic, more than 1 % above A" if new > old else ""))
    old_peak, new_peak = _number(a.get("peak_bytes")), _number(b.get("peak_bytes"))
    if old_peak is not None and new_peak is not None and gate.peak_regressed(old_peak, new_peak):
        out.regressions.append(f"peak_bytes: {old_peak:g} → {new_peak:g} "
                               f"({gate.percent_change(old_peak, new_peak)}); more than "
                               "max(5 %, 64 KiB) above A")
    for metric in ERROR_METRICS:
        old, new = _number(a.get(metric)), _number(b.get(metric))
        if old is None:
            continue
        threshold = gate.error_threshold(old)
        if new is None or new > threshold:
            out.regressions.append(f"{metric}: {old:.3g} → {new if new is None else f'{new:.3g}'}"
                                   f"; above the gate's threshold {threshold:.3g}")
    if out.time.verdict == "slower":
        out.regressions.append(f"time_s: ×{out.time.ratio:.3g}, p = {out.time.p_slower:.3g} "
                               f"(significant: p < {SIGNIFICANCE} and ≥ ×{MIN_FACTOR})")
    return out


def _by_cell(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """The run's rows by cell; a cell measured twice (a resumed run) keeps its last record."""
    return {gate.cell_key(row): row for _, row in frame.iterrows()}


def compare_runs(frame_a: pd.DataFrame, frame_b: pd.DataFrame) -> Comparison:
    """Every cell of A against the same cell of B (frames from ``suite.records.load_frame``)."""
    rows_a, rows_b = _by_cell(frame_a), _by_cell(frame_b)
    cells = [compare_cell(key, rows_a[key], rows_b[key])
             for key in sorted(set(rows_a) & set(rows_b))]
    untested: dict[str, int] = {}
    for c in cells:
        if not c.time.tested and c.status_a == c.status_b == "ok":
            untested[c.time.verdict] = untested.get(c.time.verdict, 0) + 1
    return Comparison(cells, sorted(set(rows_a) - set(rows_b)), sorted(set(rows_b) - set(rows_a)),
                      untested)


# ---- rendering ----------------------------------------------------------------------------
TABLE_COLUMNS = ("cell", "time B/A", "p slower", "p faster", "time", "peak B/A", "trace B/A",
                 "err_k B/A", "err_conv B/A", "verdict")


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "–"
    return "∞" if math.isinf(value) else f"{value:.3f}"


def _fmt_p(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def table(result: Comparison) -> pd.DataFrame:
    """The per-cell table both renderers show, one row per common cell."""
    rows = []
    for c in result.cells:
        if c.status_a != "ok" or c.status_b != "ok":
            verdict = "REGRESSED" if c.regressions else f"{c.status_a} → {c.status_b}"
        else:
            verdict = "REGRESSED" if c.regressions else (
                "improved" if c.improvements or c.time.verdict == "faster" else "ok")
        time = c.time.verdict if c.time.tested else "untested"
        rows.append(dict(zip(TABLE_COLUMNS, (
            c.cell, _fmt_ratio(c.time.ratio), _fmt_p(c.time.p_slower), _fmt_p(c.time.p_faster),
            time, _fmt_ratio(c.ratios["peak_bytes"]), _fmt_ratio(c.ratios["trace_bytes"]),
            _fmt_ratio(c.ratios["grad_error_k_step"]),
            _fmt_ratio(c.ratios["grad_error_converged"]), verdict), strict=True)))
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def summary_line(result: Comparison) -> str:
    slower = sum(c.time.verdict == "slower" for c in result.cells)
    faster = sum(c.time.verdict == "faster" for c in result.cells)
    head = (f"compare: {'REGRESSED' if result.regressed else 'no regression'} — "
            f"{len(result.regressed)} of {len(result.cells)} common cells regressed; time "
            f"significantly slower in {slower}, faster in {faster} (Mann–Whitney U, one-sided, "
            f"p < {SIGNIFICANCE} and beyond ×{MIN_FACTOR})")
    return head


def notes(result: Comparison) -> list[str]:
    """What the table cannot show: untested times, regressions in words, one-run cells."""
    lines = [f"{n} cell(s) {reason}" for reason, n in sorted(result.untested.items())]
    for c in result.regressed:
        lines += [f"REGRESSED {c.cell}: {r}" for r in c.regressions]
    for c in result.cells:
        lines += [f"improved {c.cell}: {r}" for r in c.improvements]
    lines += [f"only in A: {k}" for k in result.only_a]
    lines += [f"only in B: {k}" for k in result.only_b]
    return lines


def render_text(result: Comparison) -> str:
    frame = table(result)
    body = frame.to_string(index=False) if len(frame) else "(no cell in both runs)"
    return "\n".join([body, *notes(result), summary_line(result)])


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ift-bench compare</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
tr.REGRESSED td { background: #fdd; }
tr.improved td { background: #dfd; }
</style></head><body>
<h1>ift-bench compare</h1>
<p>A: <code>{{ run_a }}</code><br>B: <code>{{ run_b }}</code></p>
<p><strong>{{ summary }}</strong></p>
<table>
<thead><tr>{% for col in columns %}<th>{{ col }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in rows %}<tr class="{{ row['verdict'] }}">
{% for col in columns %}<td>{{ row[col] }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% if notes %}<ul>{% for line in notes %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
<p>Ratios are B/A. Time: the ratio of medians of the R repeats; "p slower" and "p faster" are
one-sided Mann–Whitney U p-values on the per-repeat times; a change counts when p &lt; {{ alpha }}
and the ratio is beyond ×{{ factor }}. Other regressions follow the CI gate's rules.</p>
</body></html>
"""


def render_html(result: Comparison, run_a: str, run_b: str) -> str:
    """The same table as a small self-contained page (Jinja2, autoescaped)."""
    from jinja2 import Environment

    template = Environment(autoescape=True).from_string(_HTML)
    return template.render(run_a=run_a, run_b=run_b, summary=summary_line(result),
                           columns=TABLE_COLUMNS, rows=table(result).to_dict("records"),
                           notes=notes(result), alpha=SIGNIFICANCE, factor=MIN_FACTOR)
