"""Matplotlib figures for the report, each returned with the data it plotted.

Every figure function returns a ``Figure``: the SVG text and the frame of exactly the points
drawn (one row per series, x and metric), so tests compare what is plotted with the records.

One colour and one marker per strategy (fixed by the registry order, identical in every
figure, and the legend shows the same marker as the line), one panel per framework, log–log
axes with bytes on binary ticks, seconds in s/ms/µs, and the measured sizes as x ticks.
Values a log axis cannot show (an exact 0, or an error below ``ERROR_FLOOR``) are drawn at a
stated floor with hollow markers, never dropped.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FixedLocator,
    FuncFormatter,
    MaxNLocator,
    NullFormatter,
    NullLocator,
    ScalarFormatter,
)

from reports.units import format_bytes, format_seconds  # noqa: E402
from suite.frameworks import registry as framework_registry  # noqa: E402
from suite.order import framework_rank, sorted_frameworks  # noqa: E402

LABELS = {"peak_bytes": "peak memory", "trace_bytes": "trace bytes", "time_s": "time per gradient",
          "grad_rel_error": "relative gradient error",
          "grad_error_converged": "error vs converged gradient",
          "grad_error_k_step": "error vs K-step map", "K": "K (inner iterations)",
          "n": "n (problem size)", "grad_norm": "‖dℓ/dθ‖",
          "inner_residual": "‖F(θ, x_K)‖ (forward residual)"}
#: the ring drawn around a point whose record carries a warning
WARNING_COLOUR = "#d62728"
#: errors at or below this are drawn at this floor (an exact 0 has no place on a log axis)
ERROR_FLOOR = 1e-17
ERRORS = ("grad_error_converged", "grad_error_k_step")

#: hand-picked so that every strategy differs in colour *and* marker; related strategies
#: share a hue family (forward: browns, checkpointing: blues, IFT: warm/green/pink)
STYLE = {
    "unrolled": ("#000000", "o"),
    "forward": ("#8c564b", "v"),
    "forward-batched": ("#c49c94", "^"),
    "checkpoint-sqrt": ("#1f77b4", "s"),
    "checkpoint-binomial": ("#6baed6", "D"),
    "reversible": ("#9467bd", "P"),
    "truncated": ("#7f7f7f", "X"),
    "ift-direct": ("#d62728", "*"),
    "ift-cg": ("#2ca02c", "h"),
    "ift-gmres": ("#ff7f0e", "<"),
    "ift-neumann": ("#bcbd22", ">"),
    "ift-jfb": ("#e377c2", "p"),
    # peer rows: a shade of the colour of the strategy of ours each corresponds to
    "jaxopt-cg": ("#98df8a", "d"),
    "jaxopt-gmres": ("#ffbb78", "8"),
    "jaxopt-lu": ("#ff9896", "H"),
    "optimistix-cg": ("#00441b", "x"),
    "optimistix-gmres": ("#a63603", "+"),
    "optimistix-lu": ("#67000d", "1"),
    "optimistix-checkpoint": ("#08306b", "2"),
    "torchopt-cg": ("#74c476", "3"),
    "torchopt-unrolled": ("#525252", "4"),
    "qpth": ("#fc9272", "|"),
}
_SPARE = [("#17becf", "d"), ("#393b79", "8"), ("#637939", "H"), ("#843c39", "1")]
#: the Pareto plot's marker of each framework, by its place in the registry's order
FRAMEWORK_MARKERS = ("o", "s", "^", "v", "D")


@dataclass
class Figure:
    """An SVG and the points it shows (``data``: one row per drawn point; ``left_out``: the
    records a figure could not place, where it says so in its caption)."""

    svg: str | None
    data: pd.DataFrame
    left_out: pd.DataFrame = field(default_factory=pd.DataFrame)


def strategy_style(backend: str) -> tuple[str, str]:
    """(colour, marker) of a strategy: fixed, identical in every figure."""
    if backend in STYLE:
        return STYLE[backend]
    return _SPARE[sum(map(ord, backend)) % len(_SPARE)]


def strategy_palette(names: list[str] | None = None) -> dict[str, str]:
    """One colour per strategy (kept for callers that colour by strategy only)."""
    import backends

    return {n: strategy_style(n)[0] for n in [*backends.registry(), *(names or [])]}


def framework_marker(framework: str) -> str:
    """The Pareto plot's marker of a framework ("o" for one the registry does not know)."""
    rank = framework_rank(framework)
    return FRAMEWORK_MARKERS[rank] if rank < min(len(framework_registry()),
                                                 len(FRAMEWORK_MARKERS)) else "o"


def _order_key(backend: str) -> int:
    """The order series are drawn and listed in: ``STYLE``'s, which is the strategy registry's
    for our strategies and, for peer rows, groups each library's rows as ``STYLE`` lists them
    (the registry lists peers by name); unknown strategies last."""
    order = list(STYLE)
    return order.index(backend) if backend in order else len(order)


def _svg(fig: plt.Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def series_label(backend: str, strategy_options: str = "") -> str:
    return backend + (f" ({strategy_options})" if strategy_options else "")


# --------------------------------------------------------------------------- ticks
def binary_ticks(lo: float, hi: float, most: int = 7) -> list[float]:
    """Powers of two from below ``lo`` to above ``hi``, every 2^s-th so at most ``most`` fit;
    the stride is rounded up to 1, 2, 5, 10 or 20 so that labels repeat across KiB and MiB."""
    e0, e1 = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    span = max(e1 - e0, 1)
    stride = max(1, math.ceil(span / (most - 1)))
    for nicer in (1, 2, 5, 10, 20):
        if nicer >= stride:
            stride = nicer
            break
    start = e0 - (e0 % stride)
    return [2.0 ** e for e in range(start, e1 + stride, stride) if 2.0 ** e <= hi * 2 ** stride]


def _decade_ticks(lo: float, hi: float) -> list[float]:
    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    ticks = [10.0 ** e for e in range(e0, e1 + 1)]
    if e1 - e0 > 6:  # at most ~6 labels
        step = math.ceil((e1 - e0) / 6)
        ticks = [10.0 ** e for e in range(e0, e1 + 1) if (e - e0) % step == 0]
    inside = [t for t in ticks if lo <= t <= hi]
    if len(inside) < 2:  # less than a decade: 1, 2, 5 steps
        ticks = [m * 10.0 ** e for e in range(e0, e1 + 1) for m in (1, 2, 5)]
    return ticks


def _format_y(ax, metric: str, values: np.ndarray) -> None:
    """Scale and ticks of the metric axis, from the plotted values."""
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    if metric.endswith("bytes"):
        ax.set_yscale("log", base=2)
        ticks = binary_ticks(lo, hi)
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_bytes(v)))
    elif metric == "grad_norm" and hi / lo < 10:
        # a narrow range: linear axis, plain scientific labels distinct enough to read
        pad = (hi - lo) * 0.1 or abs(hi) * 0.01
        ax.set_yscale("linear")
        ax.set_ylim(lo - pad, hi + pad)
        # round ticks (11.1, 11.2, …), labelled in full: no offset, no "×10ⁿ" corner text
        ax.yaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
        return
    else:
        ax.set_yscale("log")
        ticks = _decade_ticks(lo, hi)
        if metric.endswith("_s"):
            labels = {t: format_seconds(t) for t in ticks}
        else:
            labels = {t: f"{t:.0e}".replace("e-0", "e-").replace("e+0", "e") for t in ticks}
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: labels.get(v, "")))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(lo / 1.6, hi * 1.6)


def _format_x(ax, variable: str, values: np.ndarray) -> None:
    """Log x axis ticked at the measured sizes (50, 100, 200 — not 6×10¹)."""
    ax.set_xscale("log")
    measured = sorted(set(float(v) for v in values))
    ax.xaxis.set_major_locator(FixedLocator(measured))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(measured) == 1:
        ax.set_xlim(measured[0] / 2, measured[0] * 2)
    else:
        ax.set_xlim(measured[0] / 1.4, measured[-1] * 1.4)


def _guides(ax, x: np.ndarray, y: np.ndarray, slopes: tuple[float, ...],
            variable: str = "K") -> None:
    """Dotted reference lines of the given log–log slopes through the lowest-left point."""
    if len(x) == 0 or not slopes:
        return
    x0, x1 = float(np.min(x)), float(np.max(x))
    if x1 <= x0:
        return
    y0 = float(np.min(y))
    for slope in slopes:
        xs = np.array([x0, x1])
        ax.plot(xs, y0 * (xs / x0) ** slope, ls=":", color="0.55", lw=1, zorder=0)
        label = {1: f"∝ {variable}", 0.5: f"∝ √{variable}", 2: f"∝ {variable}²"}.get(
            slope, f"slope {slope:g}")
        ax.annotate(label, (x1, y0 * (x1 / x0) ** slope), fontsize=7, color="0.4",
                    xytext=(2, 0), textcoords="offset points", va="center")


# --------------------------------------------------------------------------- series figures
def floor_for(metric: str, values: pd.Series) -> float:
    """Where a value a log axis cannot show is drawn: ``ERROR_FLOOR`` for errors; for bytes and
    other metrics the power of two (or ten) below half the smallest positive value."""
    if "error" in metric:
        return ERROR_FLOOR
    positive = values[values > 0]
    if positive.empty:
        return 1.0
    low = float(positive.min()) / 2
    return 2.0 ** math.floor(math.log2(low)) if metric.endswith("bytes") else \
        10.0 ** math.floor(math.log10(low))


def plot_data(frame: pd.DataFrame, x: str, metrics: tuple[str, ...]) -> pd.DataFrame:
    """The points a series figure draws: one row per (series, x, metric), the median over
    repeated records of one point only. ``at_floor`` marks values drawn at the floor (an exact
    0, or an error below ``ERROR_FLOOR``); ``warned`` marks points whose record carries a
    warning (IFT away from a solution, solver at maxiter, …); missing values (not measured)
    are not drawn."""
    data = frame[frame["status"] == "ok"] if "status" in frame else frame
    warned = (data["warnings"].map(lambda w: isinstance(w, list | tuple) and len(w) > 0)
              if "warnings" in data else pd.Series(False, index=data.index))
    data = data.assign(warned=warned.astype(bool))
    rows = []
    for metric in metrics:
        if metric not in data:
            continue
        values = pd.to_numeric(data[metric], errors="coerce")
        sub = data.assign(value=values)[values.notna()]
        if sub.empty:
            continue
        keys = ["backend", "strategy_options", "framework", x]
        sub = sub.groupby(keys, dropna=False, as_index=False).agg(
            value=("value", "median"), warned=("warned", "any"))
        floor = floor_for(metric, sub["value"])
        sub["metric"] = metric
        sub["floor"] = floor
        sub["at_floor"] = sub["value"] <= (floor if "error" in metric else 0)
        sub["plotted"] = sub["value"].where(~sub["at_floor"], floor)
        sub["label"] = [series_label(b, o) for b, o in
                        zip(sub["backend"], sub["strategy_options"].fillna(""), strict=True)]
        rows.append(sub)
    if not rows:
        return pd.DataFrame(columns=["backend", "strategy_options", "framework", x, "value",
                                     "warned", "metric", "floor", "at_floor", "plotted",
                                     "label"])
    out = pd.concat(rows, ignore_index=True)
    out["_o"] = out["backend"].map(_order_key)
    return out.sort_values(["metric", "_o", "label", "framework", x]).drop(columns="_o") \
        .reset_index(drop=True)


def _floor_caption(metric: str, floor: float) -> str:
    if "error" in metric:
        return f"hollow at {floor:.0e}: error 0 or ≤ {floor:.0e}"
    if metric.endswith("bytes"):
        return f"hollow at {format_bytes(floor)}: exactly 0 B"
    return f"hollow at {floor:g}: exactly 0"


def series_figure(frame: pd.DataFrame, x: str, metrics: tuple[str, ...], *, title: str = "",
                  guides: tuple[float, ...] = ()) -> Figure:
    """One row of panels per metric, one column per framework: each metric against ``x``
    (log–log), a line per (strategy, strategy options). A series measured at one x only is a
    lone marker. Values at the floor are hollow markers on a dashed floor line."""
    data = plot_data(frame, x, metrics)
    if data.empty:
        return Figure(None, data)
    frameworks = sorted_frameworks(data["framework"])
    shown = [m for m in metrics if m in set(data["metric"])]
    plt.rcdefaults()
    fig, axes = plt.subplots(len(shown), len(frameworks),
                             figsize=(5.4 * len(frameworks), 3.7 * len(shown)), squeeze=False,
                             sharey="row")
    labels = data.drop_duplicates("label")[["label", "backend"]]
    for r, metric in enumerate(shown):
        mdata = data[data["metric"] == metric]
        for c, framework in enumerate(frameworks):
            ax = axes[r, c]
            sub = mdata[mdata["framework"] == framework]
            for label, line in sub.groupby("label", sort=False):
                colour, marker = strategy_style(line["backend"].iloc[0])
                line = line.sort_values(x)
                ax.plot(line[x], line["plotted"], color=colour, marker=marker, lw=1.5, ms=6,
                        label=label, markerfacecolor=colour)
                low = line[line["at_floor"]]
                if len(low):  # redraw floor points hollow, over the filled marker
                    ax.plot(low[x], low["plotted"], ls="none", marker=marker, ms=8,
                            markerfacecolor="white", markeredgecolor=colour, mew=1.5)
                flagged = line[line["warned"]]
                if len(flagged):  # a ring: the number stands, but read the warning first
                    ax.plot(flagged[x], flagged["plotted"], ls="none", marker="o", ms=13,
                            markerfacecolor="none", markeredgecolor=WARNING_COLOUR, mew=1.2)
            if mdata["at_floor"].any():
                floor = float(mdata["floor"].iloc[0])
                ax.axhline(floor, ls="--", lw=0.8, color="0.6", zorder=0)
                ax.annotate(_floor_caption(metric, floor), (0.01, floor),
                            xycoords=("axes fraction", "data"), fontsize=7, color="0.35",
                            xytext=(0, 3), textcoords="offset points")
            _format_x(ax, x, mdata[x].to_numpy())
            ax.set_title(f"{framework}" + (f" — {title}" if title and r == 0 else ""),
                         fontsize=10)
            ax.set_xlabel(LABELS.get(x, x))
            ax.set_ylabel(LABELS.get(metric, metric) if c == 0 else "")
            ax.grid(True, which="major", color="0.9")
            lines = sub[~sub["at_floor"]]
            if guides and len(lines):
                _guides(ax, lines[x].to_numpy(float), lines["plotted"].to_numpy(float),
                        guides, x)
        _format_y(axes[r, 0], metric, mdata["plotted"].to_numpy(float))
    _strategy_legend(fig, labels, data)
    return Figure(_svg(fig), data)


def _strategy_legend(fig: Any, labels: pd.DataFrame, data: pd.DataFrame,
                     extra: tuple[Any, ...] = ()) -> None:
    """The legend beside a figure's panels: one entry per strategy (``labels``: label,
    backend), then ``extra`` handles, the floor marker and the warning ring where ``data``
    has such points; then the layout is tightened."""
    handles = [Line2D([], [], color=strategy_style(b)[0], marker=strategy_style(b)[1], lw=1.5,
                      ms=6, label=lab) for lab, b in labels.itertuples(index=False)]
    handles += list(extra)
    if data["at_floor"].any():
        handles.append(Line2D([], [], color="0.4", marker="o", ls="none", ms=7,
                              markerfacecolor="white", label="at the floor (see panel)"))
    if data["warned"].any():
        handles.append(Line2D([], [], ls="none", marker="o", ms=11, markerfacecolor="none",
                              markeredgecolor=WARNING_COLOUR, mew=1.2,
                              label="record has a warning (see Warnings)"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small",
               frameon=False, title="strategy")
    fig.tight_layout()


# --------------------------------------------------------------------------- Pareto
def _spread_labels(targets: list[float], gap: float, lo: float = 0.0,
                   hi: float = 1.0) -> list[float]:
    """Label positions (axes fraction) as close as possible to ``targets`` (sorted ascending)
    yet at least ``gap`` apart and inside [lo, hi]: push up, then pull back down from the top."""
    pos = []
    for t in targets:
        pos.append(max(t, lo, pos[-1] + gap if pos else lo))
    overflow = pos[-1] - hi if pos else 0
    if overflow > 0:
        for i in range(len(pos) - 1, -1, -1):
            limit = hi if i == len(pos) - 1 else pos[i + 1] - gap
            pos[i] = min(pos[i], limit)
    return pos


def error_sizes(errors: pd.Series) -> tuple[pd.Series, list[tuple[float, float]]]:
    """Marker area (pt²) from log10 of the error, clipped to the floor, and 3–4 legend entries
    (error, area) at whole decades."""
    log_err = np.log10(errors.clip(lower=ERROR_FLOOR).astype(float))
    lo, hi = float(log_err.min()), float(log_err.max())
    span = max(hi - lo, 1e-9)

    def area(v: float) -> float:
        return 30 + 270 * (v - lo) / span

    decades = sorted(set(np.linspace(math.floor(lo), math.ceil(hi), 4).round().astype(int)))
    legend = [(10.0 ** d, max(area(min(max(d, lo), hi)), 10.0)) for d in decades]
    return log_err.map(area), legend


def pareto_plot(points: pd.DataFrame, title: str = "") -> Figure:
    """Peak memory against time at one (problem, n, options)'s largest K. Colour and marker
    shape name the strategy and framework; area grows with the error against the converged
    gradient (legend of sizes); Pareto points are ringed. Every point is labelled in a column
    beside the axes, joined to its point by a thin line, so labels never overprint."""
    if points.empty:
        return Figure(None, points)
    data = points.copy()
    data["error"] = pd.to_numeric(data["error"], errors="coerce")
    data = data.dropna(subset=["peak_bytes", "time_s", "error"])
    if data.empty:
        return Figure(None, data)
    data["at_floor"] = data["error"] <= ERROR_FLOOR
    data["size"], size_legend = error_sizes(data["error"])
    data["label"] = [f"{series_label(b, o)} · {f}" + (" ★" if p else "") for b, o, f, p in
                     zip(data["backend"], data["strategy_options"].fillna(""),
                         data["framework"], data["pareto"], strict=True)]
    plt.rcdefaults()
    fig, ax = plt.subplots(figsize=(8.0, 5.8))
    for _, row in data.iterrows():
        colour, _ = strategy_style(row["backend"])
        ax.scatter(row["peak_bytes"], row["time_s"], s=row["size"], color=colour, alpha=0.85,
                   marker=framework_marker(row["framework"]),
                   edgecolors="black" if row["pareto"] else "none", linewidths=1.6, zorder=3)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    peaks, times = data["peak_bytes"].to_numpy(float), data["time_s"].to_numpy(float)
    ax.set_xlim(peaks.min() / 1.5, peaks.max() * 1.5)
    ticks = binary_ticks(peaks.min() / 1.5, peaks.max() * 1.5)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_bytes(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    _format_y(ax, "time_s", times)
    ax.grid(True, color="0.9")
    ax.set(xlabel="peak memory", ylabel="time per gradient", title=title)
    # labels: a column right of the axes, ordered as the points are in time
    fig.canvas.draw()
    to_axes = ax.transAxes.inverted()
    pts = [to_axes.transform(ax.transData.transform((p, t))) for p, t in zip(peaks, times,
                                                                          strict=True)]
    order = np.argsort([p[1] for p in pts])
    gap = min(0.06, 1.0 / max(len(data), 1))
    ys = _spread_labels([float(pts[i][1]) for i in order], gap, 0.0, 1.0)
    for i, y in zip(order, ys, strict=True):
        row = data.iloc[i]
        ax.annotate(row["label"], xy=pts[i], xycoords="axes fraction", xytext=(1.04, y),
                    textcoords="axes fraction", fontsize=7, va="center",
                    fontweight="bold" if row["pareto"] else "normal",
                    color="black" if row["pareto"] else "0.3",
                    arrowprops={"arrowstyle": "-", "color": "0.7", "lw": 0.6,
                                "shrinkA": 0, "shrinkB": 3})
    handles = [Line2D([], [], ls="none", marker="o", color="0.5", ms=math.sqrt(a),
                      label=f"error {e:.0e}" + (" (or less)" if e <= ERROR_FLOOR else ""))
               for e, a in size_legend]
    handles += [Line2D([], [], ls="none", marker=framework_marker(f), color="0.5", ms=7, label=f)
                for f in framework_registry() if f in set(data["framework"])]
    handles.append(Line2D([], [], ls="none", marker="o", color="white", markeredgecolor="black",
                          mew=1.6, ms=8, label="Pareto-optimal (★)"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4,
              fontsize=7, frameon=False, title="marker area: error vs converged gradient",
              title_fontsize=7)
    fig.tight_layout()
    return Figure(_svg(fig), data)


# --------------------------------------------------------------------------- time split
def time_split_plot(points: pd.DataFrame, title: str = "") -> Figure:
    """Where the time of one gradient goes, at one point per (strategy, framework): the share
    of the forward solve (``forward_time_s`` / ``time_s``) and of the rest (the backward pass),
    as 100 % bars, each labelled with its total time. A forward solve timed alone that takes
    longer than the whole gradient (JAX at small K: dispatch) is drawn hatched at 100 %."""
    data = points.copy()
    for col in ("time_s", "forward_time_s"):
        data[col] = pd.to_numeric(data[col], errors="coerce")
    data = data.dropna(subset=["time_s", "forward_time_s"])
    if data.empty:
        return Figure(None, data)
    data = data.groupby(["backend", "strategy_options", "framework"], dropna=False,
                        as_index=False)[["time_s", "forward_time_s"]].median()
    data["forward_share"] = (data["forward_time_s"] / data["time_s"]).clip(upper=1.0)
    data["forward_exceeds"] = data["forward_time_s"] > data["time_s"]
    data["label"] = [f"{series_label(b, o)} · {f}" for b, o, f in
                     zip(data["backend"], data["strategy_options"].fillna(""),
                         data["framework"], strict=True)]
    data["_o"] = data["backend"].map(_order_key)
    data = data.sort_values(["_o", "label"], ascending=False).drop(columns="_o") \
        .reset_index(drop=True)
    plt.rcdefaults()
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.26 * len(data)))
    ys = np.arange(len(data))
    colours = [strategy_style(b)[0] for b in data["backend"]]
    ax.barh(ys, data["forward_share"], color=colours, edgecolor="0.3",
            hatch=["//" if e else "" for e in data["forward_exceeds"]], height=0.7,
            label="forward solve")
    ax.barh(ys, 1 - data["forward_share"], left=data["forward_share"], color="white",
            edgecolor="0.3", height=0.7, label="backward (time − forward)")
    for y, total in zip(ys, data["time_s"], strict=True):
        ax.annotate(format_seconds(total), (1.0, y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7)
    ax.set_yticks(ys, data["label"], fontsize=7)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f} %"))
    ax.set_xlabel("share of the gradient's time (total at the right)")
    ax.set_title(title, pad=24)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor="0.6", edgecolor="0.3",
                             label="forward solve (strategy colour)"),
               plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="0.3",
                             label="backward = time − forward")]
    if data["forward_exceeds"].any():
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="0.3",
                                     hatch="//", label="forward alone ≥ total"))
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3,
              fontsize=7, frameon=False)
    fig.tight_layout()
    return Figure(_svg(fig), data)


# --------------------------------------------------------------------------- error vs residual
#: the x of the residual figure: ‖F(θ, x_K)‖ of our forward at the record's K
RESIDUAL = "inner_residual"
RESIDUAL_ERROR = "grad_error_converged"


def _finite(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce").replace([np.inf, -np.inf], np.nan)


def residual_data(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The points of the residual figure and the ok records it leaves out.

    Points: one row per (strategy, strategy options, framework, K), the medians of
    ``inner_residual`` and ``grad_error_converged`` over repeated records of that point, sorted
    as every figure's series are and by K within a series. An error at or below ``ERROR_FLOOR``
    (an exact 0 included) is drawn at that floor, a residual of exactly 0 at ``floor_for``'s,
    both flagged ``at_floor``. Left out (``reason``): records without a finite residual (a
    strategy that runs its own solver records none) or without an error vs converged."""
    data = frame[frame["status"] == "ok"] if "status" in frame else frame
    if data.empty:
        return pd.DataFrame(), pd.DataFrame()
    residual = _finite(data[RESIDUAL]) if RESIDUAL in data else pd.Series(np.nan, data.index)
    error = _finite(data[RESIDUAL_ERROR]) if RESIDUAL_ERROR in data else \
        pd.Series(np.nan, data.index)
    warned = (data["warnings"].map(lambda w: isinstance(w, list | tuple) and len(w) > 0)
              if "warnings" in data else pd.Series(False, index=data.index))
    data = data.assign(residual=residual, error=error, warned=warned.astype(bool))
    if "strategy_options" not in data:
        data["strategy_options"] = ""
    data["strategy_options"] = data["strategy_options"].fillna("")
    reason = np.where(data["residual"].isna(), "no residual",
                      np.where(data["error"].isna(), "no error vs converged", ""))
    left_out = data.assign(reason=reason)[reason != ""]
    keep = data[reason == ""]
    keys = ["backend", "strategy_options", "framework", "K"]
    points = keep.groupby(keys, as_index=False).agg(
        residual=("residual", "median"), error=("error", "median"), warned=("warned", "any"),
        records=("residual", "size"))
    if points.empty:
        return points, left_out
    x_floor = floor_for(RESIDUAL, points["residual"])
    points["x_at_floor"] = points["residual"] <= 0
    points["y_at_floor"] = points["error"] <= ERROR_FLOOR
    points["at_floor"] = points["x_at_floor"] | points["y_at_floor"]
    points["x"] = points["residual"].where(~points["x_at_floor"], x_floor)
    points["y"] = points["error"].where(~points["y_at_floor"], ERROR_FLOOR)
    points["x_floor"] = x_floor
    points["label"] = [series_label(b, o) for b, o in
                       zip(points["backend"], points["strategy_options"], strict=True)]
    points["_o"] = points["backend"].map(_order_key)
    points = points.sort_values(["_o", "label", "framework", "K"]).drop(columns="_o")
    return points.reset_index(drop=True), left_out


def _format_log_x(ax, values: np.ndarray) -> None:
    """A log x axis over ``values`` with decade ticks labelled 1e-3 (not 10⁻³)."""
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    ax.set_xscale("log")
    ticks = _decade_ticks(lo, hi)
    labels = {t: f"{t:.0e}".replace("e-0", "e-").replace("e+0", "e") for t in ticks}
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: labels.get(v, "")))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(lo / 3, hi * 3)


def residual_figure(frame: pd.DataFrame, *, title: str = "") -> Figure:
    """Gradient error vs the converged gradient against the forward residual ‖F(θ, x_K)‖,
    log–log, one panel per framework, one line per (strategy, strategy options) through its
    points in K order (a series with one point is a lone marker). Points at a floor are hollow
    on a dashed floor line; points whose record carries a warning are ringed; a dotted guide
    shows error ∝ ‖F‖ (slope 1). ``data`` holds the drawn points, ``left_out`` the ok records
    without a residual or an error (``residual_data``)."""
    data, left_out = residual_data(frame)
    if data.empty:
        return Figure(None, data, left_out)
    frameworks = sorted_frameworks(data["framework"])
    plt.rcdefaults()
    fig, axes = plt.subplots(1, len(frameworks), figsize=(5.4 * len(frameworks), 4.8),
                             squeeze=False, sharex=True, sharey=True)
    labels = data.drop_duplicates("label")[["label", "backend"]]
    for c, framework in enumerate(frameworks):
        ax = axes[0, c]
        sub = data[data["framework"] == framework]
        for label, line in sub.groupby("label", sort=False):
            colour, marker = strategy_style(line["backend"].iloc[0])
            line = line.sort_values("K")
            ax.plot(line["x"], line["y"], color=colour, marker=marker, lw=1.5, ms=6,
                    label=label, markerfacecolor=colour, alpha=0.85)
            low = line[line["at_floor"]]
            if len(low):
                ax.plot(low["x"], low["y"], ls="none", marker=marker, ms=8,
                        markerfacecolor="white", markeredgecolor=colour, mew=1.5)
            flagged = line[line["warned"]]
            if len(flagged):
                ax.plot(flagged["x"], flagged["y"], ls="none", marker="o", ms=13,
                        markerfacecolor="none", markeredgecolor=WARNING_COLOUR, mew=1.2)
        if data["y_at_floor"].any():
            ax.axhline(ERROR_FLOOR, ls="--", lw=0.8, color="0.6", zorder=0)
            ax.annotate(_floor_caption(RESIDUAL_ERROR, ERROR_FLOOR), (0.01, ERROR_FLOOR),
                        xycoords=("axes fraction", "data"), fontsize=7, color="0.35",
                        xytext=(0, 3), textcoords="offset points")
        if data["x_at_floor"].any():
            x_floor = float(data["x_floor"].iloc[0])
            ax.axvline(x_floor, ls="--", lw=0.8, color="0.6", zorder=0)
        ax.set_title(framework + (f" — {title}" if title else ""), fontsize=10)
        ax.set_xlabel(LABELS[RESIDUAL] + " — larger K to the left")
        ax.set_ylabel(LABELS[RESIDUAL_ERROR] if c == 0 else "")
        ax.grid(True, which="major", color="0.9")
    _format_log_x(axes[0, 0], data["x"].to_numpy(float))
    _format_y(axes[0, 0], RESIDUAL_ERROR, data["y"].to_numpy(float))
    lo, hi = axes[0, 0].get_ylim()
    axes[0, 0].set_ylim(lo / 2, hi * 2.5)  # room for the rings around the extreme points
    clear = data[~data["at_floor"]]
    if len(clear):
        _slope_one_guide(axes[0, :], clear["x"].to_numpy(float), clear["y"].to_numpy(float))
    _strategy_legend(fig, labels, data, extra=(
        Line2D([], [], ls=":", color="0.55", lw=1, label="error ∝ ‖F‖ (slope 1)"),))
    return Figure(_svg(fig), data, left_out)


def _slope_one_guide(axes, x: np.ndarray, y: np.ndarray) -> None:
    """A dotted line error = c·‖F‖ through the point of largest residual with the largest
    error there, drawn in every panel (it only guides the eye: the slope is the message)."""
    x1 = float(x.max())
    y1 = float(y[x == x1].max())
    for ax in axes:
        lo = ax.get_xlim()[0]
        xs = np.array([lo, x1])
        ax.plot(xs, y1 * xs / x1, ls=":", color="0.55", lw=1, zorder=0)
