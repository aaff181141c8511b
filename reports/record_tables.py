"""What the record knows beyond the figures, as tables for the report: exact counts, the
strategies' diagnostics, warnings grouped by kind, and the run's configuration.

Pure functions of the records frame (and of ``meta.json``'s config); the HTML template only
lays the returned rows out.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pandas as pd

from suite import analysis
from suite.order import sort_rows

COUNT_COLUMNS = ["step_evals", "vjp_evals", "jvp_evals", "hvp_evals", "solver_iters"]
#: what identifies one row of the per-point tables, a row never merging two of these; and
#: their order (strategy and framework in the registries' order, ``suite.order.sort_rows``)
POINT_COLUMNS = ["problem", "problem_options", "dtype", "n", "K", "backend",
                 "strategy_options", "framework"]
#: a number inside a warning's text: integer, decimal or scientific, with optional sign — not
#: a digit that is part of a name (x_0, log2)
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?!\w)")


def counts_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per ok record: the exact operation counts (null where a count does not apply),
    with dim θ beside them (forward mode's counts are dim θ · K)."""
    data = analysis.ok_rows(frame)
    if data.empty:
        return pd.DataFrame(columns=POINT_COLUMNS + ["dim_theta"] + COUNT_COLUMNS)
    return sort_rows(data, POINT_COLUMNS)[POINT_COLUMNS + ["dim_theta"] + COUNT_COLUMNS] \
        .reset_index(drop=True)


def merge_identical_frameworks(counts: pd.DataFrame) -> pd.DataFrame:
    """One row for the frameworks of a point whose counts are all equal (framework "torch,
    jax"), separate rows where they differ: the counts are exact, so a difference is news."""
    if counts.empty:
        return counts
    keys = [c for c in POINT_COLUMNS if c != "framework"]
    rows = []
    for _, group in counts.groupby(keys, sort=False, dropna=False):
        values = group[["dim_theta"] + COUNT_COLUMNS].astype("string").fillna("–")
        if len(group) > 1 and (values.nunique() == 1).all():
            row = group.iloc[0].copy()
            row["framework"] = ", ".join(group["framework"])
            rows.append(row)
        else:
            rows.extend(r for _, r in group.iterrows())
    return pd.DataFrame(rows).reset_index(drop=True)


def drop_constant_columns(frame: pd.DataFrame, candidates: tuple[str, ...] = (
        "problem", "problem_options", "dtype", "strategy_options")) -> tuple[pd.DataFrame,
                                                                             dict[str, str]]:
    """The frame without those of the identity ``candidates`` that hold one value throughout
    (measurements are never dropped), and those values, to state once above the table."""
    constant = [c for c in candidates
                if c in frame.columns and len(frame) and frame[c].astype(str).nunique() == 1]
    shown = {c: str(frame[c].iloc[0]) for c in constant if str(frame[c].iloc[0]) not in (
        "", "nan", "None", "<NA>")}
    return frame.drop(columns=constant), shown


def diagnostics_table(frame: pd.DataFrame, family: str) -> pd.DataFrame:
    """The ``diagnostics`` dict of each ok record of a family, one column per key present.

    ``family``: ``"ift"`` (strategies judged against the converged gradient: the adjoint
    check against a dense float64 solve, ∂F/∂x's condition number, Neumann's ρ, plus the
    record's ``inner_residual``, ``solver_converged`` and ``error_bound``) or ``"reversible"``
    (the information buffer: bits per step against log₂(1/γ), capacity, exact reconstruction).
    """
    data = analysis.ok_rows(frame)
    if data.empty:
        return pd.DataFrame()
    if family == "ift":
        data = data[data["backend"].str.startswith("ift-")]
        extra = ["inner_residual", "solver_converged", "solver_iters", "error_bound"]
    elif family == "reversible":
        data = data[data["backend"] == "reversible"]
        extra = ["trace_bytes", "peak_bytes"]
    else:
        raise ValueError(f"family: {family!r} (allowed: ift, reversible)")
    if data.empty:
        return pd.DataFrame()
    diag = pd.DataFrame([d if isinstance(d, dict) else {} for d in data["diagnostics"]],
                        index=data.index)
    out = pd.concat([data[POINT_COLUMNS + extra], diag], axis=1)
    return sort_rows(out, POINT_COLUMNS).reset_index(drop=True)


def nodes_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per node (hostname), the points it measured, by status, and what they were — shown
    only when a run (a Ray sweep, or a resumed one) was measured on more than one machine,
    since times from different machines must not be compared."""
    if frame.empty or "node" not in frame or frame["node"].nunique() < 2:
        return pd.DataFrame()
    rows = []
    for node, sub in frame.groupby(frame["node"].fillna("?"), sort=True):
        statuses = sub["status"].value_counts()
        rows.append({"node": node, "points": len(sub), "ok": int(statuses.get("ok", 0)),
                     "not ok": int(len(sub) - statuses.get("ok", 0)),
                     "problems": ", ".join(sorted(sub["problem"].unique())),
                     "frameworks": ", ".join(sorted(sub["framework"].unique()))})
    return pd.DataFrame(rows)


#: the phases of a point (``Record.phases_s``) in the order they run
PHASES = ("start", "prepare", "first_call", "lock_wait", "timed", "peak", "rss", "trace",
          "counting", "references")


def harness_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Where the sweep's time went, per framework and in all: seconds summed over the points
    that recorded ``phases_s``, by phase, and the median per point of the harness overhead —
    everything but ``timed`` (the timed repeats of the gradient and the forward, and the
    gate's paired calls), the process start and the untimed meters included."""
    if frame.empty or "phases_s" not in frame:
        return pd.DataFrame()
    phases = frame["phases_s"].map(lambda p: p if isinstance(p, dict) and p else None)
    measured = frame[phases.notna()]
    if measured.empty:
        return pd.DataFrame()
    table = pd.DataFrame(list(phases.dropna()), index=measured.index).reindex(
        columns=list(PHASES)).fillna(0.0)
    table["framework"] = measured["framework"]
    rows = []
    for name, sub in [*table.groupby("framework", sort=True), ("all", table)]:
        seconds = sub[list(PHASES)]
        overhead = seconds.sum(axis=1) - seconds["timed"]
        # fixed-point text: seconds read better as 251.0 than as 2.51e+02
        rows.append({"framework": name, "points": len(sub),
                     "total": f"{seconds.to_numpy().sum():.1f}",
                     **{phase: f"{seconds[phase].sum():.1f}" for phase in PHASES},
                     "overhead per point (median)": f"{overhead.median():.2f}"})
    return pd.DataFrame(rows)


def warning_kind(message: str) -> str:
    """A warning's kind: its text with every number replaced by ``#`` (so "‖F‖ = 1.2e-03"
    and "‖F‖ = 4.0e-07" are one kind)."""
    return _NUMBER.sub("#", str(message)).strip()


def warnings_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (record, warning): the point's identity, the message and its kind — the
    data to mark warned points on the figures."""
    if frame.empty:
        return pd.DataFrame(columns=POINT_COLUMNS + ["message", "kind"])
    data = analysis.annotate(frame) if "problem_options" not in frame else frame
    rows = [{**{c: r[c] for c in POINT_COLUMNS}, "message": w, "kind": warning_kind(w)}
            for r in data.to_dict("records") for w in (r.get("warnings") or [])]
    return pd.DataFrame(rows, columns=POINT_COLUMNS + ["message", "kind"])


def warning_groups(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Warnings grouped by kind, most frequent first: the kind, how many records carry it, one
    example message, and the points compactly — one line per (problem, options, strategy,
    framework, n) with its K values."""
    table = warnings_frame(frame)
    groups = []
    for kind, group in table.groupby("kind", sort=False):
        lines = []
        keys = ["problem", "problem_options", "backend", "strategy_options", "framework",
                "dtype", "n"]
        for key, sub in group.groupby(keys, sort=True):
            info = dict(zip(keys, key, strict=True))
            ks = ", ".join(str(k) for k in sorted(sub["K"].unique()))
            label = " ".join(str(v) for v in (info["problem"], info["problem_options"],
                                              info["backend"], info["strategy_options"],
                                              info["framework"], f"n={info['n']}") if v)
            lines.append(f"{label}: K = {ks}")
        groups.append({"kind": kind, "count": len(group), "example": group["message"].iloc[0],
                       "points": lines})
    return sorted(groups, key=lambda g: -g["count"])


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} = {_text(v)}" for k, v in value.items()) or "–"
    return str(value)


def config_view(config: dict[str, Any]) -> dict[str, Any]:
    """The run's configuration as rows a reader can scan: the general settings, one row per
    grid (its problems, strategies, n, K and options; "all" where the grid narrows nothing),
    and the raw JSON (non-ASCII kept: γ, not \\u03b3) for copying."""
    general_keys = ["name", "description", "source", "problems", "backends", "frameworks",
                    "dtypes", "device", "seeds", "options", "backend_options"]
    general = [(key, _text(config[key])) for key in general_keys if key in config]
    general += [(f"settings: {k}", _text(v)) for k, v in (config.get("settings") or {}).items()]
    grids = [{"problems": _text(g.get("problems")) if g.get("problems") else "all",
              "backends": _text(g.get("backends")) if g.get("backends") else "all",
              "frameworks": _text(g.get("frameworks")) if g.get("frameworks") else "all",
              "dtypes": _text(g.get("dtypes")) if g.get("dtypes") else "all",
              "n": _text(g.get("n")), "K": _text(g.get("K")),
              "options": _text(g.get("options")) if g.get("options") else "–"}
             for g in config.get("grids") or []]
    return {"general": general, "grids": grids,
            "json": json.dumps(config, indent=2, ensure_ascii=False)}


def memory_wall(frame: pd.DataFrame) -> list[str]:
    """One line per point past the memory cap (``oom``, or ``skipped`` after its series' oom):
    the peak it would have needed, predicted from the series' smaller K (suite.memory_need),
    against the cap it ran under.

    The sweep predicts as the wall is hit, from the points finished by then; with points in
    flight side by side, a smaller K of the series may finish later. So the need is predicted
    again here from every ok point of the series in the run, and the record's own
    ``predicted_need_bytes`` is used only where the run no longer holds enough of them."""
    from reports.units import format_bytes

    if frame.empty or "predicted_need_bytes" not in frame:
        return []
    wall = frame[frame["status"].isin(["oom", "skipped"])
                 & (frame["status"].eq("oom") | frame["predicted_need_bytes"].notna())]
    lines = []
    for r in sort_rows(wall, ["problem", "backend", "framework", "n", "K"]).to_dict("records"):
        where = (f"{r['backend']} ({r['framework']}) at {r['problem']} n = {r['n']}, "
                 f"K = {r['K']}")
        cap = r.get("memory_cap_bytes")
        cap_text = f"cap {format_bytes(cap)}" if pd.notna(cap) else "no cap set"
        need = _need_from_series(frame, r)
        if need is not None:
            lines.append(f"{where} needs ≈ {format_bytes(need[0])} (predicted from K ≤ "
                         f"{need[1]}), {cap_text}")
        else:
            lines.append(f"{where} ran out of memory ({cap_text}); fewer than two smaller K "
                         "of its series were measured, so its need is not predicted")
    return lines


def _need_from_series(frame: pd.DataFrame, row: dict) -> tuple[int, int] | None:
    """(bytes, largest K predicted from) for a wall row: from the series' ok points in
    ``frame`` where they predict, else the record's own prediction, else None."""
    import backends
    from suite.memory_need import Measured, predict_need

    same = frame["status"].eq("ok")
    for col in ("problem", "backend", "framework", "n", "dtype", "device", "seed"):
        if col in frame:
            same &= frame[col].eq(row[col])
    if "options" in frame:
        same &= frame["options"].map(lambda o: o == row["options"])
    points = [Measured(int(p["K"]), int(p["trace_bytes"]), int(p["peak_bytes"]))
              for p in frame[same].to_dict("records")
              if pd.notna(p.get("trace_bytes")) and pd.notna(p.get("peak_bytes"))]
    strategy = backends.registry().get(row["backend"])
    if strategy is not None:
        need = predict_need(points, int(row["K"]), strategy.theory.memory_K[1])
        if need is not None:
            return need.bytes, max(need.from_K)
    recorded = row.get("predicted_need_bytes")
    if recorded is not None and pd.notna(recorded):
        return int(recorded), max(row["predicted_need_from_K"])
    return None
