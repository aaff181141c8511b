"""Seaborn figures for the report, returned as self-contained SVG strings."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from reports.units import format_bytes, format_seconds  # noqa: E402


def strategy_palette(names: list[str]) -> dict[str, tuple]:
    """One colour per strategy, fixed by the registry order, identical in every figure."""
    import backends

    order = list(backends.registry())
    colours = sns.color_palette("tab10") + sns.color_palette("Dark2")
    palette = {name: colours[i % len(colours)] for i, name in enumerate(order)}
    extra = [n for n in names if n not in palette]
    for i, name in enumerate(extra):
        palette[name] = sns.color_palette("dark", n_colors=len(extra))[i]
    return palette


def _svg(fig: plt.Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def metric_vs_K(frame: pd.DataFrame, metric: str, ylabel: str) -> str | None:
    """log–log ``metric`` against K, one line per strategy, dashed for JAX, one panel per
    (problem, n)."""
    data = frame[(frame["status"] == "ok") & frame[metric].notna()].copy()
    data = data[data[metric] > 0]
    if data.empty:
        return None
    data["panel"] = data["problem"] + ", n=" + data["n"].astype(str) + ", " + data["dtype"]
    panels = sorted(data["panel"].unique())
    sns.set_theme(style="whitegrid", context="notebook")
    cols = min(len(panels), 2)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.2 * rows), squeeze=False)
    palette = strategy_palette(sorted(data["backend"].unique()))
    hue_order = [b for b in palette if b in set(data["backend"])]
    style_order = [f for f in ("torch", "jax") if f in set(data["framework"])]
    is_bytes = metric.endswith("bytes")
    for i, (ax, panel) in enumerate(zip(axes.flat, panels, strict=False)):
        sub = data[data["panel"] == panel].sort_values("K")
        sns.lineplot(data=sub, x="K", y=metric, hue="backend", hue_order=hue_order,
                     style="framework", style_order=style_order, markers=True,
                     dashes={"torch": "", "jax": (4, 2)}, palette=palette, ax=ax,
                     errorbar=None, legend=(i == 0))
        ax.set_xscale("log")
        # bytes on binary ticks (64 KiB, 256 KiB, 1 MiB …), seconds on decades
        ax.set_yscale("log", base=2 if is_bytes else 10)
        ax.set(title=panel, xlabel="K (inner iterations)", ylabel=ylabel)
        if is_bytes:
            ax.yaxis.set_major_locator(LogLocator(base=2, numticks=8))
        formatter = format_bytes if is_bytes else format_seconds
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _, fmt=formatter: fmt(v)))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    if panels:
        axes.flat[0].legend(fontsize="small", frameon=True, loc="upper left",
                            bbox_to_anchor=(1.02, 1.0) if cols == 1 else (0.0, -0.18),
                            ncol=1 if cols == 1 else 4)
    for ax in list(axes.flat)[len(panels):]:
        ax.remove()
    fig.tight_layout()
    return _svg(fig)
