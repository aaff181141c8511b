"""What a peer row is: a strategy whose gradient comes from another library.

A peer row declares the library it measures, the strategy of ours it corresponds to (the report
sets the two side by side), the frameworks and problems it fits, and whether it runs our K-step
forward (``custom_root``, ``fixed_point(max_steps=K)``: the same x_K as ours) or its own solver
to convergence (``converged_only``: K is then only a budget its solver may not use). A library
that does not import makes its rows ``unsupported`` with the import error as the reason.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from functools import cache
from typing import ClassVar

from backends.base import Strategy

#: in CI every peer library must import: a missing one fails the tests instead of skipping rows
REQUIRE_PEERS_ENV = "IFT_BENCH_REQUIRE_PEERS"


@cache
def import_error(module: str) -> str | None:
    """Why ``module`` cannot be imported (type and message of the exception), None if it can."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 — any import failure makes the rows unsupported
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return None


class PeerStrategy(Strategy):
    #: the modules the row imports (all must import for the row to be supported)
    modules: ClassVar[tuple[str, ...]]
    #: the distribution whose version is recorded as ``peer`` (``"jaxopt 0.8.5"``)
    distribution: ClassVar[str]
    #: the strategy of ours this row corresponds to (its reference kind is ours too)
    corresponds_to: ClassVar[str]
    #: frameworks the library runs in
    frameworks: ClassVar[tuple[str, ...]]
    #: problems the row fits (None: every problem where ``corresponds_to`` applies)
    problems: ClassVar[tuple[str, ...] | None] = None
    #: the library runs its own solver to convergence rather than our K-step forward
    converged_only: ClassVar[bool] = False
    #: exact counts: none unless the row can count them honestly
    counts: ClassVar[tuple[str, ...]] = ()

    def peer_label(self) -> str | None:
        try:
            return f"{self.distribution} {importlib.metadata.version(self.distribution)}"
        except importlib.metadata.PackageNotFoundError:
            return self.distribution

    def library_reason(self) -> str | None:
        """Why the library cannot be used here (it does not import), None when it can."""
        for module in self.modules:
            reason = import_error(module)
            if reason is not None:
                if os.environ.get(REQUIRE_PEERS_ENV) == "1":
                    raise RuntimeError(f"{REQUIRE_PEERS_ENV}=1 but {module} does not import: "
                                       f"{reason}")
                return f"{self.distribution} is not importable ({reason})"
        return None

    def unsupported_reason(self, problem, framework):
        if framework not in self.frameworks:
            return f"{self.name} is a {' / '.join(self.frameworks)} library"
        if self.problems is not None and problem.name not in self.problems:
            return f"{self.name} fits {', '.join(self.problems)} only"
        from backends import registry

        ours = registry()[self.corresponds_to].unsupported_reason(problem, framework)
        if ours is not None:
            return ours
        return self.library_reason()
