"""Typed options that problems and strategies declare, parsed from ``key=value`` or TOML values.

A point's ``options`` mapping is shared by its problem and its strategy: every key must be
declared by one of them. Values are parsed and range-checked here so that a typo fails before any
subprocess starts, with the option named and its allowed values listed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from suite.plugin.errors import UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Option:
    """One named option. ``default=None`` means "chosen by the owner from K, n or dtype"."""

    name: str
    kind: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    exclusive_minimum: bool = False

    def describe_allowed(self) -> str:
        if self.choices is not None:
            return ", ".join(map(str, self.choices))
        lo = "" if self.minimum is None else (
            f"{'>' if self.exclusive_minimum else '>='} {self.minimum}")
        hi = "" if self.maximum is None else f"<= {self.maximum}"
        bound = " and ".join(b for b in (lo, hi) if b)
        kind = "finite float" if self.kind is float and not bound else self.kind.__name__
        return f"{kind}{' ' + bound if bound else ''}"

    def parse(self, raw: Any) -> Any:
        field = f"option {self.name!r}"
        try:
            value = _coerce(self.kind, raw)
        except (TypeError, ValueError):
            raise UsageError(field, f"cannot read {raw!r} as {self.kind.__name__}",
                             self.describe_allowed()) from None
        if isinstance(value, float) and not math.isfinite(value):
            # NaN passes every comparison below and would be measured (grad error NaN)
            raise UsageError(field, f"{raw!r} is not finite", self.describe_allowed())
        if self.choices is not None and value not in self.choices:
            raise UsageError(field, f"{value!r} is not a valid choice", self.choices)
        if self.minimum is not None and (
            value < self.minimum or (self.exclusive_minimum and value == self.minimum)
        ):
            raise UsageError(field, f"{value!r} is out of range", self.describe_allowed())
        if self.maximum is not None and value > self.maximum:
            raise UsageError(field, f"{value!r} is out of range", self.describe_allowed())
        return value


def _coerce(kind: type, raw: Any) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(raw)
    if kind is int:
        if isinstance(raw, bool):
            raise ValueError(raw)
        if isinstance(raw, float):
            if not raw.is_integer():
                raise ValueError(raw)
            return int(raw)
        return int(str(raw).strip())
    if kind is float:
        if isinstance(raw, bool):
            raise ValueError(raw)
        return float(str(raw).strip()) if isinstance(raw, str) else float(raw)
    return kind(raw)


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["k=3", "tol=1e-8"]`` → ``{"k": "3", "tol": "1e-8"}`` (values still raw strings)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise UsageError("--option", f"malformed {item!r}", "name=value")
        if key in out:
            raise UsageError("--option", f"{key!r} given twice")
        out[key] = value.strip()
    return out


def resolve(declared: Iterable[Option], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Parse ``given`` against ``declared``; unknown keys name what is allowed for ``owner``."""
    table = {o.name: o for o in declared}
    unknown = sorted(set(given) - set(table))
    if unknown:
        allowed = sorted(table) or ["(none)"]
        raise UsageError(f"option {unknown[0]!r}", f"not an option of {owner}", allowed)
    return {name: (opt.parse(given[name]) if name in given else opt.default)
            for name, opt in table.items()}
