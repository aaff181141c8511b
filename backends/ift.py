"""The implicit-function-theorem family: differentiate the solution map, not the solver.

At a solution F(θ, x*) = 0 with ∂F/∂x invertible, dx*/dθ = −(∂F/∂x)⁻¹ ∂F/∂θ, so

    dℓ/dθ = ∂ℓ/∂θ − (∂F/∂θ)ᵀ λ,   where   (∂F/∂x)ᵀ λ = ∇ₓℓ          (the adjoint system).

The forward solve runs K steps with no tape; the gradient is then evaluated at x_K as if it
were x*. It is exact only at a solution, so these strategies are judged against the converged
reference and the record carries ‖F(θ, x_K)‖ beside the error. Members differ only in how they
solve the adjoint system:

* ``ift-direct``: materialise ∂F/∂x by forward mode (dim x JVPs) and solve densely (LU):
  Θ(n²) memory, Θ(n³) time, independent of K.
* ``ift-cg``: conjugate gradient on products v ↦ (∂F/∂x)ᵀ v, each one VJP of F (a Hessian-vector
  product when F is a gradient); for symmetric positive definite ∂F/∂x. Θ(n) memory.
"""

from __future__ import annotations

from typing import Any, ClassVar

from backends.base import Strategy, solve_forward
from backends.linear_solvers import conjugate_gradient
from suite.options import Option


class ImplicitStrategy(Strategy):
    reference = "converged"
    #: whether the adjoint solver needs ∂F/∂x symmetric positive definite
    needs_spd: ClassVar[bool] = False

    def unsupported_reason(self, problem, framework):
        if self.needs_spd and problem.jacobian_structure != "spd":
            return (f"{self.name} needs a symmetric positive definite ∂F/∂x; {problem.name}'s is "
                    f"{problem.jacobian_structure}")
        return None

    def gradient(self, fw, P, theta, K, opts) -> tuple[Any, dict[str, Any]]:
        xp = fw.xp
        x = solve_forward(fw, P, theta, K)
        value, loss_pullback = fw.vjp(P.loss, x, theta)
        loss_x, loss_theta = loss_pullback(xp.ones_like(value))
        lam, aux = self.adjoint_solve(fw, P, x, theta, loss_x, opts)
        _, residual_theta_pullback = fw.vjp(lambda th: P.residual(x, th), theta)
        (implicit,) = residual_theta_pullback(lam)
        return loss_theta - implicit, aux

    def adjoint_solve(
        self, fw: Any, P: Any, x: Any, theta: Any, rhs: Any, opts: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """λ with (∂F/∂x)ᵀ λ = rhs at (θ, x)."""
        raise NotImplementedError


class IFTDirect(ImplicitStrategy):
    name = "ift-direct"
    summary = "IFT with the dense ∂F/∂x (forward mode) and an LU solve: Θ(n²) memory, Θ(n³) time"
    counts = ("step_evals", "vjp_evals", "jvp_evals")

    def adjoint_solve(self, fw, P, x, theta, rhs, opts):
        jac = fw.jacobian(lambda x_: P.residual(x_, theta), x)
        return fw.solve(jac.T, rhs), {}


class IFTConjugateGradient(ImplicitStrategy):
    name = "ift-cg"
    summary = "IFT with conjugate gradient on VJPs of F (symmetric positive definite ∂F/∂x)"
    needs_spd = True
    counts = ("step_evals", "vjp_evals", "hvp_evals", "solver_iters")
    options = (
        Option("tol", float, None, "relative residual ‖r‖/‖b‖ to stop at "
               "(default 1e-10 in float64, 1e-5 in float32)", minimum=0.0, exclusive_minimum=True),
        Option("maxiter", int, 1000, "most CG iterations (one VJP of F each)", minimum=1),
    )

    def resolve_defaults(self, opts, K, dtype, dim_x):
        if opts.get("tol") is None:
            opts = {**opts, "tol": 1e-10 if dtype == "float64" else 1e-5}
        return opts

    def adjoint_solve(self, fw, P, x, theta, rhs, opts):
        _, pullback = fw.vjp(lambda x_: P.residual(x_, theta), x, count="hvp_evals")
        result = conjugate_gradient(fw, lambda v: pullback(v)[0], rhs, opts["tol"], opts["maxiter"])
        return result.solution, {"solver_iters": result.iterations,
                                 "solver_converged": result.converged}
