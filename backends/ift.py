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
* ``ift-gmres``: restarted GMRES on the same products; any invertible ∂F/∂x (KKT systems).
* ``ift-neumann``: the truncated Neumann series λ ≈ α Σ_{i≤k} (I − α(∂F/∂x)ᵀ)^i ∇ₓℓ
  (Lorraine et al. 2019): k products, error ≤ ρ(I − α ∂F/∂x)^{k+1} for symmetric ∂F/∂x.
* ``ift-jfb``: Jacobian-free backprop (Fung et al. 2021): the inverse replaced by α·I, the k = 0
  Neumann term; for a descent solver F = ∇f this is the identity approximation of the
  fixed-point form x − T(x) = α∇f. One VJP, no solve, biased.

The adjoint λ is returned in ``aux`` so that the harness can compare it, untimed, with a dense
float64 solve (``adjoint_rel_error``) and report the Neumann bound.
"""

from __future__ import annotations

from typing import Any, ClassVar

from backends.base import Strategy, Theory, solve_forward
from backends.linear_solvers import conjugate_gradient, gmres, neumann_series
from problems.base import Problem
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
        return loss_theta - implicit, {**aux, "adjoint": lam}

    def adjoint_solve(
        self, fw: Any, P: Any, x: Any, theta: Any, rhs: Any, opts: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """λ with (∂F/∂x)ᵀ λ = rhs at (θ, x)."""
        raise NotImplementedError


class IFTDirect(ImplicitStrategy):
    name = "ift-direct"
    theory = Theory((0, 0), (2, 2), (1, 1), "Θ(n²)", "Θ(K) + Θ(n³)")
    summary = "IFT with the dense ∂F/∂x (forward mode) and an LU solve: Θ(n²) memory, Θ(n³) time"
    counts = ("step_evals", "vjp_evals", "jvp_evals")

    def adjoint_solve(self, fw, P, x, theta, rhs, opts):
        jac = fw.jacobian(lambda x_: P.residual(x_, theta), x)
        return fw.solve(jac.T, rhs), {}


class IFTConjugateGradient(ImplicitStrategy):
    name = "ift-cg"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(n)", "Θ(K) + iterations × one VJP")
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


class IFTGMRES(ImplicitStrategy):
    name = "ift-gmres"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(restart·n)", "Θ(K) + iterations × one VJP")
    summary = "IFT with restarted GMRES on VJPs of F (any invertible ∂F/∂x)"
    counts = ("step_evals", "vjp_evals", "hvp_evals", "solver_iters")
    options = (
        Option("tol", float, None, "relative residual ‖r‖/‖b‖ to stop at "
               "(default 1e-10 in float64, 1e-5 in float32)", minimum=0.0, exclusive_minimum=True),
        Option("maxiter", int, 1000, "most Arnoldi steps in all (one VJP of F each)", minimum=1),
        # 200, not the customary 20–50: restarting below dim x stalls on nonnormal KKT systems
        # (batched qp, dim x = 88, cond 104: 993 Arnoldi steps with restart 50, 88 without)
        Option("restart", int, 200, "Krylov dimension before a restart (memory restart·dim x)",
               minimum=1),
    )

    def resolve_defaults(self, opts, K, dtype, dim_x):
        if opts.get("tol") is None:
            opts = {**opts, "tol": 1e-10 if dtype == "float64" else 1e-5}
        return opts

    def adjoint_solve(self, fw, P, x, theta, rhs, opts):
        _, pullback = fw.vjp(lambda x_: P.residual(x_, theta), x, count="hvp_evals")
        result = gmres(fw, lambda v: pullback(v)[0], rhs, opts["tol"], opts["restart"],
                       opts["maxiter"])
        return result.solution, {"solver_iters": result.iterations,
                                 "solver_converged": result.converged}


def _alpha(problem: Any, consts: Any, opts: dict[str, Any]) -> float:
    alpha = opts.get("alpha")
    alpha = problem.neumann_alpha(consts) if alpha is None else alpha
    if alpha is None:
        from suite.errors import UsageError

        raise UsageError("option 'alpha'", f"{problem.name} has no default step α",
                         "a positive float with ρ(I − α ∂F/∂x) < 1")
    return alpha


def _alpha_reason(problem: Any, strategy_options: dict[str, Any]) -> str | None:
    if strategy_options.get("alpha") is None and \
            type(problem).neumann_alpha is Problem.neumann_alpha:
        return (f"{problem.name} has no default step α with ρ(I − α∂F/∂x) < 1; "
                "give --option alpha=…")
    return None


class IFTNeumann(ImplicitStrategy):
    name = "ift-neumann"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(n)", "Θ(K) + k VJPs")
    summary = "IFT with a k-term truncated Neumann series (k VJPs of F; error ≤ ρ^{k+1})"
    counts = ("step_evals", "vjp_evals", "hvp_evals", "solver_iters")
    options = (
        Option("k", int, 50, "Neumann terms after the first (one VJP of F each)", minimum=0),
        Option("alpha", float, None, "step α with ρ(I − α ∂F/∂x) < 1 (default: the problem's, "
               "e.g. gd's inner step size)", minimum=0.0, exclusive_minimum=True),
    )

    def options_reason(self, problem, problem_options, strategy_options):
        return _alpha_reason(problem, strategy_options)

    def adjoint_solve(self, fw, P, x, theta, rhs, opts):
        _, pullback = fw.vjp(lambda x_: P.residual(x_, theta), x, count="hvp_evals")
        alpha = _alpha(P.problem, P.consts, opts)
        result = neumann_series(fw, lambda v: pullback(v)[0], rhs, alpha, opts["k"])
        return result.solution, {"solver_iters": result.iterations}


class IFTJacobianFree(ImplicitStrategy):
    name = "ift-jfb"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(n)", "Θ(K) + one VJP")
    summary = "IFT with α·I in place of (∂F/∂x)⁻¹: Jacobian-free backprop (one VJP; biased)"
    options = (
        Option("alpha", float, None, "scale α of the identity (default: the problem's step)",
               minimum=0.0, exclusive_minimum=True),
    )

    def options_reason(self, problem, problem_options, strategy_options):
        return _alpha_reason(problem, strategy_options)

    def adjoint_solve(self, fw, P, x, theta, rhs, opts):
        return _alpha(P.problem, P.consts, opts) * rhs, {}
