"""Template-ready views of the decision table and the claims: every cell already formatted as
text (``reports.cells``; Jinja2 escapes it), with a CSS class where a cell is marked."""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from reports import decision
from reports.cells import missing, ratio, short_error, tolerance_text
from reports.claims import NOT_MEASURED, Claim, Verdict, merged_bands
from reports.units import format_bytes, format_seconds
from suite.order import sorted_frameworks

#: marks of the decision table, in the order of the criteria
MARKS = {"least_memory": "◆", "least_time": "▲", "least_memory_accurate": "✔",
         "least_time_accurate": "★"}


def _point_label(row: Any, problem_options: bool, dtypes: bool) -> str:
    parts = [f"n = {row['n']}"]
    if problem_options and row["problem_options"]:
        parts.append(str(row["problem_options"]))
    if dtypes:
        parts.append(str(row["dtype"]))
    return ", ".join(parts)


def _strategy(row: Any) -> str:
    return f"{row['backend']} ({row['strategy_options']})" if row["strategy_options"] \
        else str(row["backend"])


def decision_view(table: pd.DataFrame, tolerance: float) -> list[dict[str, Any]]:
    """Per problem: the frameworks, the compact answers (one row per point and framework) and
    the full side-by-side table (one block per point, one row per strategy, one column group
    per framework)."""
    out = []
    if table.empty:
        return out
    answers = decision.answers(table)
    for problem, sub in table.groupby("problem", sort=True):
        frameworks = sorted_frameworks(sub["framework"])
        several_dtypes = sub["dtype"].nunique() > 1
        several_options = sub["problem_options"].nunique() > 1
        answer_rows = []
        for _, a in answers[answers["problem"] == problem].iterrows():
            cells = []
            for crit, metric in (("least_memory", "peak"), ("least_time", "time"),
                                 ("least_memory_accurate", "peak"),
                                 ("least_time_accurate", "time")):
                if not a[crit]:
                    cells.append({"text": f"none within {tolerance_text(tolerance)}" if
                                  crit.endswith("_accurate") else "–", "cls": "muted"})
                    continue
                if metric == "peak":
                    value = format_bytes(a[f"{crit}:peak_bytes"])
                    rel = ratio(a[f"{crit}:peak_vs_unrolled"])
                else:
                    value = format_seconds(a[f"{crit}:time_s"])
                    rel = ratio(a[f"{crit}:time_vs_unrolled"])
                cells.append({"text": f"{MARKS[crit]} {a[crit]}", "cls": "choice",
                              "detail": f"{value}, {rel} unrolled, error vs converged "
                                        f"{short_error(a[f'{crit}:grad_error_converged'])}"})
            answer_rows.append({"point": _point_label(a, several_options, several_dtypes),
                                "K": a["K"],
                                "framework": a["framework"], "cells": cells})
        blocks = []
        for _, point in sub.groupby(["problem_options", "dtype", "n", "K"], sort=False):
            first = point.iloc[0]
            rows = []
            for _, srows in point.groupby(["backend", "strategy_options"], sort=False):
                by_fw = {r["framework"]: r for _, r in srows.iterrows()}
                cells = []
                for fw in frameworks:
                    r = by_fw.get(fw)
                    if r is None:
                        cells += [{"text": "", "cls": "muted"}] * 6
                        continue
                    mem_marks = MARKS["least_memory"] * bool(r["least_memory"]) \
                        + MARKS["least_memory_accurate"] * bool(r["least_memory_accurate"])
                    time_marks = MARKS["least_time"] * bool(r["least_time"]) \
                        + MARKS["least_time_accurate"] * bool(r["least_time_accurate"])
                    cells += [
                        {"text": f"{format_bytes(r['peak_bytes'])} {mem_marks}".strip(),
                         "cls": "mark" if mem_marks else ""},
                        {"text": ratio(r["peak_vs_unrolled"]), "cls": ""},
                        {"text": f"{format_seconds(r['time_s'])} {time_marks}".strip(),
                         "cls": "mark" if time_marks else ""},
                        {"text": ratio(r["time_vs_unrolled"]), "cls": ""},
                        {"text": short_error(r["grad_error_converged"]),
                         "cls": "" if missing(r["grad_error_converged"])
                         or r["grad_error_converged"] <= tolerance else "off"},
                        {"text": short_error(r["grad_error_k_step"]), "cls": ""},
                    ]
                rows.append({"strategy": _strategy(srows.iloc[0]), "cells": cells})
            blocks.append({"label": f"{_point_label(first, several_options, several_dtypes)}, "
                                    f"K = {first['K']}", "rows": rows})
        common = [] if several_options or not sub["problem_options"].iloc[0] else \
            [str(sub["problem_options"].iloc[0])]
        common += [] if several_dtypes else [str(sub["dtype"].iloc[0])]
        # the point and K cells span the point's frameworks (rows arrive grouped by point)
        for _, same_point in itertools.groupby(answer_rows, key=lambda r: (r["point"], r["K"])):
            rows_here = list(same_point)
            for i, row in enumerate(rows_here):
                row["span"] = len(rows_here) if i == 0 else 0
        out.append({"problem": problem, "frameworks": frameworks, "answers": answer_rows,
                    "blocks": blocks, "common": ", ".join(common)})
    return out


def _verdict_class(verdict: str) -> str:
    return verdict.split()[0].replace("not", "unmeasured")


def claims_view(results: list[tuple[Claim, Verdict]]) -> list[dict[str, Any]]:
    """One row per claim; ``bands``: its verdict per problem and run of sizes sharing a verdict
    (empty for a run with one size), ``changes``: where that verdict changes, in one line."""
    tables = ("counts", "diagnostics", "decision")
    return [{"id": c.id, "section": c.section, "statement": c.statement, "test": c.test,
             "source": c.source,
             "verdict": v.verdict, "cls": _verdict_class(v.verdict),
             "numbers": list(v.numbers), "anchor": v.figure_anchor,
             "anchor_kind": "table" if v.figure_anchor.startswith(tables) else "figure",
             "anchor_label": "see the table" if v.figure_anchor.startswith(tables)
             else "see the figure",
             "bands": [{"label": f"{b.problem} {b.label}", "verdict": b.verdict,
                        "cls": _verdict_class(b.verdict), "headline": b.headline,
                        "numbers": list(b.numbers)} for b in merged_bands(v.bands)],
             # the line only where the verdict changes with n (else the bands say "every n")
             "changes": v.changes if len(merged_bands(v.bands)) > len(
                 {b.problem for b in v.bands}) else "",
             "no_bands": "–" if v.verdict == NOT_MEASURED else "judged at one size per problem"}
            for c, v in results]
