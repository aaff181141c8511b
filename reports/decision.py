"""The decision table: at each measured point, every (strategy, framework) side by side.

A *point* of the decision is one (problem, problem options, dtype, device, seed, n, K): the
strategies compared there solve the same instance for the same K. For each (strategy,
framework) measured at the point the table gives

* ``peak_bytes`` and ``time_s``, and each relative to ``unrolled`` at the same point and in the
  same framework (``peak_vs_unrolled`` = peak / peak_unrolled, likewise ``time_vs_unrolled``);
* both gradient errors: ``grad_error_converged`` = ‖g − g*‖/‖g*‖ against the gradient at the
  solution, and ``grad_error_k_step`` against the exact gradient of the K-step map;

and marks, within each framework, the choices under three criteria:

* ``least_memory``: the smallest ``peak_bytes``;
* ``least_time``: the smallest ``time_s``;
* ``least_memory_accurate``: the smallest ``peak_bytes`` among the rows whose
  ``grad_error_converged`` ≤ ``tolerance`` (1e-6 by default) — a cheap gradient that is wrong
  does not count;
* ``least_time_accurate``: likewise the smallest ``time_s`` among those rows.

Ties are all marked. Rows never merge two n, two K, two problem options or two dtypes: each
row is one record (the median over seeds is not taken; each seed is its own point).
"""

from __future__ import annotations

import pandas as pd

from suite import analysis
from suite.order import sort_rows

#: the error bound of the third criterion, against the converged gradient
DEFAULT_TOLERANCE = 1e-6
#: the columns that identify a point of the decision (everything the strategies share)
POINT = ["problem", "problem_options", "dtype", "device", "seed", "n", "K"]
#: what distinguishes two rows at one point
CHOICE = ["backend", "strategy_options", "framework"]
CRITERIA = {
    "least_memory": "least memory",
    "least_time": "least time",
    "least_memory_accurate": "least memory within error {tol:g}",
    "least_time_accurate": "least time within error {tol:g}",
}
COLUMNS = POINT + CHOICE + [
    "peak_bytes", "peak_vs_unrolled", "time_s", "time_vs_unrolled",
    "grad_error_converged", "grad_error_k_step", *CRITERIA,
]


def _mark_min(group: pd.DataFrame, metric: str, eligible: pd.Series) -> pd.Series:
    """True on the eligible rows whose ``metric`` equals the group's eligible minimum."""
    values = group[metric].where(eligible)
    if values.notna().sum() == 0:
        return pd.Series(False, index=group.index)
    return (values == values.min()).fillna(False).astype(bool)


def decision_table(frame: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE,
                   baseline: str = "unrolled") -> pd.DataFrame:
    """One row per ``ok`` record, with its ratios to ``baseline`` and the three marks.

    Sorted by problem, problem options, dtype, n, K, then strategy (the registry's order:
    exact strategies first, then the IFT family) and framework.
    """
    data = analysis.ok_rows(frame)
    if data.empty:
        return pd.DataFrame(columns=COLUMNS)
    for col in ("grad_error_converged", "grad_error_k_step", "peak_bytes", "time_s"):
        data[col] = pd.to_numeric(data[col], errors="coerce")
    keys = POINT + ["framework"]
    base = (data[data["backend"] == baseline]
            .groupby(keys, dropna=False)[["peak_bytes", "time_s"]].median()
            .rename(columns={"peak_bytes": "_peak_base", "time_s": "_time_base"})
            .reset_index())
    table = data.merge(base, on=keys, how="left")
    table["peak_vs_unrolled"] = table["peak_bytes"] / table["_peak_base"]
    table["time_vs_unrolled"] = table["time_s"] / table["_time_base"]
    for crit in CRITERIA:
        table[crit] = False
    for _, group in table.groupby(keys, dropna=False):
        every = pd.Series(True, index=group.index)
        accurate = group["grad_error_converged"] <= tolerance
        table.loc[group.index, "least_memory"] = _mark_min(group, "peak_bytes", every)
        table.loc[group.index, "least_time"] = _mark_min(group, "time_s", every)
        table.loc[group.index, "least_memory_accurate"] = _mark_min(group, "peak_bytes",
                                                                    accurate)
        table.loc[group.index, "least_time_accurate"] = _mark_min(group, "time_s", accurate)
    table = sort_rows(table, ["problem", "problem_options", "dtype", "n", "K", "backend",
                              "strategy_options", "framework"])
    return table[COLUMNS].reset_index(drop=True)


def answers(table: pd.DataFrame) -> pd.DataFrame:
    """Per point and framework, the choice under each criterion, one row each: the compact
    answer to "which strategy if memory matters, which if time matters?".

    Columns: ``POINT``, ``framework``, and per criterion the chosen strategy (``" / "``-joined
    on a tie; empty when nothing qualifies) with its peak, time and converged error.
    """
    rows = []
    if table.empty:
        return pd.DataFrame(rows)
    for key, group in table.groupby(POINT + ["framework"], dropna=False, sort=False):
        row = dict(zip(POINT + ["framework"], key, strict=True))
        for crit in CRITERIA:
            chosen = group[group[crit]]
            row[crit] = " / ".join(_label(r) for _, r in chosen.iterrows())
            first = chosen.iloc[0] if len(chosen) else None
            for col in ("peak_bytes", "peak_vs_unrolled", "time_s", "time_vs_unrolled",
                        "grad_error_converged"):
                row[f"{crit}:{col}"] = None if first is None else first[col]
        rows.append(row)
    return pd.DataFrame(rows)


def _label(row: pd.Series) -> str:
    opts = row.get("strategy_options") or ""
    return f"{row['backend']} ({opts})" if opts else str(row["backend"])


def write_csv(table: pd.DataFrame, path) -> None:
    """The decision table as CSV, one row per record: bytes as exact integers, every other
    number at full precision."""
    out = table.copy()
    out["peak_bytes"] = out["peak_bytes"].round().astype("Int64")
    out.to_csv(path, index=False)
