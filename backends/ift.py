"""The implicit-function-theorem family: differentiate the solution map, not the solver.

At a solution F(θ, x*) = 0 with ∂F/∂x invertible, dx*/dθ = −(∂F/∂x)⁻¹ ∂F/∂θ, so

    dℓ/dθ = ∂ℓ/∂θ − (∂F/∂θ)ᵀ λ,   where   (∂F/∂x)ᵀ λ = ∇ₓℓ          (the adjoint system).

The forward solve runs K steps with no tape; the gradient is then evaluated at x_K as if it
were x*. It is exact only at a solution, so these strategies are judged against the converged
reference and the record carries ‖F(θ, x_K)‖ beside the error.

One strategy, :class:`Implicit`, does all of this; its members differ only in the linear
solver they are given for the adjoint system (``adjoint_solver``, one function of
``backends.linear_solvers``, as optimistix's ``ImplicitAdjoint(linear_solver=…)``):

* ``ift-direct``: the dense ∂F/∂x by forward mode (or the problem's closed form) and LU:
  Θ(n²) memory, Θ(n³) time, independent of K.
* ``ift-cg``: conjugate gradient on products v ↦ (∂F/∂x)ᵀ v, each one VJP of F (a Hessian-vector
  product when F is a gradient); for symmetric positive definite ∂F/∂x. Θ(n) memory.
* ``ift-gmres``: restarted GMRES on the same products; any invertible ∂F/∂x (KKT systems).
* ``ift-neumann``: the truncated Neumann series λ ≈ α Σ_{i≤k} (I − α(∂F/∂x)ᵀ)^i ∇ₓℓ
  (Lorraine et al. 2019): k products, error ≤ ρ(I − α ∂F/∂x)^{k+1} for symmetric ∂F/∂x.
* ``ift-jfb``: Jacobian-free backprop (Fung et al. 2021): the inverse replaced by α·I, the k = 0
  Neumann term; for a descent solver F = ∇f this is the identity approximation of the
  fixed-point form x − T(x) = α∇f. One VJP, no solve, biased.

Block structure. When the problem declares that x and F split into B independent blocks
(``Problem.blocks``), ∂F/∂x = diag(J₁, …, J_B) and the adjoint system is B systems of size
m = dim x / B, solved side by side: the dense blocks cost m JVPs in all (tangent j sets column j
of every block at once, since the blocks do not interact) and one batched LU; the iterative
solvers stop each block on its own residual. Without a declaration B = 1.

The adjoint λ is returned in ``aux`` so that the harness can compare it, untimed, with a dense
float64 solve (``adjoint_rel_error``) and report the solver's error bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from array_api_compat import device as array_device

from backends.base import Strategy, Theory, solve_forward
from backends.linear_solvers import (
    LinearSolver,
    Operator,
    conjugate_gradient,
    direct,
    gmres,
    neumann_error_bound,
    neumann_series,
    scaled_identity,
)
from problems.base import Problem
from suite.plugin.options import Option


def block_count(P: Any) -> int:
    """B of the problem's declared block structure (1 without one)."""
    return int(P.problem.blocks(P.consts) or 1)


def to_blocks(P: Any, v: Any) -> Any:
    """(…, dim x) → (…, B, m) in the problem's block order."""
    return P.problem.to_blocks(P.xp, P.consts, v)


def from_blocks(P: Any, V: Any) -> Any:
    """(…, B, m) → (…, dim x), the inverse of :func:`to_blocks`."""
    return P.problem.from_blocks(P.xp, P.consts, V)


def block_jacobian(fw: Any, P: Any, x: Any, theta: Any,
                   closed_form: bool = True) -> tuple[Any, bool]:
    """The (B, m, m) diagonal blocks of ∂F/∂x at (θ, x), and whether they are the problem's
    closed form (used if it has one and ``closed_form``; else forward mode, m JVPs in all —
    tangent j is the unit vector of column j in every block at once, which is exact because
    block i of F reads block i of x only)."""
    xp = fw.xp
    closed = P.problem.residual_jacobian(xp, P.data, x, theta) if closed_form else None
    if closed is not None:
        return closed, True
    B = block_count(P)
    m = x.shape[0] // B
    eye = xp.eye(m, dtype=x.dtype, device=array_device(x))
    tangents = from_blocks(P, xp.broadcast_to(eye[:, None, :], (m, B, m)))  # (m, dim x)
    fw.tick("jvp_evals", x, times=m)
    columns = fw.jvp_columns(lambda x_: P.residual(x_, theta), x, tangents)
    # columns[j] = J e_j: in block view (j, b, row) → J_b[row, j]
    return xp.permute_dims(to_blocks(P, columns), (1, 2, 0)), False


def _alpha(problem: Any, consts: Any, opts: dict[str, Any]) -> float:
    alpha = opts.get("alpha")
    alpha = problem.neumann_alpha(consts) if alpha is None else alpha
    if alpha is None:
        from suite.plugin.errors import UsageError

        raise UsageError("option 'alpha'", f"{problem.name} has no default step α",
                         "a positive float with ρ(I − α ∂F/∂x) < 1")
    return alpha


def _alpha_reason(problem: Any, strategy_options: dict[str, Any]) -> str | None:
    if strategy_options.get("alpha") is None and \
            type(problem).neumann_alpha is Problem.neumann_alpha:
        return (f"{problem.name} has no default step α with ρ(I − α∂F/∂x) < 1; "
                "give --option alpha=…")
    return None


class Implicit(Strategy):
    """IFT with the adjoint system solved by ``adjoint_solver`` (see the module docstring).

    Fields: ``adjoint_solver`` — a :data:`backends.linear_solvers.LinearSolver`;
    ``needs_spd`` — the solver needs a symmetric positive definite ∂F/∂x;
    ``error_bound`` — float64 dense blocks, options ↦ an a-priori bound on the adjoint's error
    (diagnostics), or None. Options named ``tol`` and ``alpha`` get their defaults here: the
    tolerance from the dtype, α from the problem.
    """

    reference = "converged"
    adjoint_solver: ClassVar[LinearSolver]
    needs_spd: ClassVar[bool] = False
    error_bound: ClassVar[Callable[[Any, dict[str, Any]], dict[str, float]] | None] = None

    def _option_names(self) -> set[str]:
        return {o.name for o in self.options}

    def unsupported_reason(self, problem, framework):
        if self.needs_spd and problem.jacobian_structure != "spd":
            return (f"{self.name} needs a symmetric positive definite ∂F/∂x; {problem.name}'s is "
                    f"{problem.jacobian_structure}")
        return None

    def options_reason(self, problem, problem_options, strategy_options):
        if "alpha" in self._option_names():
            return _alpha_reason(problem, strategy_options)
        return None

    def resolve_defaults(self, opts, K, dtype, dim_x):
        if "tol" in self._option_names() and opts.get("tol") is None:
            opts = {**opts, "tol": 1e-10 if dtype == "float64" else 1e-5}
        return opts

    def solver_options(self, problem: Any, consts: Any, opts: dict[str, Any]) -> dict[str, Any]:
        """The options the solver reads, α resolved from the problem where it is one."""
        if "alpha" in self._option_names():
            return {**opts, "alpha": _alpha(problem, consts, opts)}
        return dict(opts)

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
        """λ with (∂F/∂x)ᵀ λ = rhs at (θ, x), block by block, and the solver's statistics."""
        xp = fw.xp
        pullback: list[Callable] = []
        source: list[bool] = []

        def matvec(V: Any) -> Any:  # (B, m) ↦ (J_bᵀ V_b)_b: one VJP of F for all blocks
            if not pullback:  # linearised on first use only: a direct solve never needs it
                _, pb = fw.vjp(lambda x_: P.residual(x_, theta), x, count="hvp_evals")
                pullback.append(pb)
            return to_blocks(P, pullback[0](from_blocks(P, V))[0])

        def dense() -> Any:  # the (B, m, m) blocks of (∂F/∂x)ᵀ, a new array (the solve's)
            blocks, closed = block_jacobian(fw, P, x, theta)
            source.append(closed)
            if closed and not P.problem.residual_jacobian_fresh:
                blocks = xp.asarray(blocks, copy=True)  # it may be the problem's own data
            return xp.matrix_transpose(blocks)

        solver = type(self).adjoint_solver
        result = solver(fw, Operator(matvec, dense, dense_owned=True), to_blocks(P, rhs),
                        self.solver_options(P.problem, P.consts, opts))
        aux: dict[str, Any] = {}
        if result.iterations is not None:
            aux["solver_iters"] = result.iterations
        if result.converged is not None:
            aux["solver_converged"] = result.converged
        if result.block_iterations is not None and block_count(P) > 1:
            its = result.block_iterations  # the per-block spread of solver_iters
            aux.update(block_iters_min=xp.min(its), block_iters_max=xp.max(its))
        if source:
            aux["jacobian_closed_form"] = xp.asarray(source[0])
        return from_blocks(P, result.solution), aux

    def adjoint_bound(self, problem: Any, consts: Any, opts: dict[str, Any],
                      blocks: Any) -> dict[str, float]:
        """The solver's a-priori error bound at the float64 blocks of ∂F/∂x (diagnostics)."""
        bound = type(self).error_bound
        if bound is None:
            return {}
        return bound(blocks, self.solver_options(problem, consts, opts))


_TOL = Option("tol", float, None, "relative residual ‖r‖/‖b‖ to stop at "
              "(default 1e-10 in float64, 1e-5 in float32)", minimum=0.0, exclusive_minimum=True)


class IFTDirect(Implicit):
    name = "ift-direct"
    theory = Theory((0, 0), (2, 2), (1, 1), "Θ(n²)", "Θ(K) + Θ(n³)")
    summary = "IFT with the dense ∂F/∂x (forward mode) and an LU solve: Θ(n²) memory, Θ(n³) time"
    counts = ("step_evals", "vjp_evals", "jvp_evals")
    adjoint_solver = direct


class IFTConjugateGradient(Implicit):
    name = "ift-cg"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(n)", "Θ(K) + iterations × one VJP")
    summary = "IFT with conjugate gradient on VJPs of F (symmetric positive definite ∂F/∂x)"
    counts = ("step_evals", "vjp_evals", "hvp_evals", "solver_iters")
    options = (_TOL, Option("maxiter", int, 1000, "most CG iterations (one VJP of F each)",
                            minimum=1))
    adjoint_solver = conjugate_gradient
    needs_spd = True


class IFTGMRES(Implicit):
    name = "ift-gmres"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(restart·n)", "Θ(K) + iterations × one VJP")
    summary = "IFT with restarted GMRES on VJPs of F (any invertible ∂F/∂x)"
    counts = ("step_evals", "vjp_evals", "hvp_evals", "solver_iters")
    options = (
        _TOL,
        Option("maxiter", int, 1000, "most Arnoldi steps in all (one VJP of F each)", minimum=1),
        # 200, not the customary 20–50: restarting below dim x stalls on nonnormal KKT systems
        # (batched qp, dim x = 88, cond 104: 993 Arnoldi steps with restart 50, 88 without)
        Option("restart", int, 200, "Krylov dimension before a restart (memory restart·dim x)",
               minimum=1),
    )
    adjoint_solver = gmres


class IFTNeumann(Implicit):
    name = "ift-neumann"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(n)", "Θ(K) + k VJPs")
    summary = "IFT with a k-term truncated Neumann series (k VJPs of F; error ≤ ρ^{k+1})"
    counts = ("step_evals", "vjp_evals", "hvp_evals", "solver_iters")
    options = (
        Option("k", int, 50, "Neumann terms after the first (one VJP of F each)", minimum=0),
        Option("alpha", float, None, "step α with ρ(I − α ∂F/∂x) < 1 (default: the problem's, "
               "e.g. gd's inner step size)", minimum=0.0, exclusive_minimum=True),
    )
    adjoint_solver = neumann_series
    error_bound = neumann_error_bound


class IFTJacobianFree(Implicit):
    name = "ift-jfb"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(n)", "Θ(K) + one VJP")
    summary = "IFT with α·I in place of (∂F/∂x)⁻¹: Jacobian-free backprop (one VJP; biased)"
    options = (
        Option("alpha", float, None, "scale α of the identity (default: the problem's step)",
                minimum=0.0, exclusive_minimum=True),
    )
    adjoint_solver = scaled_identity
