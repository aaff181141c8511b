"""What a peer row is: a strategy whose gradient comes from another library.

A peer row declares the library it measures, the strategy of ours it corresponds to (the report
sets the two side by side), the frameworks and problems it fits, and whether it runs our K-step
forward (``custom_root``, ``fixed_point(max_steps=K)``: the same x_K as ours) or its own solver
to convergence (``converged_only``: K is then only a budget its solver may not use). A library
that does not import makes its rows ``unsupported`` with the import error as the reason; with
``IFT_BENCH_REQUIRE_PEERS=1`` (CI) it raises instead, so a missing peer fails the tests.

Rows inherit the reference kind and the theory bands of the strategy they correspond to unless
they declare their own: a peer is measured against the same float64 reference as ours, and the
analysis fits it against the same law. They take their counterpart's options too (its solver's,
for an ``ift-*`` counterpart: ``tol``, ``maxiter``, ``restart``; ``snapshots``), with the same
types, defaults and ranges, each in the row's own words (``option_help``), unless they declare
options of their own (qpth). Their diagnostics add ‖g_ours − g_peer‖/‖g_peer‖
(``grad_rel_diff_ours``) to their counterpart's checks.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import replace
from functools import cache
from typing import Any, ClassVar

import numpy as np

from backends.base import Run, Strategy, Theory
from suite.plugin.options import Option

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
    #: the help text of each option taken from ``corresponds_to`` as this row describes it (how
    #: its library reads the value); an option not named here keeps ours
    option_help: ClassVar[dict[str, str]] = {}
    #: where ours does not lead this row (time or peak ratio ≥ 1), the measured cause: the
    #: report's peers table prints it beside such a row
    parity_note: ClassVar[str | None] = None

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

    # the counterpart's options (a row with options of its own declares ``options`` instead)
    @property
    def options(self) -> tuple[Option, ...]:  # type: ignore[override]
        return tuple(replace(o, help=self.option_help.get(o.name, o.help))
                     for o in self._ours().options)

    def resolve_defaults(self, opts, K, dtype, dim_x):
        return self._ours().resolve_defaults(opts, K, dtype, dim_x)

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

    def diagnose(self, run: Run) -> None:
        difference = self.counterpart_difference(run)  # beside ours, untimed
        if difference is not None:
            run.diagnostics["grad_rel_diff_ours"] = difference
        super().diagnose(run)

    def counterpart_difference(self, run: Run) -> float | None:
        """‖g_ours − g_peer‖/‖g_peer‖: our corresponding strategy's gradient on the same
        instance, with the same problem options and the options both declare (tolerances,
        snapshots), computed untimed by the harness. Records keep no gradients, so the report's
        peers table reads this instead. None where ours does not run with these options."""
        prep = run.prepared
        declared = {o.name for o in prep.problem.options} | {o.name for o in self._ours().options}
        g_ours = run.gradient_of(self.corresponds_to, {k: v for k, v in prep.point.options.items()
                                                       if k in declared})
        if g_ours is None:
            return None
        grad = run.gradient
        denom = float(np.linalg.norm(grad))
        diff = float(np.linalg.norm(g_ours - grad))
        return diff / denom if denom > 0 else diff
