"""Every table cell of the report as text: one module, one set of rules.

Two kinds of table share the rules written here (a missing value is "–", a boolean "yes"/"no",
``*_bytes`` in binary units, ``*_s`` in s/ms/µs):

* the analysis tables (``table``: crossovers, tape cost, timing, exponents, Pareto points,
  peers) format by the column's unit — factors as "3.0×", shares in %, errors in scientific
  notation, exponents with two decimals — pass text through, and never print "-0";
* the record tables (``record_table``, ``cell(..., record=True)``: counts, diagnostics,
  warnings, nodes, harness) print every float that is not a whole count in scientific notation
  (``.3g`` for bits), with no "-0" clean-up: they show the record as stored.

The decision table's short forms (``ratio``, ``short_error``) and the fitted exponents'
(``format_exponent``, ``format_band``) live here too.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from reports.units import format_bytes, format_seconds

#: a text that rounds to zero with a minus sign ("-0", "-0.00", "-0 B")
_NEGATIVE_ZERO = re.compile(r"^-0(\.0*)?(\D|$)")
#: columns whose whole-valued floats a record table still prints in scientific notation
_NOT_COUNTS = ("error", "residual", "bound", "cond", "rho")


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cell(col: str, value: Any, record: bool = False) -> str:
    """One value of column ``col`` as text: by the analysis tables' rules, or with ``record``
    by the record tables' (see the module docstring; the two differ only where said there)."""
    if missing(value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if record:
        return _record_text(col, value)
    text = _analysis_text(col, value)
    return text[1:] if _NEGATIVE_ZERO.match(text) else text


def _analysis_text(col: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if col.endswith("_factor"):
        return f"{value:.1f}×"
    if col.endswith(("_bytes", "_per_step")):
        return format_bytes(value)
    if col.endswith("_s"):
        return format_seconds(value)
    if col in ("backward_share", "spread"):
        return f"{100 * value:.0f} %"
    if "error" in col or col == "inner_residual":
        return f"{value:.2e}"
    if "exponent" in col or col in {"slope", "theory_lo", "theory_hi"}:
        return format_exponent(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _record_text(col: str, value: Any) -> str:
    if col.endswith("_bytes"):
        return format_bytes(value)
    if col.endswith("_s"):
        return format_seconds(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15 and not any(k in col for k in _NOT_COUNTS):
            return str(int(value))
        return f"{value:.3g}" if "bits" in col else f"{value:.2e}"
    return str(value)


def table(frame: pd.DataFrame, columns: list[str], headers: dict[str, str] | None = None,
          keep: tuple[str, ...] = ("backend", "framework")) -> dict:
    """An analysis table: the columns present in ``frame``, minus those with one value in every
    row (said once in ``constant`` instead), each cell formatted by ``cell``."""
    headers = headers or {}
    present = [c for c in columns if c in frame.columns]
    constant = [c for c in present if c not in keep and len(frame) > 1
                and frame[c].astype(str).nunique() == 1]
    shown = [c for c in present if c not in constant]
    first = frame.iloc[0] if len(frame) else {}
    return {"columns": [headers.get(c, c) for c in shown],
            "rows": [[cell(c, row[c]) for c in shown] for _, row in frame.iterrows()],
            "constant": [f"{headers.get(c, c)} = {cell(c, first[c])}" for c in constant
                         if cell(c, first[c]) not in ("", "–")]}


def record_table(frame: pd.DataFrame, headers: dict[str, str] | None = None) -> dict:
    """A record table: every column of ``frame``, each cell by the record tables' rules."""
    headers = headers or {}
    columns = list(frame.columns)
    return {"columns": [headers.get(c, c) for c in columns],
            "rows": [[cell(c, row[c], record=True) for c in columns]
                     for _, row in frame.iterrows()]}


def ratio(value: Any) -> str:
    """A ratio in the decision table: two significant digits and "×"."""
    return "–" if missing(value) else f"{value:.2g}×"


def short_error(value: Any) -> str:
    """A gradient error in the decision table: one decimal, scientific."""
    return "–" if missing(value) else f"{value:.1e}"


def format_band(band: tuple[float, float] | None) -> str:
    """A theory band of exponents: "1", "0–0.5", or "?" where there is none."""
    if band is None:
        return "?"
    return f"{band[0]:g}" if band[0] == band[1] else f"{band[0]:g}–{band[1]:g}"


def format_exponent(value: float) -> str:
    """Two decimals, never "-0.00"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{float(value):.2f}"
    return "0.00" if text == "-0.00" else text


def tolerance_text(value: float) -> str:
    """1e-06 → "1e-6": a power of ten as a reader writes it."""
    mantissa, _, exponent = f"{value:.0e}".partition("e")
    return f"{mantissa}e{int(exponent)}"
