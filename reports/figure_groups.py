"""The figure groups of the report: which records one figure of a problem section plots.

A K figure holds n fixed and plots every series measured at two or more values of K there; an n
figure holds K fixed. A group is keyed by (problem, problem options, dtype, device, seed, held
size) and keeps *all* the ok records of that key, single points included.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from suite.analysis import GROUP_KEYS, ok_rows


@dataclass(frozen=True)
class FigureGroup:
    """The records of one figure: every series of one problem, problem options, dtype, device
    and seed at one value of the held size (``held`` = "n" for K figures, "K" for n figures)."""

    variable: str
    held: str
    value: float
    keys: tuple[tuple[str, object], ...]
    frame: pd.DataFrame

    @property
    def problem(self) -> str:
        return str(dict(self.keys)["problem"])

    def slug(self) -> str:
        info = dict(self.keys)
        parts = [info["problem"], f"{self.held}{self.value:g}", info["problem_options"],
                 info["dtype"]]
        raw = "-".join(str(p) for p in parts if p)
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in raw).strip("-_")


def figure_groups(frame: pd.DataFrame, variable: str = "K") -> list[FigureGroup]:
    """Every (problem, problem options, dtype, device, seed, held size) in which at least one
    series is measured at ≥ 2 values of ``variable``, with *all* its ok records — every
    (strategy, framework) measured there, single points included."""
    held = "n" if variable == "K" else "K"
    data = ok_rows(frame)
    out = []
    for key, group in data.groupby(GROUP_KEYS + [held], dropna=False, sort=True):
        swept = group.groupby(["backend", "framework", "strategy_options"])[variable].nunique()
        if swept.max() < 2:
            continue
        out.append(FigureGroup(variable, held, float(key[-1]),
                               tuple(zip(GROUP_KEYS, key[:-1], strict=True)), group))
    return out


def _drawable(frame: pd.DataFrame) -> pd.DataFrame:
    """Records with both a finite forward residual and a finite error vs converged."""
    finite = pd.Series(True, index=frame.index)
    for col in ("inner_residual", "grad_error_converged"):
        values = pd.to_numeric(frame[col], errors="coerce") if col in frame else \
            pd.Series(float("nan"), index=frame.index)
        finite &= values.notna() & values.abs().ne(float("inf"))
    return frame[finite]


def residual_groups(frame: pd.DataFrame) -> list[tuple[FigureGroup, list[float]]]:
    """The records of the error-against-residual figures: one per (problem, problem options,
    dtype, device, seed) in which some series has a residual and an error at ≥ 2 values of K,
    at a single n — the n whose such records span the widest ratio of K (ties: more of them,
    then the larger n) — with *all* the ok records at that n (also those without a residual,
    which the figure counts). Each comes with the other n of its key that have records to draw
    and are not shown."""
    data = ok_rows(frame)
    out = []
    for key, group in data.groupby(GROUP_KEYS, dropna=False, sort=True):
        ranked = []
        for n, at_n in group.groupby("n", sort=True):
            drawable = _drawable(at_n)
            if drawable.empty:
                continue
            swept = drawable.groupby(["backend", "framework", "strategy_options"])["K"].nunique()
            span = drawable["K"].max() / drawable["K"].min() if swept.max() >= 2 else 0.0
            ranked.append((span, len(drawable), float(n), at_n))
        if not ranked or max(r[0] for r in ranked) == 0:
            continue
        best = max(ranked, key=lambda r: r[:3])
        others = sorted(r[2] for r in ranked if r[2] != best[2])
        out.append((FigureGroup("inner_residual", "n", best[2],
                                tuple(zip(GROUP_KEYS, key, strict=True)), best[3]), others))
    return out
