"""Linear solvers for the IFT's adjoint system: objects that declare their options, block-batched.

As in lineax (``linear_solve(operator, b, solver) -> Solution``), a solver is an object: its
class (:class:`LinearSolver`) declares the :class:`Option` s it reads — ``tol``, ``maxiter``,
``restart``, ``k``, ``alpha``, with their defaults and help — and ``solver.solve(fw, op, b,
opts)`` solves A z = b, with ``opts`` the values of those options, for a block-diagonal
A = diag(A₁, …, A_B) given as an :class:`Operator` on (B, m) stacks, and answers a
:class:`SolveResult` (the solution and the solver's statistics): the B blocks are independent
systems solved side by side in one batched program. A problem without block structure is the
case B = 1. A flat b (m,) is accepted as one block and answered flat. A strategy that uses a
solver offers the solver's options as its own (``backends.ift``), and a peer row offers its
counterpart's (``backends.peers.base``): each option is written here once.

The algorithms themselves are plain functions ``algorithm(fw, op, b, opts) -> SolveResult``
(:func:`direct`, :func:`conjugate_gradient`, :func:`gmres`, :func:`neumann_series`,
:func:`scaled_identity`), ``opts`` holding the option values; a solver object calls its own.

Iterative solvers stop each block on its own relative residual ‖b_i − A_i z_i‖ ≤ tol·‖b_i‖ and
freeze it there; the loop runs until the last block stops. Each loop step costs one batched
product (every block at once, ``solver_iters`` counts them), so ``iterations`` is the largest
per-block count and ``block_iterations`` the spread. Blocks that meet the tolerance each also
meet it together: Σ‖r_i‖² ≤ tol²Σ‖b_i‖².

Krylov methods are hand-written rather than taken from ``jax.scipy.sparse.linalg``: torch has
no counterpart, the comparison needs the same algorithm in both frameworks, and the suite needs
per-block iteration counts and convergence flags, which the JAX versions do not return.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any, ClassVar

import numpy as np

from backends.krylov_basis import make_rows
from suite.plugin.options import Option


@dataclass
class Operator:
    """A block-diagonal linear map on (B, m) stacks.

    ``matvec``: V ↦ (A_i V_i)_i, one batched product; ``dense``: () ↦ the (B, m, m) blocks,
    materialised only by a solver that asks for them (direct solves). ``dense_owned``: each
    ``dense()`` is a new array nothing else holds, which a direct solve may overwrite with
    its factors (one matrix in memory instead of two). ``spd``: every block is symmetric
    positive definite wherever it is taken (the problem declares ``jacobian_spd_everywhere``),
    so a direct solve factors it by Cholesky.
    """

    matvec: Callable[[Any], Any]
    dense: Callable[[], Any] | None = None
    dense_owned: bool = False
    spd: bool = False


@dataclass
class SolveResult:
    """z with A z = b (same shape as b) and the solver's statistics, alike for every solver:
    ``iterations`` — loop steps, one batched product each (the largest per-block count);
    ``converged`` — every block met the tolerance (None: the solver has no test);
    ``block_iterations`` — (B,) per-block counts. A direct solve has no iterations: all three
    are None."""

    solution: Any
    iterations: Any = None
    converged: Any = None
    block_iterations: Any = None


#: one algorithm: ``(fw, op, b, opts) -> SolveResult``, ``opts`` the solver's option values
Algorithm = Callable[[Any, Operator, Any, dict[str, Any]], SolveResult]


def _blockwise(solver: Algorithm) -> Algorithm:
    """Let ``solver`` written for (B, m) stacks take a flat (m,) vector as one block."""

    @wraps(solver)
    def run(fw: Any, op: Operator, b: Any, opts: dict[str, Any]) -> SolveResult:
        if len(b.shape) != 1:
            return solver(fw, op, b, opts)
        flat = Operator(lambda v: op.matvec(v[0])[None],
                        None if op.dense is None else (lambda: op.dense()[None]),
                        op.dense_owned, op.spd)
        out = solver(fw, flat, b[None], opts)
        return SolveResult(out.solution[0], out.iterations, out.converged, out.block_iterations)

    return run


def _norms(xp: Any, V: Any) -> Any:
    return xp.sqrt(xp.sum(V * V, axis=-1))


@_blockwise
def direct(fw: Any, op: Operator, b: Any, opts: dict[str, Any]) -> SolveResult:
    """LU of each dense block (one batched factorisation), Cholesky where the blocks are
    symmetric positive definite (``op.spd``: m³/3 flops a block, not 2m³/3): Θ(Bm²) memory,
    Θ(Bm³) time."""
    if op.dense is None:
        raise ValueError("a direct solve needs the operator's dense blocks")
    if op.spd:
        solve = fw.solve_spd_in_place if op.dense_owned else fw.solve_spd
    else:
        solve = fw.solve_in_place if op.dense_owned else fw.solve
    return SolveResult(solve(op.dense(), b[..., None])[..., 0])


@_blockwise
def conjugate_gradient(fw: Any, op: Operator, b: Any, opts: dict[str, Any]) -> SolveResult:
    """Conjugate gradient per block, for symmetric positive definite blocks (``tol``,
    ``maxiter``). Starts from z₀ = 0 (no product is spent on the initial residual); a block
    stops once ‖r_i‖ ≤ tol·‖b_i‖ and the loop after ``maxiter`` products at most."""
    xp = fw.xp
    tol, maxiter = opts["tol"], opts["maxiter"]
    # compared with ‖r_i‖², not ‖r_i‖: no square root per block and step
    threshold2 = tol * tol * xp.sum(b * b, axis=-1)

    def cond(s: tuple) -> Any:
        rs, k = s[3], s[4]
        return xp.any(rs > threshold2) & (k < maxiter)

    if b.shape[0] == 1:  # one block: the loop ends when it stops, so nothing is frozen

        def step(s: tuple) -> tuple:
            z, r, p, rs, k = s
            fw.tick("solver_iters", rs)
            Ap = op.matvec(p)
            alpha = rs / xp.sum(p * Ap, axis=-1)
            z = z + alpha[:, None] * p
            r = r - alpha[:, None] * Ap
            rs_new = xp.sum(r * r, axis=-1)
            p = r + (rs_new / rs)[:, None] * p
            return z, r, p, rs_new, k + 1

        z, _, _, rs, k = fw.while_loop(cond, step, (xp.zeros_like(b), b, b,
                                                    xp.sum(b * b, axis=-1), xp.asarray(0)))
        return SolveResult(z, k, xp.all(rs <= threshold2), xp.reshape(k, (1,)))

    def body(s: tuple) -> tuple:
        z, r, p, rs, k, its = s
        fw.tick("solver_iters", rs)
        on = rs > threshold2  # blocks still iterating; the others are frozen
        Ap = op.matvec(p)
        pAp = xp.sum(p * Ap, axis=-1)
        alpha = xp.where(on, rs / xp.where(on, pAp, xp.ones_like(pAp)), xp.zeros_like(rs))
        z = z + alpha[:, None] * p
        r = r - alpha[:, None] * Ap
        rs_new = xp.where(on, xp.sum(r * r, axis=-1), rs)
        beta = rs_new / xp.where(on, rs, xp.ones_like(rs))
        p = xp.where(on[:, None], r + beta[:, None] * p, p)
        return z, r, p, rs_new, k + 1, its + xp.astype(on, its.dtype)

    zeros_b = xp.zeros_like(b[:, 0])
    init = (xp.zeros_like(b), b, b, xp.sum(b * b, axis=-1), xp.asarray(0),
            xp.astype(zeros_b, xp.int64))
    z, _, _, rs, k, its = fw.while_loop(cond, body, init)
    return SolveResult(z, k, xp.all(rs <= threshold2), its)


#: DGKS's η: Gram–Schmidt is repeated when it leaves less than η of the vector's norm
_REORTHOGONALISE = 2 ** -0.5

#: the memory the default restart lets a GMRES basis take (all blocks together)
RESTART_BYTES = 4 * 1024 * 1024
#: the smallest default restart (the customary 20 of scipy, jaxopt, lineax)
MIN_RESTART = 20


def default_restart(dim: int, vector_bytes: int) -> int:
    """The restart length GMRES uses when none is given, for an x of ``dim`` unknowns whose
    basis vector takes ``vector_bytes``: full GMRES (restart = dim, which cannot stall) while
    its dim + 1 vectors fit in RESTART_BYTES, else as many as fit, but at least MIN_RESTART.
    (:func:`gmres` caps it further at the size of a block.) Full GMRES matters on nonnormal
    KKT systems (batched qp, dim x = 88: 993 Arnoldi steps with restart 50, 88 without); the
    cap keeps a large state's basis (deq, batch 64 × 256: 131 kB a vector) at 4 MiB, where a
    contractive F's adjoint converges within the first cycle (26 steps)."""
    fit = RESTART_BYTES // max(vector_bytes, 1) - 1
    return max(1, min(dim, max(MIN_RESTART, fit)))


@_blockwise
def gmres(fw: Any, op: Operator, b: Any, opts: dict[str, Any]) -> SolveResult:
    """Restarted GMRES(m) per block, for any invertible blocks (``tol``, ``restart``,
    ``maxiter``).

    Arnoldi with classical Gram–Schmidt, repeated once where it cancelled (CGS2 with the DGKS
    test, as jax.scipy's GMRES), each block's Hessenberg matrix
    reduced by Givens rotations as it grows, so its residual norm |g_{j+1}| is known after every
    product and the block stops as soon as it is ≤ tol·‖b_i‖. Each restart spends one extra
    product on the true residuals b − A z. ``maxiter`` bounds the Arnoldi steps in all; m is
    ``restart`` or :func:`default_restart`.

    The basis V (rows (B, n)) and the rotated Hessenberg columns (rows (B, m + 1)) are stored
    by ``backends.krylov_basis``: step j reads and writes only the j + 1 rows built so far (in
    chunks), and under eager frameworks the memory follows them too; XLA allocates the m + 1
    rows up front. The coefficient vectors (m + 1, B) are small and kept whole.
    """
    xp = fw.xp
    tol, maxiter = opts["tol"], opts["maxiter"]
    B, n = b.shape
    dtype = b.dtype
    m = max(1, min(opts["restart"], n))
    threshold = tol * _norms(xp, b)
    basis = make_rows(fw, m + 1, (B, n), dtype)
    columns = make_rows(fw, m, (B, m + 1), dtype)
    # Qᵀ = G_{j−1}⋯G₀, the Givens rotations so far, row by row: rotating a new column is one
    # product with its j + 1 rows (row j + 1 is still e_{j+1}), not j dependent updates
    rotations = make_rows(fw, m + 1, (B, m + 1), dtype)
    index = xp.arange(m + 1)

    def unit(i: Any) -> Any:  # e_i (1, m+1)
        return xp.astype(index == i, dtype)[None]

    def arnoldi_cond(s: tuple) -> Any:
        on, j, k = s[7], s[4], s[5]
        return xp.any(on) & (j < m) & (k < maxiter)

    def arnoldi_body(s: tuple) -> tuple:
        V, Hc, Q, g, j, k, its, on, res = s
        fw.tick("solver_iters", g)
        w = op.matvec(basis.row(V, j))
        before = _norms(xp, w)
        h = basis.project(V, w, j + 1)  # (m+1, B); zero beyond row j
        w = w - basis.combine(V, h, j + 1)
        after = _norms(xp, w)

        def again(state: tuple) -> tuple:
            w, h, _ = state
            h2 = basis.project(V, w, j + 1)
            w = w - basis.combine(V, h2, j + 1)
            return w, h + h2, _norms(xp, w)

        # a second pass only where cancellation lost more than half the digits' worth of norm
        # (the DGKS criterion ‖w′‖ < ‖w‖/√2: "twice is enough", and once when no block needs it)
        lost = xp.any(on & (after < _REORTHOGONALISE * before))
        w, h, h_next = fw.switch(xp.astype(lost, xp.int32), [lambda st: st, again],
                                 (w, h, after))
        safe = xp.where(h_next > 0, h_next, xp.ones_like(h_next))
        V = basis.write(V, j + 1, xp.where(on[:, None], w / safe[:, None], xp.zeros_like(w)))
        # the column rotated by the j rotations so far, then by G_j, which zeroes its row j + 1
        h = rotations.project(Q, xp.permute_dims(h, (1, 0)), j + 1)
        radius = xp.sqrt(h[j] * h[j] + h_next * h_next)
        c = xp.where(on & (radius > 0), h[j] / xp.where(radius > 0, radius, 1.0), 1.0)
        s_ = xp.where(on & (radius > 0), h_next / xp.where(radius > 0, radius, 1.0), 0.0)
        h = fw.index_update(h, j, c * h[j] + s_ * h_next)
        row_j, e_next = rotations.row(Q, j), unit(j + 1)
        Q = rotations.write_rows(Q, j, xp.stack([c[:, None] * row_j + s_[:, None] * e_next,
                                                 -s_[:, None] * row_j + c[:, None] * e_next]))
        gj = g[j]
        g = fw.index_update(fw.index_update(g, j + 1, -s_ * gj), j, c * gj)
        # column j of each active block's rotated Hessenberg matrix; a frozen block's column j
        # stays zero and its rotation the identity (c = 1, s = 0), so its g does not move
        Hc = columns.write(Hc, j, xp.permute_dims(xp.where(on[None], h, xp.zeros_like(h)),
                                                  (1, 0)))
        res = xp.where(on, xp.abs(g[j + 1]), res)
        its = its + xp.astype(on, its.dtype)
        return V, Hc, Q, g, j + 1, k + 1, its, on & (res > threshold), res

    def restart_cond(s: tuple) -> Any:
        _, residual, k, _ = s
        return xp.any(residual > threshold) & (k < maxiter)

    def restart_body(s: tuple) -> tuple:
        z, _, k, its = s
        r = b - op.matvec(z)
        beta = _norms(xp, r)
        on = beta > threshold
        safe = xp.where(beta > 0, beta, xp.ones_like(beta))
        V = basis.write(basis.empty(), 0, r / safe[:, None])
        Q = rotations.write(rotations.empty(), 0, xp.broadcast_to(unit(0), (B, m + 1)))
        g = fw.index_update(xp.zeros((m + 1, B), dtype=dtype), 0, beta)
        init = (V, columns.empty(), Q, g, xp.asarray(0), k, xp.zeros_like(its), on, beta)
        V, Hc, _, g, j, k, built, _, res = fw.while_loop(arnoldi_cond, arnoldi_body, init)
        # per block, R y = g over the columns it built; unused columns get a unit diagonal, y = 0
        Ht = columns.dense(Hc, j)  # (B, q, m+1): q ≥ the columns built (q = m under XLA)
        q = Ht.shape[1]
        used = xp.arange(q)[:, None] < built[None, :]  # (q, B)
        both = xp.permute_dims(used[None, :, :] & used[:, None, :], (2, 0, 1))
        R = xp.where(both, xp.matrix_transpose(Ht[:, :, :q]), xp.eye(q, dtype=dtype)[None])
        rhs = xp.where(used, g[:q], xp.zeros_like(g[:q]))
        y = fw.solve_upper_triangular(R, xp.permute_dims(rhs, (1, 0))[..., None])[..., 0]
        z = z + basis.combine(V, xp.permute_dims(y, (1, 0)), j)
        return z, xp.where(on, res, beta), k, its + built

    zeros_b = xp.zeros_like(b[:, 0])
    init = (xp.zeros_like(b), _norms(xp, b), xp.asarray(0), xp.astype(zeros_b, xp.int64))
    z, residual, k, its = fw.while_loop(restart_cond, restart_body, init)
    return SolveResult(z, k, xp.all(residual <= threshold), its)


@_blockwise
def neumann_series(fw: Any, op: Operator, b: Any, opts: dict[str, Any]) -> SolveResult:
    """λ_k = α Σ_{i=0}^{k} (I − αA)^i b ≈ A⁻¹b (Lorraine et al. 2019): ``k`` products, step
    ``alpha``. For symmetric A with ρ = ρ(I − αA) < 1, ‖λ_k − A⁻¹b‖ ≤ ρ^{k+1}‖A⁻¹b‖
    (:func:`neumann_error_bound`)."""
    xp = fw.xp
    alpha, terms = opts["alpha"], opts["k"]

    def body(s: tuple) -> tuple:
        term, total = s
        fw.tick("solver_iters", term)
        term = term - alpha * op.matvec(term)
        return term, total + term

    first = alpha * b
    _, total = fw.iterate(body, (first, first), terms)
    its = xp.astype(xp.zeros_like(b[:, 0]), xp.int64) + terms
    return SolveResult(total, xp.asarray(terms), None, its)


@_blockwise
def scaled_identity(fw: Any, op: Operator, b: Any, opts: dict[str, Any]) -> SolveResult:
    """z = α b: A⁻¹ replaced by α·I, the k = 0 Neumann term (Jacobian-free backprop). No
    product, no iterations; biased unless A = I/α."""
    return SolveResult(opts["alpha"] * b)


def neumann_error_bound(blocks: np.ndarray, opts: dict[str, Any]) -> dict[str, float]:
    """ρ = max over blocks of ρ(I − αA_i) and the Neumann bound ρ^{k+1} on the relative error,
    for float64 dense blocks (B, m, m) (untimed diagnostics)."""
    rho = float(np.max(np.abs(1.0 - opts["alpha"] * np.linalg.eigvals(blocks))))
    return {"neumann_rho": rho, "error_bound": rho ** (opts["k"] + 1)}


# ---- the solvers as objects that declare their options --------------------------------------
def default_tolerance(dtype: str) -> float:
    """The relative-residual tolerance ``tol`` every iterative solve stops at unless told: ours,
    and every peer row's, whose library is set to it."""
    return 1e-10 if dtype == "float64" else 1e-5


def _short(value: float) -> str:
    return f"{value:.0e}".replace("e-0", "e-")


#: :func:`default_tolerance` in words, for help texts
DEFAULT_TOLERANCE = (f"{_short(default_tolerance('float64'))} in float64, "
                     f"{_short(default_tolerance('float32'))} in float32")

TOL = Option("tol", float, None, f"relative residual ‖r‖/‖b‖ to stop at (default "
             f"{DEFAULT_TOLERANCE})", minimum=0.0, exclusive_minimum=True)


class LinearSolver(ABC):
    """A solver of A z = b on block-diagonal operators. The class declares the options it reads
    (``options``: names, types, defaults, ranges, help; a strategy using the solver offers them
    as its own) and fills the defaults that depend on the dtype (:meth:`resolve_defaults`);
    :meth:`solve` runs it with a point's values of them.

    The values travel as the (parsed, validated) option mapping rather than as a configured
    instance, lineax's ``CG(rtol=…)``, and ``backends.ift`` calls the solver's algorithm
    (``algorithm_name``, a function of this module) itself: the solve runs inside the metered
    gradient, and under eager torch the peak meter (memray, tracing Python allocations) counts
    what the Python code on that path costs, a configured instance or one more call included.

    ``needs_spd``: the solver needs symmetric positive definite blocks; :meth:`error_bound`: an
    a-priori bound on the solution's relative error where theory gives one."""

    options: ClassVar[tuple[Option, ...]] = ()
    needs_spd: ClassVar[bool] = False
    #: the name of the module function that solves: ``(fw, op, b, opts) -> SolveResult``
    algorithm_name: ClassVar[str]

    def algorithm(self) -> Algorithm:
        """The function that solves (this module's, as it is bound now)."""
        return globals()[self.algorithm_name]

    def solve(self, fw: Any, op: Operator, b: Any, opts: Mapping[str, Any]) -> SolveResult:
        """z with A z = b, and the solver's statistics; ``opts``: the values of its options."""
        return self.algorithm()(fw, op, b, opts)

    def option_names(self) -> set[str]:
        return {o.name for o in self.options}

    def resolve_defaults(self, opts: dict[str, Any], dtype: str, dim_x: int) -> dict[str, Any]:
        """``opts`` with the defaults that depend on the dtype (the tolerance) or on the size of
        x (GMRES's restart) filled in."""
        if "tol" in self.option_names() and opts.get("tol") is None:
            opts = {**opts, "tol": default_tolerance(dtype)}
        return opts

    def error_bound(self, blocks: np.ndarray, opts: Mapping[str, Any]) -> dict[str, float]:
        """The a-priori error bound at float64 dense blocks (B, m, m), as diagnostics; {} when
        the solver has none."""
        return {}


class Direct(LinearSolver):
    """:func:`direct`: LU of the dense blocks."""

    algorithm_name = "direct"


class CG(LinearSolver):
    """:func:`conjugate_gradient`, for symmetric positive definite blocks."""

    algorithm_name = "conjugate_gradient"

    options = (TOL, Option("maxiter", int, 1000, "most CG iterations (one VJP of F each)",
                           minimum=1))
    needs_spd = True


class GMRES(LinearSolver):
    """:func:`gmres`, restarted, for any invertible blocks."""

    algorithm_name = "gmres"

    options = (
        TOL,
        Option("maxiter", int, 1000, "most Arnoldi steps in all (one VJP of F each)", minimum=1),
        Option("restart", int, None, "Krylov dimension before a restart (memory restart·dim x; "
               "default: full GMRES while the basis fits in 4 MiB, else as many vectors as "
               "fit, at least 20)", minimum=1),
    )


    def resolve_defaults(self, opts, dtype, dim_x):
        opts = super().resolve_defaults(opts, dtype, dim_x)
        if opts.get("restart") is None:
            opts = {**opts, "restart": default_restart(dim_x, dim_x * np.dtype(dtype).itemsize)}
        return opts


class Neumann(LinearSolver):
    """:func:`neumann_series`: ``k`` terms of step ``alpha``, with its error bound."""

    algorithm_name = "neumann_series"

    options = (
        Option("k", int, 50, "Neumann terms after the first (one VJP of F each)", minimum=0),
        Option("alpha", float, None, "step α with ρ(I − α ∂F/∂x) < 1 (default: the problem's, "
               "e.g. gd's inner step size)", minimum=0.0, exclusive_minimum=True),
    )

    def error_bound(self, blocks, opts):
        return neumann_error_bound(blocks, opts)


class ScaledIdentity(LinearSolver):
    """:func:`scaled_identity`: z = α b (Jacobian-free backprop)."""

    algorithm_name = "scaled_identity"

    options = (
        Option("alpha", float, None, "scale α of the identity (default: the problem's step)",
                minimum=0.0, exclusive_minimum=True),
    )
