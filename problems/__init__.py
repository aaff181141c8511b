"""One module per problem; each defines a :class:`problems.base.Problem` subclass with a ``name``.

Adding a problem is adding a module here: :func:`registry` discovers it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache

from problems.base import Problem


@cache
def registry() -> dict[str, Problem]:
    """Every problem in this package, by name (modules are imported once, lazily)."""
    found: dict[str, Problem] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, Problem) and not inspect.isabstract(cls)
                    and cls.__module__ == module.__name__):
                if cls.name in found:
                    raise RuntimeError(f"two problems named {cls.name!r}")
                found[cls.name] = cls()
    return dict(sorted(found.items()))
