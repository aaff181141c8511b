"""The strategy protocol: one way of getting dℓ/dθ through an iterative solver.

A strategy receives the framework adapter ``fw`` and a bound problem ``P`` and returns
``(gradient, aux)``; ``aux`` holds solver diagnostics as arrays (``solver_iters``,
``solver_converged``) so that they survive ``jax.jit``. Strategies contain no per-problem code:
anything problem-specific goes through ``P``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from problems.base import ReferenceKind
from suite.plugin.options import Option

if TYPE_CHECKING:
    from problems.base import Bound, Problem
    from suite.plugin.framework import Framework


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

    @abstractmethod
    def gradient(
        self, fw: Framework, P: Bound, theta: Any, K: int, opts: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """dℓ/dθ (same shape as θ) and diagnostics."""


def solve_forward(fw: Framework, P: Bound, theta: Any, K: int) -> Any:
    """x_K: K solver steps from s₀(θ), then the solution variables. No tape is requested."""
    state = fw.iterate(lambda s: P.step(s, theta), P.init(theta), K)
    return P.solution(state, theta)
