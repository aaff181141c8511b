"""The one order strategies and frameworks are listed in: the registries'.

Strategies in ``backends.registry()``'s order (exact ones first, then the IFT family, then the
peer rows by name), frameworks in ``suite.frameworks.registry()``'s (each adapter declares its
place: torch first). Sweeps, tables and views sort with these; a name neither registry knows
goes last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd

import backends
from suite.frameworks import registry as framework_registry


def strategy_rank(name: str) -> int:
    """Position of strategy ``name`` in the registry (unknown names after every known one)."""
    order = list(backends.registry())
    return order.index(name) if name in order else len(order)


def framework_rank(name: str) -> int:
    """Position of framework ``name`` in the registry (unknown names after every known one)."""
    order = list(framework_registry())
    return order.index(name) if name in order else len(order)


def framework_key(name: str) -> tuple[int, str]:
    """Sort key of a framework name: the registry's order, unknown names by name after it."""
    return framework_rank(name), name


def sorted_frameworks(names: Iterable[str]) -> list[str]:
    """Distinct framework names in the registry's order."""
    return sorted(set(names), key=framework_key)


#: the columns ``sort_rows`` ranks by a registry rather than by value
RANKS: dict[str, Callable[[str], int]] = {"backend": strategy_rank, "ours": strategy_rank,
                                          "framework": framework_rank}


def sort_rows(frame: pd.DataFrame, by: list[str],
              ranked: Iterable[str] = ("backend", "framework")) -> pd.DataFrame:
    """``frame`` sorted (stably) by the columns ``by``, where each column named in ``ranked``
    (a strategy column: ``backend``, ``ours``; or ``framework``) sorts in its registry's order
    and every other column by its values."""
    ranked = [c for c in ranked if c in by]
    temp = {c: f"_rank_{c}" for c in ranked}
    out = frame.assign(**{temp[c]: frame[c].map(RANKS[c]) for c in ranked})
    return out.sort_values([temp.get(c, c) for c in by], kind="stable") \
        .drop(columns=list(temp.values()))
