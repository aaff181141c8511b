"""What a peer row is: a strategy whose gradient comes from another library.

A peer row declares the library it measures, the strategy of ours it corresponds to (the report
sets the two side by side), the frameworks and problems it fits, and whether it runs our K-step
forward (``custom_root``, ``fixed_point(max_steps=K)``: the same x_K as ours) or its own solver
to convergence (``converged_only``: K is then only a budget its solver may not use). A library
that does not import makes its rows ``unsupported`` with the import error as the reason; with
``IFT_BENCH_REQUIRE_PEERS=1`` (CI) it raises instead, so a missing peer fails the tests.

Rows inherit the reference kind and the theory bands of the strategy they correspond to unless
they declare their own: a peer is measured against the same float64 reference as ours, and the
analysis fits it against the same law.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from functools import cache
from typing import Any, ClassVar

from backends.base import Strategy, Theory

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


def linear_tolerance(dtype: str) -> float:
    """Our linear solvers' relative-residual tolerance, which every peer's solve is set to
    (``backends.ift``: 1e-10 in float64, 1e-5 in float32)."""
    return 1e-10 if dtype == "float64" else 1e-5


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

    def _ours(self) -> Strategy:
        from backends import registry

        return registry()[self.corresponds_to]

    # the counterpart's reference kind and theory bands, unless the row declares its own
    @property
    def reference(self) -> Any:  # type: ignore[override]
        return self._ours().reference

    @property
    def theory(self) -> Theory:  # type: ignore[override]
        return self._ours().theory

    def counterpart(self) -> str | None:
        return self.corresponds_to

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
        ours = self._ours().unsupported_reason(problem, framework)
        if ours is not None:
            return ours
        return self.library_reason()

    def options_reason(self, problem, problem_options, strategy_options):
        return self._ours().options_reason(problem, problem_options, strategy_options)
