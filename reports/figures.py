"""Seaborn figures for the report, each returned as a self-contained SVG string.

One colour per strategy (fixed by the registry order, identical in every figure), one panel
per framework, log–log axes with bytes on binary ticks and seconds on decades.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from reports.units import format_bytes, format_seconds  # noqa: E402

LABELS = {"peak_bytes": "peak memory", "trace_bytes": "trace bytes", "time_s": "time per gradient",
          "grad_rel_error": "relative gradient error", "K": "K (inner iterations)",
          "n": "n (problem size)", "grad_norm": "‖dℓ/dθ‖"}
#: errors at or below this are drawn at this floor (an exact 0 has no place on a log axis)
ERROR_FLOOR = 1e-17


def strategy_palette(names: list[str] | None = None) -> dict[str, tuple]:
    """One colour per strategy, fixed by the registry order, identical in every figure."""
    import backends

    order = list(backends.registry())
    colours = sns.color_palette("tab10") + sns.color_palette("Dark2")
    palette = {name: colours[i % len(colours)] for i, name in enumerate(order)}
    extra = [n for n in (names or []) if n not in palette]
    for i, name in enumerate(extra):
        palette[name] = sns.color_palette("dark", n_colors=len(extra))[i]
    return palette


def _svg(fig: plt.Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _format_axis(axis, metric: str) -> None:
    if metric.endswith("bytes"):
        axis.set_major_locator(LogLocator(base=2, numticks=9))
        axis.set_major_formatter(FuncFormatter(lambda v, _: format_bytes(v)))
    elif metric.endswith("_s"):
        axis.set_major_formatter(FuncFormatter(lambda v, _: format_seconds(v)))
    elif metric == "grad_norm":  # often inside one decade: label the minor ticks 2 and 5 too
        axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
        return
    axis.set_minor_formatter(NullFormatter())


def _guides(ax, x: np.ndarray, y: np.ndarray, slopes: tuple[float, ...],
            variable: str = "K") -> None:
    """Dotted reference lines of the given log–log slopes through the lowest-left point."""
    if len(x) == 0:
        return
    x0, x1 = float(np.min(x)), float(np.max(x))
    y0 = float(np.min(y))
    for slope in slopes:
        xs = np.array([x0, x1])
        ax.plot(xs, y0 * (xs / x0) ** slope, ls=":", color="0.55", lw=1, zorder=0)
        label = {1: f"∝ {variable}", 0.5: f"∝ √{variable}", 2: f"∝ {variable}²"}.get(
            slope, f"slope {slope:g}")
        ax.annotate(label, (x1, y0 * (x1 / x0) ** slope), fontsize=7, color="0.4",
                    xytext=(2, 0), textcoords="offset points", va="center")


def framework_panels(frame: pd.DataFrame, x: str, y: str, *, guides: tuple[float, ...] = (),
                     title: str = "") -> str | None:
    """One log–log panel per framework: ``y`` against ``x``, a line per strategy."""
    data = frame[(frame["status"] == "ok") & frame[y].notna()].copy()
    if y == "grad_rel_error":
        data[y] = data[y].clip(lower=ERROR_FLOOR)
    data = data[data[y] > 0]
    if data.empty:
        return None
    # a curve against K is drawn at one n, and against n at one K: the value of the other
    # variable that the most points share (the sweep's fixed value), never a median across it
    other = "n" if x == "K" else "K"
    held = data.groupby(other)[x].nunique().idxmax()
    data = data[data[other] == held].copy()
    # a lone point is no curve (e.g. strategies measured only at the K sweep's n)
    series = ["backend", "strategy_options", "problem_options"]
    data = data[data.groupby(series)[x].transform("nunique") >= 2]
    if data.empty:
        return None
    title = f"{title}, {other} = {held}" if title else f"{other} = {held}"
    # problem options that differ between series (savi's wrt=…) are part of the label
    shown = ["strategy_options"] + (["problem_options"]
                                    if data["problem_options"].nunique() > 1 else [])
    data["strategy"] = [
        backend + (f" ({', '.join(extra)})" if extra else "")
        for backend, *opts in data[["backend", *shown]].itertuples(index=False)
        for extra in [[o for o in opts if o]]]
    frameworks = [f for f in ("torch", "jax") if f in set(data["framework"])]
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(frameworks), figsize=(5.6 * len(frameworks), 4.1),
                             squeeze=False, sharey=True)
    palette = strategy_palette(sorted(data["backend"].unique()))
    order = [s for b in palette for s in sorted(data["strategy"].unique())
             if s.split(" (")[0] == b]
    strategy_colours = {s: palette[s.split(" (")[0]] for s in order}
    for ax, framework in zip(axes.flat, frameworks, strict=True):
        sub = data[data["framework"] == framework]
        sub = sub.groupby(["strategy", x], as_index=False)[y].median()
        sns.lineplot(data=sub, x=x, y=y, hue="strategy", hue_order=order, style="strategy",
                     style_order=order, markers=True, dashes=False, palette=strategy_colours,
                     ax=ax, legend=False, errorbar=None)
        ax.set_xscale("log")
        ax.set_yscale("log", base=2 if y.endswith("bytes") else 10)
        _format_axis(ax.yaxis, y)
        ax.set(title=f"{title} — {framework}" if title else framework,
               xlabel=LABELS.get(x, x), ylabel=LABELS.get(y, y))
        _guides(ax, sub[x].to_numpy(), sub[y].to_numpy(), guides, x)
    handles = [plt.Line2D([], [], color=strategy_colours[s], marker="o", lw=1.5, label=s)
               for s in order if s in set(data["strategy"])]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small",
               frameon=False, title="strategy")
    fig.tight_layout()
    return _svg(fig)


def pareto_plot(points: pd.DataFrame, title: str = "") -> str | None:
    """Peak memory against time at the largest K; marker size grows with the error; Pareto
    points ringed in black."""
    if points.empty:
        return None
    data = points.copy()
    data["error"] = data["error"].clip(lower=ERROR_FLOOR)
    # larger markers for larger errors: log10 error mapped onto 30–300 pt²
    log_err = np.log10(data["error"].astype(float))
    span = max(float(log_err.max() - log_err.min()), 1e-9)
    data["size"] = 30 + 270 * (log_err - log_err.min()) / span
    palette = strategy_palette(sorted(data["backend"].unique()))
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for framework, marker in (("torch", "o"), ("jax", "s")):
        sub = data[data["framework"] == framework]
        if sub.empty:
            continue
        ax.scatter(sub["peak_bytes"], sub["time_s"], s=sub["size"],
                   c=[palette[b] for b in sub["backend"]], marker=marker, alpha=0.8,
                   edgecolors=["black" if p else "none" for p in sub["pareto"]], linewidths=1.5)
        for _, row in sub[sub["pareto"]].iterrows():
            ax.annotate(f"{row['backend']} ({framework})", (row["peak_bytes"], row["time_s"]),
                        fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    _format_axis(ax.xaxis, "peak_bytes")
    _format_axis(ax.yaxis, "time_s")
    ax.set(xlabel="peak memory", ylabel="time per gradient", title=title)
    handles = [plt.Line2D([], [], color=palette[b], marker="o", lw=0, label=b)
               for b in palette if b in set(data["backend"])]
    handles += [plt.Line2D([], [], color="0.3", marker=m, lw=0, label=f)
                for f, m in (("torch", "o"), ("jax", "s"))]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small",
              frameon=False, title="strategy / framework")
    fig.tight_layout()
    return _svg(fig)
