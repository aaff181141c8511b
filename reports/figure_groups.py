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
