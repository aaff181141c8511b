"""jaxopt rows: ``jaxopt.implicit_diff.custom_root`` around our K-step forward.

custom_root(F, solve) turns a solver θ ↦ x into one whose VJP is the implicit function theorem
at the point it returns: with F(x, θ) = 0 and the cotangent x̄,

    (∂F/∂x)ᵀ u = −x̄   (``solve``, on products u ↦ (∂F/∂x)ᵀ u, one VJP of F each),
    θ̄ = (∂F/∂θ)ᵀ u,

the solver's own dependence on θ (and on s₀(θ)) ignored — exactly what our ``ift-*`` strategies
do. The solver wrapped here is ours: K steps of T from s₀(θ), then the problem's solution map, so
x_K is the same array; F is the problem's residual. The rows differ only in ``solve``:

* ``jaxopt-cg``: ``linear_solve.solve_cg`` (``jax.scipy.sparse.linalg.cg``) — stops at
  ‖r‖₂ ≤ max(tol·‖b‖₂, atol), ours with atol = 0;
* ``jaxopt-gmres``: ``linear_solve.solve_gmres`` (``jax.scipy.sparse.linalg.gmres``) with
  ``solve_method="incremental"`` (the residual checked after every Arnoldi step, as ours does;
  jax's default ``batched`` runs whole restart cycles), restart = ours, maxiter counted in
  restart cycles (⌈ours / restart⌉);
* ``jaxopt-lu``: ``linear_solve.solve_lu``, which materialises (∂F/∂x)ᵀ by ``jacfwd`` of the VJP
  (dim x products) and solves densely.

jaxopt's own default (``solve=None``) is ``solve_normal_cg``: CG on the normal equations
(∂F/∂x)(∂F/∂x)ᵀ u = −(∂F/∂x) x̄ at jax's default tol = 1e-5, which squares the condition number;
each tolerance here is set to ours instead (1e-10 in float64, 1e-5 in float32) — the README
gives what the defaults cost in accuracy.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

from backends.linear_solvers import DEFAULT_TOLERANCE
from backends.peers.base import PeerStrategy

_TOL_HELP = f"relative residual ‖r‖/‖b‖ to stop at (default ours: {DEFAULT_TOLERANCE})"


def import_jaxopt() -> Any:
    """``jaxopt``, imported without its DeprecationWarning ("JAXopt is no longer maintained"):
    it is raised at every import and would be printed by every worker; the README states the
    library's status once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="JAXopt is no longer maintained",
                                category=DeprecationWarning)
        import jaxopt
        import jaxopt.implicit_diff
        import jaxopt.linear_solve
    return jaxopt


class _JaxoptRoot(PeerStrategy):
    #: our forward's steps, and the products with (∂F/∂x)ᵀ the linear solve asks for (counted
    #: on the matvec handed to it); jaxopt's other VJPs are its own, not counted
    counts = ("step_evals", "hvp_evals")
    reads_forward_state_only = True  # custom_root's VJP reads only the x_K the solver returns
    modules = ("jaxopt",)
    distribution = "jaxopt"
    frameworks = ("jax",)
    #: whether the solve applies its matvec one product at a time (so that a tick counts each)
    count_products: ClassVar[bool] = True

    def library_reason(self) -> str | None:
        import_jaxopt_quietly()
        return super().library_reason()

    def linear_solve(self, jaxopt: Any, opts: dict[str, Any]) -> Any:
        """``solve(matvec, b) → u`` with ``matvec(u) = Au``, the form custom_root takes."""
        raise NotImplementedError

    def gradient(self, fw, P, theta, K, opts) -> tuple[Any, dict[str, Any]]:
        jaxopt = import_jaxopt()

        def optimality(x: Any, th: Any) -> Any:  # F(x, θ); custom_root binds by its signature
            return P.residual(x, th)

        solve = self.linear_solve(jaxopt, opts)

        def counted_solve(matvec: Any, b: Any) -> Any:
            # each product u ↦ (∂F/∂x)ᵀu the library asks for, counted where it executes
            def counted_matvec(u: Any) -> Any:
                fw.tick("hvp_evals", u)
                return matvec(u)

            return solve(counted_matvec if self.count_products else matvec, b)

        @jaxopt.implicit_diff.custom_root(optimality, solve=counted_solve)
        def solver(state0: Any, th: Any) -> Any:
            # our forward, from the state passed in: custom_root gives s₀ no cotangent
            return P.solution(fw.iterate(lambda s: P.step(s, th), state0, K), th)

        def outer(th: Any) -> Any:
            return P.loss(solver(P.init(th), th), th)

        _, grad = fw.value_and_grad(outer, theta)
        return grad, {}


def import_jaxopt_quietly() -> None:
    """Import jaxopt once, warning filtered, so that ``import_error``'s import finds it cached."""
    try:
        import_jaxopt()
    except Exception:  # noqa: BLE001 — the failure is reported by library_reason
        pass


class JaxoptCG(_JaxoptRoot):
    name = "jaxopt-cg"
    corresponds_to = "ift-cg"
    summary = "jaxopt custom_root(F, solve=solve_cg) around our K-step forward"
    parity_note = ("one computation with ours: jax.scipy's CG recurrence on the same VJP of F, "
                   "the solution bit for bit equal; backward alone (ift-bench pair, 6 "
                   "processes, K = 1000) 0.968 [0.940, 0.993] at n = 50, 0.984 [0.964, 1.002] "
                   "at n = 200 (2-core AMD EPYC)")
    option_help = {"tol": _TOL_HELP, "maxiter": "most CG iterations (as ours)"}

    def linear_solve(self, jaxopt, opts):
        tol, maxiter = opts["tol"], opts["maxiter"]

        def solve(matvec: Any, b: Any) -> Any:
            return jaxopt.linear_solve.solve_cg(matvec, b, tol=tol, atol=0.0, maxiter=maxiter)

        return solve


class JaxoptGMRES(_JaxoptRoot):
    name = "jaxopt-gmres"
    corresponds_to = "ift-gmres"
    summary = "jaxopt custom_root(F, solve=solve_gmres) around our K-step forward"
    parity_note = ("ours solves the B independent blocks each in its own Krylov space (each "
                   "stops on its own residual), jaxopt one flat GMRES over all of x: at deq "
                   "batch 64 × 256, K = 100 ours reads 64 small systems a step and its "
                   "backward alone is 1.74 [1.73, 1.76]× jaxopt's (17.5 vs 10.1 ms, ift-bench "
                   "pair, one process; not profiled further); on one block (gd) ours is ahead")
    option_help = {
        "tol": _TOL_HELP,
        "maxiter": "most Arnoldi steps in all (as ours; jax counts restart cycles, so it gets "
                   "⌈maxiter / restart⌉)",
        "restart": "Krylov dimension before a restart (as ours)",
    }

    def linear_solve(self, jaxopt, opts):
        tol, restart = opts["tol"], opts["restart"]
        cycles = math.ceil(opts["maxiter"] / restart)

        def solve(matvec: Any, b: Any) -> Any:
            return jaxopt.linear_solve.solve_gmres(
                matvec, b, tol=tol, atol=0.0, restart=min(restart, b.size), maxiter=cycles,
                solve_method="incremental")

        return solve


class JaxoptLU(_JaxoptRoot):
    name = "jaxopt-lu"
    corresponds_to = "ift-direct"
    summary = "jaxopt custom_root(F, solve=solve_lu) around our K-step forward (dense LU)"
    # solve_lu pushes all dim x basis vectors through the matvec in one vmapped jacfwd: a tick
    # there fires once, not dim x times, so the products are not counted
    counts = ("step_evals",)
    count_products = False

    def linear_solve(self, jaxopt, opts):
        return jaxopt.linear_solve.solve_lu
