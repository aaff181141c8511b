"""One module per strategy family; each defines :class:`backends.base.Strategy` subclasses.

Adding a strategy is adding a module here (or a class to its family's module), and adding a peer
library's rows is adding a module to ``backends/peers/``: :func:`registry` discovers both.
Strategy modules import no framework (and no peer library) at import time.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache

from backends.base import Strategy


@cache
def registry() -> dict[str, Strategy]:
    found: dict[str, Strategy] = {}
    modules = [f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__)
               if not info.ispkg and not info.name.startswith("_")
               and info.name not in {"base", "linear_solvers"}]
    from backends import peers

    modules += [f"{peers.__name__}.{info.name}" for info in pkgutil.iter_modules(peers.__path__)
                if not info.name.startswith("_") and info.name != "base"]
    for module_name in modules:
        module = importlib.import_module(module_name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, Strategy) and not inspect.isabstract(cls)
                    and cls.__module__ == module.__name__ and "name" in cls.__dict__):
                if cls.name in found:
                    raise RuntimeError(f"two strategies named {cls.name!r}")
                found[cls.name] = cls()
    # ours in _ORDER's order, then the peer rows by name
    return dict(sorted(found.items(), key=lambda kv: (_ORDER.get(kv[0], len(_ORDER)), kv[0])))


# The order tables and figures list strategies in: exact ones first, then the IFT family.
_ORDER = {name: i for i, name in enumerate([
    "unrolled", "forward", "forward-batched", "checkpoint-sqrt", "checkpoint-binomial",
    "reversible", "truncated", "ift-direct", "ift-cg", "ift-gmres", "ift-neumann",
    "ift-jfb",
])}
