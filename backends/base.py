"""The strategy protocol: one way of getting dℓ/dθ through an iterative solver.

A strategy receives the framework adapter ``fw`` and a bound problem ``P`` and returns
``(gradient, aux)``; ``aux`` holds solver diagnostics as arrays (``solver_iters``,
``solver_converged``) so that they survive ``jax.jit``. Strategies contain no per-problem code:
anything problem-specific goes through ``P``.

After the meters, the harness hands the strategy what it measured (:class:`Run`) and the
strategy's :meth:`Strategy.diagnose` checks it, untimed: the diagnostics and the warnings the
record carries are the strategy's, the harness only collects them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from problems.base import ReferenceKind
from suite.plugin.options import Option

if TYPE_CHECKING:
    import numpy as np

    from problems.base import Bound, Problem
    from suite.plugin.framework import Framework

#: condition number of ∂F/∂x above which the IFT is flagged as inapplicable (float64)
JACOBIAN_COND_WARNING = 1e12
#: ‖F(θ, x_K)‖ / ‖F(θ, x_0)‖ above which an IFT gradient is flagged as taken off a solution
IFT_RESIDUAL_WARNING = 1e-6


@dataclass(frozen=True)
class Theory:
    """What docs/theory.md predicts for a strategy, as bands of log–log slopes.

    ``memory_K``: exponent of peak memory in K at fixed n; ``memory_n``: in n at fixed K
    (x ∈ ℝⁿ, θ ∈ ℝᵖ with p ∝ n); ``time_K``: exponent of time in K.
    """

    memory_K: tuple[float, float]
    memory_n: tuple[float, float]
    time_K: tuple[float, float]
    memory: str  # the law in words, for the report
    time: str


@dataclass
class Run:
    """One measured point as :meth:`Strategy.diagnose` receives it, everything in numpy.

    ``prepared``: the harness's prepared point (``fw``, ``problem``, ``strategy``, ``instance``,
    ``point``, ``options``, ``residual_0``); ``x``: our forward's x_K; ``gradient``: the
    strategy's dℓ/dθ; ``adjoint``, ``solver_iters``, ``converged``: what its program returned
    (``aux``'s ``adjoint``, ``solver_iters``, ``solver_converged``; None where it returned
    none); ``counts``: the counting pass; ``residual``: ‖F(θ, x_K)‖ (None for a strategy that
    runs its own solver); ``gradient_of(backend, options)``: another strategy's gradient on
    the same instance, computed untimed by the harness (None where it does not run).
    ``diagnose`` adds to ``diagnostics`` (which hold the program's other aux scalars) and
    appends to ``warnings``, in order."""

    prepared: Any
    x: np.ndarray
    gradient: np.ndarray
    adjoint: np.ndarray | None
    solver_iters: int | None
    converged: bool | None
    counts: dict[str, Any]
    residual: float | None
    gradient_of: Callable[[str, dict[str, Any]], np.ndarray | None]
    diagnostics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Strategy(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    #: which float64 reference the gradient is judged against (``grad_rel_error``)
    reference: ClassVar[ReferenceKind]
    options: ClassVar[tuple[Option, ...]] = ()
    theory: ClassVar[Theory]
    #: the exact counts this strategy's schedule defines; the others are recorded as null
    #: (unless the counting pass saw them, which is then reported as it is)
    counts: ClassVar[tuple[str, ...]] = ("step_evals", "vjp_evals")
    #: True when reverse-mode autodiff runs through the solver steps themselves (the counting
    #: pass then counts the VJPs taken through each step)
    reverse_through_steps: ClassVar[bool] = False
    #: True when the gradient reads the K-step forward only through the final state
    #: ``fw.iterate`` returns, and calls it once (no tape through the steps): given that state,
    #: the rest of the gradient is the backward alone, which ``ift-bench pair`` then times
    #: by itself (``suite.program.backward_program``)
    reads_forward_state_only: ClassVar[bool] = False

    def unsupported_reason(self, problem: Problem, framework: str) -> str | None:
        """Why this strategy cannot run on ``problem`` in ``framework`` (None: it can)."""
        return None

    #: True when the strategy runs its own solver to convergence instead of our K-step forward
    #: (a converged-only peer row such as qpth): the record's ``forward_time_s`` and
    #: ``inner_residual``, which describe our forward, are then null
    own_solver: ClassVar[bool] = False

    def peer_label(self) -> str | None:
        """The library (with its version) a peer row measures, e.g. ``"jaxopt 0.8.5"``; None for
        the suite's own strategies. Recorded as ``peer``."""
        return None

    def counterpart(self) -> str | None:
        """The strategy of ours a peer row stands beside: the harness also runs it, untimed, on
        the same instance and records ‖g_ours − g_peer‖/‖g_peer‖ (diagnostic
        ``grad_rel_diff_ours``). None for the suite's own strategies."""
        return None

    def trace_unmeasurable(self, framework: str) -> str | None:
        """Why ``trace_bytes`` cannot be metered honestly for this strategy in ``framework``
        (recorded as ``trace_note``, with ``trace_bytes`` null); None when it can."""
        return None

    def options_reason(
        self, problem: Problem, problem_options: dict[str, Any], strategy_options: dict[str, Any]
    ) -> str | None:
        """Why this strategy cannot run with these options (None: it can)."""
        return None

    def resolve_defaults(
        self, opts: dict[str, Any], K: int, dtype: str, dim_x: int
    ) -> dict[str, Any]:
        """Fill options whose default depends on K, the dtype or the size (``default=None``)."""
        return opts

    def diagnose(self, run: Run) -> None:
        """Untimed checks of a measured point: add diagnostics to ``run.diagnostics`` and
        warnings, in order, to ``run.warnings``. This one checks the solver's statistics the
        program returned and, for a strategy judged against the converged reference, that the
        IFT applies at x_K; a strategy with checks of its own runs them and then this."""
        self.check_solver(run)
        self.check_solution(run)

    def check_solver(self, run: Run) -> None:
        """A linear solve stopped short; ``solver_iters`` disagreeing with the counting pass."""
        opts = run.prepared.options
        if run.converged is False:
            run.warnings.append(f"linear solver stopped at maxiter={opts.get('maxiter')} "
                                f"without reaching tol={opts.get('tol')}")
        counted = run.counts.get("solver_iters")  # None: the counting pass was skipped
        if run.solver_iters is not None and counted is not None and run.solver_iters != counted:
            run.warnings.append(f"solver_iters: program returned {run.solver_iters}, counting "
                                f"pass saw {run.counts['solver_iters']}")

    def check_solution(self, run: Run) -> None:
        """An IFT gradient (the converged reference) at an x_K where the IFT does not apply:
        the problem's own warnings, a numerically singular ∂F/∂x (``jacobian_cond``, from the
        adjoint check), x_K off a solution."""
        if self.reference != "converged":
            return
        prep, diagnostics = run.prepared, run.diagnostics
        if not self.own_solver:
            run.warnings.extend(prep.problem.ift_warnings(prep.instance, run.x))
            cond = diagnostics.get("jacobian_cond")
            if cond is not None and not cond < JACOBIAN_COND_WARNING:
                run.warnings.append(f"∂F/∂x is numerically singular at x_K (condition number "
                                    f"{cond:.1e}): the IFT does not apply here")
        residual = run.residual
        if residual is not None and residual > IFT_RESIDUAL_WARNING * prep.residual_0:
            run.warnings.append(f"IFT applied away from a solution: ‖F(θ, x_K)‖ = "
                                f"{residual:.2e} ({residual / prep.residual_0:.1e} of "
                                "‖F(θ, x_0)‖)")

    @abstractmethod
    def gradient(
        self, fw: Framework, P: Bound, theta: Any, K: int, opts: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """dℓ/dθ (same shape as θ) and diagnostics."""


def solve_forward(fw: Framework, P: Bound, theta: Any, K: int) -> Any:
    """x_K: K solver steps from s₀(θ), then the solution variables. No tape is requested."""
    state = fw.iterate(lambda s: P.step(s, theta), P.init(theta), K)
    return P.solution(state, theta)
