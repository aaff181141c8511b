"""Template-ready views of each problem's figures and tables, and of the summary.

Per problem: one group of K figures per (n, problem options, dtype) with a K sweep, one group
of n figures per K with an n sweep (``reports.figure_groups``), a Pareto front per (n,
options) at its largest K, the crossover table, the per-step tape cost, timing and every fitted
exponent. Every cell is formatted text (Jinja2 escapes it); figures are base64 SVG.
"""

from __future__ import annotations

import base64

import pandas as pd

from reports import figure_groups, figures, fit_summary, peers
from reports.cells import cell, format_exponent, table
from suite import analysis

#: the K figures of a group: (key, metrics, guides, caption)
K_FIGURES = (
    ("peak", ("peak_bytes",), (1, 0.5),
     "Peak memory of one gradient call against K (memray's allocator high-water mark above the "
     "call's start). Dotted guides ∝ K and ∝ √K: reverse mode rises with slope 1, √K "
     "checkpointing with ½, the rest should stay flat."),
    ("trace", ("trace_bytes",), (1, 0.5),
     "Trace bytes against K: what the strategy keeps for its backward pass (torch: saved "
     "tensors plus held buffers; JAX: XLA's temporary buffer). Deterministic."),
    ("time", ("time_s",), (1,),
     "Time per gradient (median of the repeats) against K. Every strategy runs the K solver "
     "steps at least once."),
    ("errors", figures.ERRORS, (),
     "Both errors, ‖g − g_ref‖/‖g_ref‖. Top: against the converged gradient (the true "
     "dℓ/dθ at the solution) — what unrolling, truncation and an IFT applied off the solution "
     "cost. Bottom: against the exact derivative of the K-step map — rounding level for the "
     "exact strategies. Exact zeros and errors below the floor are drawn hollow on the dashed "
     "floor line."),
    ("grad_norm", ("grad_norm",), (),
     "Norm of the measured gradient against K: for savi with wrt=encoder, how much the encoder "
     "still learns through K refinement steps (the IFT's answer is exactly 0); elsewhere a "
     "check that strategies agree on the gradient's size."),
)
N_FIGURES = (
    ("peak", ("peak_bytes",), (1, 2),
     "Peak memory against n at fixed K. Guides ∝ n and ∝ n²: ift-direct and forward-batched "
     "are Θ(n²), the matrix-free strategies Θ(n)."),
    ("trace", ("trace_bytes",), (1, 2), "Trace bytes against n at fixed K."),
    ("time", ("time_s",), (1, 2), "Time per gradient against n at fixed K."),
)


def b64(svg: str | None) -> str | None:
    return None if svg is None else base64.b64encode(svg.encode()).decode()


HEADERS = {"strategy_options": "options", "problem_options": "problem options",
           "K_grid": "K measured", "crossover_time_K": "faster from K",
           "time_verdict": "time vs unrolled", "crossover_memory_K": "smaller from K",
           "memory_verdict": "peak memory vs unrolled", "n_squared": "n² (n = dim x)",
           "n_squared_verdict": "“faster only for K > n²”", "trace_bytes_per_step":
           "trace / step", "peak_bytes_per_step": "peak / step", "state_bytes": "state",
           "trace_bytes_factor": "trace ÷ state", "peak_bytes_factor": "peak ÷ state",
           "K_used": "K used", "time_s": "time", "forward_time_s": "forward",
           "backward_time_s": "backward", "backward_share": "backward share",
           "time_min_s": "min", "time_max_s": "max", "spread": "(median − min)/median",
           "compile_s": "compile", "inner_residual": "‖F(θ, x_K)‖"}


def figure_title(group: figure_groups.FigureGroup) -> str:
    """A figure group's title: problem, held size, problem options (if any), dtype."""
    info = dict(group.keys)
    extra = [str(info["problem_options"])] if info.get("problem_options") else []
    return ", ".join([f"{info['problem']}", f"{group.held} = {group.value:g}", *extra,
                      str(info["dtype"])])


def _group_figures(group: figure_groups.FigureGroup, specs) -> list[dict]:
    out = []
    for key, metrics, guides, caption in specs:
        fig = figures.series_figure(group.frame, group.variable, metrics, title=figure_title(group),
                                    guides=guides)
        if fig.svg is None:
            continue
        if fig.data["at_floor"].any():
            floors = fig.data[fig.data["at_floor"]]
            caption += f" {len(floors)} point(s) drawn at the floor (hollow)."
        out.append({"key": f"{group.slug()}-{key}", "svg": b64(fig.svg), "caption": caption})
    return out


def _time_split(group: figure_groups.FigureGroup) -> list[dict]:
    """Forward vs backward time of every series of a K group, at its largest K."""
    top = group.frame[group.frame["K"] == group.frame["K"].max()]
    K = int(top["K"].iloc[0])
    fig = figures.time_split_plot(top, title=f"{figure_title(group)}, K = {K}")
    if fig.svg is None:
        return []
    return [{"key": f"{group.slug()}-time-split", "svg": b64(fig.svg), "caption":
             f"Where the time goes at K = {K}: the forward solve timed alone "
             "(forward_time_s, coloured) and the rest of the gradient (white), total at the "
             "right. Hatched: the forward solve, timed as its own program, took at least as "
             "long as the whole gradient (per-call dispatch dominates both). The table under "
             "“Time” below gives every K, the spread over repeats and JAX's compile time."}]


def _pareto(problem_frame: pd.DataFrame) -> list[dict]:
    front = analysis.pareto_front(problem_frame)
    out = []
    if front.empty:
        return out
    for key, points in front.groupby(analysis.GROUP_KEYS + ["n"], dropna=False):
        info = dict(zip(analysis.GROUP_KEYS + ["n"], key, strict=True))
        K = int(points["K"].max())
        title = ", ".join([f"{info['problem']}", f"n = {info['n']}", f"K = {K}",
                           *([info["problem_options"]] if info["problem_options"] else []),
                           str(info["dtype"])])
        fig = figures.pareto_plot(points, title=title)
        ordered = points.sort_values(["pareto", "peak_bytes"], ascending=[False, True])
        out.append({"title": title, "svg": b64(fig.svg), "table": table(
            ordered, ["backend", "strategy_options", "framework", "peak_bytes", "time_s",
                      "error", "pareto"], {**HEADERS, "error": "error vs converged"})})
    return out


def problem_origins(sub: pd.DataFrame) -> list[str]:
    """Where one problem's code came from, one line per distinct origin in the records (two
    lines mean the file changed during the run), with who computed its references."""
    lines = []
    for origin, rows in _by_origin(sub):
        sources = sorted({str(s) for s in rows.get("reference_source", pd.Series()).dropna()})
        refs = f"; references: {', '.join(sources)}" if sources else ""
        sha = origin.get("sha256") or "unknown"
        lines.append(f"{origin.get('module')} from {origin.get('file')} (sha256 {sha[:16]}…)"
                     f"{refs}")
    return lines


def _by_origin(sub: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    if "problem_origin" not in sub:
        return []
    keys = sub["problem_origin"].map(
        lambda o: tuple(sorted(o.items())) if isinstance(o, dict) else None)
    return [(dict(key), sub[keys.map(lambda k, key=key: k == key)])
            for key in dict.fromkeys(k for k in keys if k is not None)]


def problem_section(problem: str, frame: pd.DataFrame) -> dict:
    """Everything the report shows for one problem."""
    sub = frame[frame["problem"] == problem]
    k_groups = [{"title": figure_title(g), "slug": g.slug(),
                 "series": len(g.frame.groupby(["backend", "framework", "strategy_options"])),
                 "figures": _group_figures(g, K_FIGURES) + _time_split(g)}
                for g in figure_groups.figure_groups(sub, "K")]
    # the group with the most series first (gd: the 11 strategies at n = 50 before forward)
    k_groups.sort(key=lambda g: -g["series"])
    n_groups = [{"title": figure_title(g), "slug": g.slug(),
                 "series": len(g.frame.groupby(["backend", "framework", "strategy_options"])),
                 "figures": _group_figures(g, N_FIGURES)}
                for g in figure_groups.figure_groups(sub, "n")]
    cross = analysis.crossovers(sub)
    tape = analysis.tape_cost(sub)
    timing = analysis.timing(sub)
    exps = pd.concat([analysis.scaling_exponents(sub, "K"),
                      analysis.scaling_exponents(sub, "n")], ignore_index=True)
    series_cols = ["backend", "strategy_options", "framework", "dtype", "problem_options", "n"]
    return {
        "name": problem,
        "origin": problem_origins(sub),
        "k_groups": k_groups,
        "n_groups": n_groups,
        "pareto": _pareto(sub),
        "peers": peers.peers_view(sub, problem),
        "crossovers": table(cross, series_cols + [
            "K_grid", "time_verdict", "memory_verdict", "n_squared", "n_squared_verdict"],
            HEADERS, keep=("backend", "framework", "time_verdict", "memory_verdict",
                           "n_squared_verdict")) if len(cross) else None,
        "tape": table(tape, series_cols + [
            "K_used", "trace_bytes_per_step", "peak_bytes_per_step", "state_bytes",
            "trace_bytes_factor", "peak_bytes_factor"], HEADERS,
            keep=("backend", "framework", "trace_bytes_factor", "peak_bytes_factor"))
        if len(tape) else None,
        "timing": table(timing.sort_values(["problem_options", "dtype", "n", "K"])
                        if len(timing) else timing,
                        series_cols + ["K", "time_s", "forward_time_s", "backward_time_s",
                                       "backward_share", "time_min_s", "time_max_s", "spread",
                                       "compile_s", "inner_residual"], HEADERS,
                        keep=("backend", "framework", "K", "time_s"))
        if len(timing) else None,
        "exponents": table(exps, series_cols + [
            "K", "variable", "metric", "slope", "theory_lo", "theory_hi", "used", "dropped",
            "verdict"], {**HEADERS, "used": "fitted over", "dropped": "overhead regime"},
            keep=("backend", "framework", "metric", "verdict")) if len(exps) else None,
    }


def summary_view(frame: pd.DataFrame) -> list[dict]:
    """The summary, one table per problem: each series with a K sweep, its three exponents in
    K beside their theory bands, the verdict per metric (with the K values used), the notes that
    explain each disagreement, and both errors at its largest K."""
    table_ = fit_summary.summary(frame)
    out = []
    if table_.empty:
        return out
    for problem, rows in table_.groupby("problem", sort=True):
        notes: list[str] = []
        body = []
        several = {c: rows[c].astype(str).nunique() > 1
                   for c in ("problem_options", "dtype", "n", "strategy_options")}
        for _, r in rows.iterrows():
            series = [str(r["backend"]) + (f" ({r['strategy_options']})"
                                           if r["strategy_options"] else ""), r["framework"]]
            where = ", ".join([f"n = {r['n']}"] + ([str(r["problem_options"])] if
                                                    several["problem_options"] else [])
                              + ([str(r["dtype"])] if several["dtype"] else []))
            cells = []
            for short in ("trace", "peak", "time"):
                value, verdict = r.get(f"{short}_exponent"), r.get(f"{short}_verdict")
                text = format_exponent(value)
                if verdict == "too few points":
                    text = f"({text})"
                cells.append({"text": text, "theory": r[f"{short}_theory"],
                              "cls": {"disagrees": "no", "too few points": "muted"}.get(
                                  verdict, "")})
            refs = []
            if isinstance(r["notes"], list):
                for note in r["notes"]:
                    if note not in notes:
                        notes.append(note)
                    refs.append(notes.index(note) + 1)
            body.append({"series": series, "where": where, "cells": cells,
                         "verdict": r["verdict"], "refs": refs,
                         "errors": [cell("error", r["error_converged_at_max_K"]),
                                    cell("error", r["error_k_step_at_max_K"])],
                         "max_K": int(r["max_K"])})
        one_k = rows["max_K"].nunique() == 1
        out.append({"problem": problem, "rows": body, "notes": notes, "max_K_column": not one_k,
                    "constant": [f"{c.replace('_', ' ')} = {rows[c].iloc[0]}"
                                 for c in ("problem_options", "dtype")
                                 if not several[c] and rows[c].iloc[0]]
                    + ([f"largest K = {int(rows['max_K'].iloc[0])}"] if one_k else [])})
    return out
