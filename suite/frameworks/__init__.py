"""Framework adapters, discovered by name: adding a framework is adding one ``*_adapter`` module.

Adapter modules import their framework lazily, so discovery works (and ``list`` can say why)
where a framework is not installed.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache

from suite.plugin.framework import Framework

DTYPES: tuple[str, ...] = ("float64", "float32")
DEVICES: tuple[str, ...] = ("cpu", "cuda")


@cache
def registry() -> dict[str, type[Framework]]:
    found: dict[str, type[Framework]] = {}
    for info in pkgutil.iter_modules(__path__):
        if not info.name.endswith("_adapter"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Framework) and cls.__module__ == module.__name__:
                found[cls.name] = cls
    # the order tables, figures and sweeps list frameworks in: each adapter declares its place
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))
