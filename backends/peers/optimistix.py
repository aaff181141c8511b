"""optimistix rows: ``optimistix.fixed_point`` running our solver step for exactly K steps.

``fixed_point(fn, FixedPointIteration(rtol=0, atol=0), s₀(θ), θ, max_steps=K, throw=False)``
iterates s ← T(s, θ) on the solver's whole state s (the iterate, plus momentum or duals where
the solver has them). With both tolerances 0 its stopping test |Δs| < 0·|s| + 0 never holds, so
it stops at max_steps = K with the same s_K as ours (the result says ``max_steps_reached``,
which ``throw=False`` keeps from raising); the loss is then ℓ(x(s_K, θ), θ). The number of steps
taken is returned as the diagnostic ``peer_steps``.

The adjoint decides how the gradient goes back through the loop:

* ``ImplicitAdjoint(linear_solver)`` (``optimistix-cg``, ``-gmres``, ``-lu``): the IFT on the
  fixed-point residual G(s, θ) = T(s, θ) − s, solving (∂G/∂s)ᵀ u = s̄ with a lineax solver.
  For plain gradient descent G = −η∇f, so ∂G/∂s = −ηH (tagged symmetric negative
  semidefinite, which ``lineax.CG`` needs) and the gradient is ours. With momentum the state is
  (w, v) and ∂G/∂s is not symmetric: CG does not apply there, GMRES and LU do (their system is
  2n, ours n).
* ``RecursiveCheckpointAdjoint(checkpoints=s)`` (``optimistix-checkpoint``): reverse mode
  through the loop with online binomial checkpointing (Stumm & Walther 2010) in s slots — the
  counterpart of our offline Revolve schedule ``checkpoint-binomial``.

The fixed-point IFT needs T itself to define the solution differentiably. Two bundled solvers do
not: sparsemax's bisection (T piecewise constant in θ: the IFT would say dτ/dθ = 0) and qp's
interior point, which is the identity once converged (T(s) − s has a zero Jacobian); the
implicit rows refuse them (qp with ``solver=admm`` is fine). The checkpoint row differentiates
the K-step map itself and fits every problem.

lineax's stopping rule is elementwise: |r_i| ≤ atol + rtol·|b_i| for every i *and* the last
update |Δu_i| ≤ atol + rtol·|u_i| (max norm), where ours is ‖r‖₂ ≤ tol·‖b‖₂. Both its
tolerances are set to ours (1e-10 in float64, 1e-5 in float32); lineax has no default (it
refuses rtol = atol = 0). lineax's GMRES checks convergence after each restart cycle only (a
cycle is min(restart, dim s) Arnoldi steps); restart is set to ours.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from backends.linear_solvers import DEFAULT_TOLERANCE
from backends.peers.base import PeerStrategy
from problems.base import MomentumDescent

_TOL_HELP = f"lineax rtol = atol (default ours: {DEFAULT_TOLERANCE})"


class _OptimistixFixedPoint(PeerStrategy):
    modules = ("optimistix", "lineax")
    distribution = "optimistix"
    frameworks = ("jax",)
    #: lineax tags for ∂G/∂s, G(s) = T(s) − s (only CG needs them)
    needs_symmetric: ClassVar[bool] = False

    def adjoint(self, opts: dict[str, Any]) -> Any:
        raise NotImplementedError

    def tags(self) -> frozenset:
        return frozenset()

    def gradient(self, fw, P, theta, K, opts) -> tuple[Any, dict[str, Any]]:
        # optimistix is JAX-only; its Solution carries the step count as an auxiliary output,
        # which the adapter's value_and_grad (no has_aux) cannot return
        import jax
        import optimistix as optx

        adjoint = self.adjoint(opts)
        tags = self.tags()

        def outer(th: Any) -> tuple[Any, Any]:
            sol = optx.fixed_point(lambda s, t: P.step(s, t),
                                   optx.FixedPointIteration(rtol=0.0, atol=0.0),
                                   P.init(th), th, max_steps=K, adjoint=adjoint, throw=False,
                                   tags=tags)
            return P.loss(P.solution(sol.value, th), th), sol.stats["num_steps"]

        (_, steps), grad = jax.value_and_grad(outer, has_aux=True)(theta)
        return grad, {"peer_steps": steps}


def _bisection_reason(name: str, problem_options: dict[str, Any]) -> str:
    return (f"{name} applies the IFT to the solver's fixed point T(s) = s; sparsemax's bisection "
            "step is piecewise constant in θ, so that IFT gives dτ/dθ = 0, not the projection's "
            "derivative (16 % off ours at n = 6)")


def _ipm_reason(name: str, problem_options: dict[str, Any]) -> str | None:
    if problem_options.get("solver", "ipm") != "ipm":
        return None
    return (f"{name} applies the IFT to the solver's fixed point T(s) = s; qp's interior-point "
            "step is the identity once converged, so T(s) − s has a zero Jacobian (singular); run "
            "qp with --option solver=admm")


class _OptimistixImplicit(_OptimistixFixedPoint):
    # applications of T: the K steps plus those the adjoint's linearisation of T(s) − s makes;
    # the solver's products are transposed JVPs inside lineax, which a tick cannot see
    counts = ("step_evals",)
    #: problems whose solver step does not define the solution by a differentiable fixed point
    #: (the IFT on T(s) − s then fails or answers something else): name → (always unfit, or
    #: a function of the problem options giving why not). A problem attribute would be the
    #: cleaner place; these are the bundled solvers that fail it.
    UNFIT: ClassVar[dict[str, Any]] = {"sparsemax": _bisection_reason, "qp": _ipm_reason}
    ALWAYS_UNFIT: ClassVar[frozenset[str]] = frozenset({"sparsemax"})

    def unsupported_reason(self, problem, framework):
        reason = super().unsupported_reason(problem, framework)
        if reason is None and problem.name in self.ALWAYS_UNFIT:
            return self.UNFIT[problem.name](self.name, {})
        return reason

    def options_reason(self, problem, problem_options, strategy_options):
        unfit = self.UNFIT.get(problem.name)
        return (super().options_reason(problem, problem_options, strategy_options)
                or (None if unfit is None else unfit(self.name, problem_options)))

    def linear_solver(self, lineax: Any, opts: dict[str, Any]) -> Any:
        raise NotImplementedError

    def adjoint(self, opts):
        import lineax
        import optimistix as optx

        return optx.ImplicitAdjoint(linear_solver=self.linear_solver(lineax, opts))


def _plain_descent_reason(name: str, problem: Any, problem_options: dict[str, Any]) -> str | None:
    """Why ∂G/∂s = ∂T/∂s − I is not known symmetric definite: it is for gradient descent on the
    iterate alone (T = s − η∇f, γ = 0), not with momentum or for other solvers."""
    if not isinstance(problem, MomentumDescent):
        return (f"{name} needs T(s) − s with a symmetric definite Jacobian (plain gradient "
                f"descent); {problem.name}'s solver is not gradient descent")
    if problem_options.get("momentum", 0.0) > 0.0:
        return (f"{name} needs T(s) − s with a symmetric Jacobian: with momentum the state is "
                f"(w, v) and it is not; run {problem.name} with --option momentum=0")
    return None


class OptimistixCG(_OptimistixImplicit):
    name = "optimistix-cg"
    corresponds_to = "ift-cg"
    summary = "optimistix fixed_point (K steps) with ImplicitAdjoint(lineax.CG)"
    option_help = {"tol": _TOL_HELP, "maxiter": "most CG iterations (as ours)"}

    def unsupported_reason(self, problem, framework):
        reason = super().unsupported_reason(problem, framework)
        if reason is None and not isinstance(problem, MomentumDescent):
            return _plain_descent_reason(self.name, problem, {})
        return reason

    def options_reason(self, problem, problem_options, strategy_options):
        return (super().options_reason(problem, problem_options, strategy_options)
                or _plain_descent_reason(self.name, problem, problem_options))

    def tags(self):
        import lineax

        # ∂G/∂s = −ηH for gradient descent: symmetric negative definite
        return frozenset({lineax.symmetric_tag, lineax.negative_semidefinite_tag})

    def linear_solver(self, lineax, opts):
        return lineax.CG(rtol=opts["tol"], atol=opts["tol"], max_steps=opts["maxiter"])


class OptimistixGMRES(_OptimistixImplicit):
    name = "optimistix-gmres"
    corresponds_to = "ift-gmres"
    summary = "optimistix fixed_point (K steps) with ImplicitAdjoint(lineax.GMRES)"
    option_help = {
        "tol": _TOL_HELP,
        "maxiter": "most Arnoldi steps in all (as ours; lineax counts restart cycles, so it gets "
                   "⌈maxiter / restart⌉)",
        "restart": "Krylov dimension before a restart (as ours)",
    }

    def linear_solver(self, lineax, opts):
        return lineax.GMRES(rtol=opts["tol"], atol=opts["tol"], restart=opts["restart"],
                            max_steps=math.ceil(opts["maxiter"] / opts["restart"]))


class OptimistixLU(_OptimistixImplicit):
    name = "optimistix-lu"
    corresponds_to = "ift-direct"
    summary = "optimistix fixed_point (K steps) with ImplicitAdjoint(lineax.LU): dense ∂G/∂s"

    def linear_solver(self, lineax, opts):
        return lineax.LU()


class OptimistixCheckpoint(_OptimistixFixedPoint):
    name = "optimistix-checkpoint"
    corresponds_to = "checkpoint-binomial"
    summary = ("optimistix fixed_point (K steps) with RecursiveCheckpointAdjoint: online "
               "binomial checkpointing in s slots")
    reverse_through_steps = True  # the counting pass counts the steps and VJPs it replays
    counts = ("step_evals", "vjp_evals")
    option_help = {"snapshots": "checkpoint slots s (default ⌈log₂ K⌉, at least 1, as "
                                "checkpoint-binomial)"}

    def adjoint(self, opts):
        import optimistix as optx

        return optx.RecursiveCheckpointAdjoint(checkpoints=opts["snapshots"])
