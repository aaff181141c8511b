"""Template-ready views of each problem's figures and tables, and of the summary.

Per problem: one group of K figures per (n, problem options, dtype) with a K sweep, one group
of n figures per K with an n sweep (``reports.figure_groups``), a Pareto front per (n,
options) at its largest K, the crossover table, the per-step tape cost, timing and every fitted
exponent. Every cell is formatted text (Jinja2 escapes it); figures are base64 SVG.
"""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd

import backends
from reports import figure_groups, figures, fit_summary, peers
from reports.cells import cell, format_exponent, short_error, table
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


def _names(labels: list[str]) -> str:
    return ", ".join(labels)


def residual_notes(data: pd.DataFrame, dtype: str = "float64") -> list[str]:
    """What the drawn points of a residual figure show, in words, per series (one name for
    both frameworks where they agree, "name (framework)" where they do not):
    - falls with the residual: its error at the largest residual is ≥ 100× its error at the
      smallest (and it does not level off, below);
    - levels off: between its point of smallest residual and the nearest point with a residual
      ≥ 100× larger, its error changed by less than 2× and stays above 10⁴ ulp of ``dtype``
      (a bias the residual does not remove, not rounding);
    - more than 100 % off at its largest residual."""
    try:
        eps = float(np.finfo(dtype).eps)
    except (TypeError, ValueError):  # a dtype numpy does not know (bfloat16): float64's
        eps = float(np.finfo("float64").eps)
    found: dict[tuple[str, str], tuple[str, float]] = {}
    worst: dict[tuple[str, str], tuple[float, int]] = {}
    for (label, framework), line in data.groupby(["label", "framework"], sort=False):
        line = line.sort_values(["x", "K"])
        lo, hi = line.iloc[0], line.iloc[-1]
        if hi["y"] > 1 and not hi["at_floor"]:
            worst[(label, framework)] = (float(hi["y"]), int(hi["K"]))
        if hi["x"] < 100 * lo["x"]:
            continue
        far = line[line["x"] >= 100 * lo["x"]].iloc[0]
        if far["y"] < 2 * lo["y"] and lo["y"] > 1e4 * eps and not lo["at_floor"]:
            found[(label, framework)] = ("levels", float(lo["y"]))
        elif hi["y"] >= 100 * lo["y"]:
            found[(label, framework)] = ("falls", float(hi["y"] / lo["y"]))

    def merged(keys: dict) -> dict[str, list]:
        """label -> [(framework, value)], in the figure's order."""
        out: dict[str, list] = {}
        for (label, framework), value in keys.items():
            out.setdefault(label, []).append((framework, value))
        return out

    frameworks = set(data["framework"])
    series_fw = data.groupby("label", sort=False)["framework"].agg(set).to_dict()

    def name(label: str, fws: set) -> str:
        # the framework is named only where the other framework(s) of the series differ
        return label if fws == series_fw.get(label, frameworks) else \
            f"{label} ({', '.join(sorted(fws))})"

    notes = []
    falls = merged({k: v for k, v in found.items() if v[0] == "falls"})
    if falls:
        notes.append("Error falls with the residual (≥ 100× from its largest residual to its "
                     "smallest): " + _names([name(lab, {f for f, _ in v})
                                              for lab, v in falls.items()]) + ".")
    levels = merged({k: v for k, v in found.items() if v[0] == "levels"})
    if levels:
        parts = []
        for lab, v in levels.items():
            values = sorted({short_error(val[1]) for _, val in v})
            parts.append(f"{name(lab, {f for f, _ in v})} at {' / '.join(values)}")
        notes.append("Error levels off while the residual still falls ≥ 100× — a bias that "
                     "converging the forward does not remove: " + _names(parts) + ".")
    if worst:
        # one entry per (error, K), naming every series at it: "236 % at K = 10: a, b, c"
        by_value: dict[tuple[float, int], dict[str, set]] = {}
        for (label, framework), (y, K) in worst.items():
            by_value.setdefault((round(100 * y), K), {}).setdefault(label, set()).add(framework)
        parts = [f"{pct} % at K = {K}: " + _names([name(lab, fws) for lab, fws in labels.items()])
                 for (pct, K), labels in sorted(by_value.items(), key=lambda kv: -kv[0][0])]
        notes.append("More than 100 % off (‖g − g*‖ > ‖g*‖) at the largest residual — "
                     + "; ".join(parts) + ".")
    same = coinciding_series(data)
    if same:
        notes.append("Drawn on top of one another (within 25 % at every K, in each panel that "
                     "has both; the legend's later series is on top): " + "; ".join(same) + ".")
    return notes


#: two series whose errors differ by less than this factor at every K overprint on a log axis
COINCIDE = 1.25


def coinciding_series(data: pd.DataFrame) -> list[str]:
    """Groups of series drawn on top of one another, "a = b = c": two series coincide when
    they share a framework and, in every framework that has both, the same K with, at each K,
    residuals and errors within ``COINCIDE``× (a peer of one framework can join a group of
    ours); groups are the connected components of that relation, in the figure's order."""
    lines = {key: line.set_index("K").sort_index()
             for key, line in data.groupby(["label", "framework"], sort=False)}
    labels = list(dict.fromkeys(data["label"]))

    def close(a: pd.DataFrame, b: pd.DataFrame) -> bool:
        tol = np.log(COINCIDE)
        return list(a.index) == list(b.index) and all(
            np.allclose(np.log(a[c]), np.log(b[c]), atol=tol) for c in ("x", "y"))

    parent = {label: label for label in labels}

    def root(label: str) -> str:
        while parent[label] != label:
            label = parent[label]
        return label

    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            shared = [f for (lab, f) in lines if lab == a and (b, f) in lines]
            if shared and all(close(lines[(a, f)], lines[(b, f)]) for f in shared):
                parent[root(b)] = root(a)
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(root(label), []).append(label)
    return [" = ".join(g) for g in groups.values() if len(g) > 1]


def _residual(problem_frame: pd.DataFrame) -> list[dict]:
    """The error-against-residual figure of each (problem options, dtype) of a problem, at the
    n whose K sweep spans the most, with its caption: which n, what is left out, what the
    points show."""
    out = []
    for group, others in figure_groups.residual_groups(problem_frame):
        title = figure_title(group)
        fig = figures.residual_figure(group.frame, title=title)
        if fig.svg is None:
            continue
        info = dict(group.keys)
        data = fig.data
        ks = sorted(set(data["K"]))
        caption = [f"n = {group.value:g}, K = {', '.join(map(str, ks))}: "
                   f"{len(data)} points, {data['label'].nunique()} series."]
        if others:
            caption.append(f"Drawn at the n whose K sweep spans the widest range; n = "
                           f"{', '.join(f'{n:g}' for n in others)} "
                           f"{'is' if len(others) == 1 else 'are'} not drawn here.")
        floors = data[data["y_at_floor"]]
        if len(floors):
            caption.append(f"{len(floors)} point(s) with an error ≤ {figures.ERROR_FLOOR:.0e} "
                           f"(or exactly 0) drawn hollow at {figures.ERROR_FLOOR:.0e}.")
        if data["x_at_floor"].any():
            caption.append(f"{int(data['x_at_floor'].sum())} point(s) with a residual of "
                           f"exactly 0 drawn hollow at {data['x_floor'].iloc[0]:.0e}.")
        left = fig.left_out
        if len(left):
            for reason, rows in left.groupby("reason", sort=True):
                series = sorted({f"{figures.series_label(b, o)} · {f}" for b, o, f in
                                 zip(rows["backend"], rows["strategy_options"].fillna(""),
                                     rows["framework"], strict=True)})
                own = [b for b in sorted(set(rows["backend"]))
                       if getattr(backends.registry().get(b), "own_solver", False)]
                verb = "runs its own solver" if len(own) == 1 else "run their own solvers"
                why = f" ({', '.join(own)} {verb}: ‖F(θ, x_K)‖ of our forward does not " \
                    "describe it)" if reason == "no residual" and own else ""
                caption.append(f"Left out, {reason}: {len(rows)} record(s) — "
                               f"{', '.join(series)}{why}.")
        caption += residual_notes(data, str(info.get("dtype", "float64")))
        out.append({"key": f"{group.slug()}-residual", "title": title, "svg": b64(fig.svg),
                    "caption": " ".join(caption)})
    return out


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
        "residual": _residual(sub),
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
