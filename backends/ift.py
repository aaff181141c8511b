"""The implicit-function-theorem family: differentiate the solution map, not the solver.

At a solution F(θ, x*) = 0 with ∂F/∂x invertible, dx*/dθ = −(∂F/∂x)⁻¹ ∂F/∂θ, so

    dℓ/dθ = ∂ℓ/∂θ − (∂F/∂θ)ᵀ λ,   where   (∂F/∂x)ᵀ λ = ∇ₓℓ          (the adjoint system).

The forward solve runs K steps with no tape; the gradient is then evaluated at x_K as if it
were x*. It is exact only at a solution, so these strategies are judged against the converged
reference and the record carries ‖F(θ, x_K)‖ beside the error.

One strategy, :class:`Implicit`, does all of this; its members differ only in the linear
solver they are given for the adjoint system (``adjoint_solver``, a
:class:`backends.linear_solvers.LinearSolver`, as optimistix's
``ImplicitAdjoint(linear_solver=…)``), whose options are the strategy's:

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

The adjoint λ is returned in ``aux`` so that :meth:`Implicit.diagnose` can compare it, untimed,
with a dense float64 solve (:func:`adjoint_diagnostics`: ``adjoint_rel_error``,
``jacobian_cond``) and report the solver's error bound.

A problem that declares block structure is checked block by block: ∂F/∂x is built as its B
diagonal blocks (m JVPs), so the check reaches sizes whose full dense Jacobian it could not
hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from array_api_compat import device as array_device

from backends import linear_solvers
from backends.base import Run, Strategy, Theory, solve_forward
from backends.linear_solvers import (
    CG,
    GMRES,
    Algorithm,
    Direct,
    LinearSolver,
    Neumann,
    Operator,
    ScaledIdentity,
)
from problems.base import Bound, Problem, numpy_namespace

#: above this many Jacobian entries (B·m²; m = dim x without blocks) ∂F/∂x is not built in
#: float64 for the adjoint check (O(Bm²) memory, O(Bm³) time)
MAX_DENSE_ENTRIES = 2000 ** 2


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

    ``adjoint_solver`` — a :class:`backends.linear_solvers.LinearSolver`: its options are the
    strategy's (``options`` is set from it) and it runs with the point's values of them. Options
    named ``tol`` and ``alpha`` get their defaults here: the tolerance from the dtype (the
    solver's), α from the problem.
    """

    reference = "converged"
    reads_forward_state_only = True  # solve_forward, then the adjoint at x_K
    adjoint_solver: ClassVar[LinearSolver]
    #: the solver's algorithm (``backends.linear_solvers``' function as this module found it),
    #: called by :meth:`adjoint_solve` itself: under eager torch the peak meter (memray) also
    #: counts what running Python code costs — a configured instance, a method call's frame, the
    #: line table of a longer function — so the metered path is kept as it was measured
    _algorithm: ClassVar[Algorithm]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "adjoint_solver" in cls.__dict__:
            cls.options = cls.adjoint_solver.options
            cls._algorithm = getattr(linear_solvers, cls.adjoint_solver.algorithm_name)

    def _option_names(self) -> set[str]:
        return {o.name for o in self.options}

    def unsupported_reason(self, problem, framework):
        if self.adjoint_solver.needs_spd and problem.jacobian_structure != "spd":
            return (f"{self.name} needs a symmetric positive definite ∂F/∂x; {problem.name}'s is "
                    f"{problem.jacobian_structure}")
        return None

    def options_reason(self, problem, problem_options, strategy_options):
        if "alpha" in self.adjoint_solver.option_names():
            return _alpha_reason(problem, strategy_options)
        return None

    def resolve_defaults(self, opts, K, dtype, dim_x):
        return self.adjoint_solver.resolve_defaults(opts, dtype, dim_x)

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

        # blocks symmetric positive definite wherever x_K is (the problem's word; "spd" alone
        # promises it near a solution only): a direct solve factors them by Cholesky, and
        # (∂F/∂x)ᵀ is ∂F/∂x itself
        spd = P.problem.jacobian_spd_everywhere

        def dense() -> Any:  # the (B, m, m) blocks of (∂F/∂x)ᵀ, a new array (the solve's)
            blocks, closed = block_jacobian(fw, P, x, theta)
            source.append(closed)
            if closed and not P.problem.residual_jacobian_fresh:
                blocks = xp.asarray(blocks, copy=True)  # it may be the problem's own data
            return blocks if spd else xp.matrix_transpose(blocks)

        solver = type(self)._algorithm  # adjoint_solver.solve's algorithm (see _algorithm)
        result = solver(fw, Operator(matvec, dense, dense_owned=True, spd=spd),
                        to_blocks(P, rhs),
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
        return self.adjoint_solver.error_bound(blocks,
                                               self.solver_options(problem, consts, opts))

    def diagnose(self, run: Run) -> None:
        if run.adjoint is not None:
            run.diagnostics.update(adjoint_diagnostics(run.prepared, run.x, run.adjoint))
        super().diagnose(run)


class IFTDirect(Implicit):
    name = "ift-direct"
    theory = Theory((0, 0), (2, 2), (1, 1), "Θ(n²)", "Θ(K) + Θ(n³)")
    summary = ("IFT with the dense ∂F/∂x (forward mode) and an LU solve (Cholesky where ∂F/∂x is "
               "SPD at every x): Θ(n²) memory, Θ(n³) time")
    counts = ("step_evals", "vjp_evals", "jvp_evals")
    adjoint_solver = Direct()


class IFTConjugateGradient(Implicit):
    name = "ift-cg"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(n)", "Θ(K) + iterations × one VJP")
    summary = "IFT with conjugate gradient on VJPs of F (symmetric positive definite ∂F/∂x)"
    counts = ("step_evals", "vjp_evals", "hvp_evals", "solver_iters")
    adjoint_solver = CG()


class IFTGMRES(Implicit):
    name = "ift-gmres"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(min(iterations, restart)·n); XLA: Θ(restart·n)",
                    "Θ(K) + iterations × one VJP")
    summary = "IFT with restarted GMRES on VJPs of F (any invertible ∂F/∂x)"
    counts = ("step_evals", "vjp_evals", "hvp_evals", "solver_iters")
    adjoint_solver = GMRES()


class IFTNeumann(Implicit):
    name = "ift-neumann"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(n)", "Θ(K) + k VJPs")
    summary = "IFT with a k-term truncated Neumann series (k VJPs of F; error ≤ ρ^{k+1})"
    counts = ("step_evals", "vjp_evals", "hvp_evals", "solver_iters")
    adjoint_solver = Neumann()


class IFTJacobianFree(Implicit):
    name = "ift-jfb"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(n)", "Θ(K) + one VJP")
    summary = "IFT with α·I in place of (∂F/∂x)⁻¹: Jacobian-free backprop (one VJP; biased)"
    adjoint_solver = ScaledIdentity()


# ---- the untimed float64 check of the adjoint (diagnostics) ------------------------------------
def _jacobian_and_loss_gradient(prep: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the (B, m, m) blocks of ∂F/∂x, ∇ₓℓ) at (θ, x) in float64 by the point's own framework
    (forward mode for the Jacobian, never a closed form the strategy may have used), as one
    compiled program: under JAX, eager dispatch would compile every primitive separately
    (≈ 1 s per point at n = 50, against ≈ 0.15 s for one jit)."""
    fw64 = type(prep.fw)(prep.point.device, "float64")
    consts = prep.instance.consts

    def program(theta: Any, data: Any) -> tuple[Any, Any]:
        P = Bound(prep.problem, fw64.xp, data["arrays"], consts)
        jac, _ = block_jacobian(fw64, P, data["x"], theta, closed_form=False)
        value, pullback = fw64.vjp(P.loss, data["x"], theta, count="vjp_evals")
        return jac, pullback(fw64.xp.ones_like(value))[0]

    data = {"arrays": {k: fw64.asarray(v) for k, v in prep.instance.arrays.items()},
            "x": fw64.asarray(x)}
    jac, loss_x = fw64.compile(program)(fw64.asarray(prep.instance.theta), data)
    return fw64.to_numpy(jac), fw64.to_numpy(loss_x)


def dense_jacobian(prep: Any, x: np.ndarray) -> np.ndarray:
    """∂F/∂x at (θ, x) in float64, by the point's own framework's forward mode, as the full
    dim x × dim x matrix in x's own layout (zero off the declared diagonal blocks)."""
    blocks = _jacobian_and_loss_gradient(prep, x)[0]
    index = np.asarray(prep.problem.to_blocks(numpy_namespace(), prep.instance.consts,
                                              np.arange(x.size)))  # (B, m): x's entries
    full = np.zeros((x.size, x.size))
    for b, idx in enumerate(index):
        full[np.ix_(idx, idx)] = blocks[b]
    return full


def adjoint_diagnostics(prep: Any, x: np.ndarray, adjoint: np.ndarray) -> dict[str, Any]:
    """The adjoint λ a strategy solved for at its final iterate x_K, against the exact
    λ* = (∂F/∂x)⁻ᵀ ∇ₓℓ in float64: ``adjoint_rel_error`` separates the error of the linear solve
    (CG tolerance, Neumann truncation, JFB's identity) from the error of evaluating the IFT off
    a solution; ``jacobian_cond``; and the strategy's a-priori bound where its solver has one
    (``ift-neumann``: ρ = ρ(I − α ∂F/∂x) and ρ^{k+1} on ‖λ − λ*‖/‖λ*‖ for symmetric ∂F/∂x)."""
    B = int(prep.problem.blocks(prep.instance.consts) or 1)
    if x.size ** 2 // B > MAX_DENSE_ENTRIES:
        return {"adjoint_check": f"skipped: dim x = {x.size} in {B} block(s), more than "
                                 f"{MAX_DENSE_ENTRIES} Jacobian entries"}
    blocks, loss_x = _jacobian_and_loss_gradient(prep, x)
    npx, consts = numpy_namespace(), prep.instance.consts
    exact = np.linalg.solve(blocks.transpose(0, 2, 1),
                            np.asarray(prep.problem.to_blocks(npx, consts, loss_x))[..., None])
    error = np.asarray(prep.problem.to_blocks(npx, consts, adjoint)) - exact[..., 0]
    singular = np.linalg.svd(blocks, compute_uv=False)  # cond of diag(J_b): over all blocks
    out: dict[str, Any] = {
        "adjoint_rel_error": float(np.linalg.norm(error) / max(np.linalg.norm(exact), 1e-300)),
        "jacobian_cond": float(singular.max() / singular.min()) if singular.min() > 0
        else float("inf"),
    }
    bound = getattr(prep.strategy, "adjoint_bound", None)  # IFT strategies; peers have none
    if bound is not None:
        out.update(bound(prep.problem, consts, prep.options, blocks))
    return out
