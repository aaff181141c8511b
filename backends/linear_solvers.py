"""Matrix-free Krylov solvers written once against the framework adapter.

Hand-written rather than taken from ``jax.scipy.sparse.linalg``: torch has no counterpart, the
comparison needs the same algorithm in both frameworks, and the suite needs the iteration count
and the convergence flag, which the JAX versions do not return.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class SolveResult:
    solution: Any
    iterations: Any  # integer array
    converged: Any  # boolean array


def conjugate_gradient(
    fw: Any, matvec: Callable[[Any], Any], b: Any, tol: float, maxiter: int
) -> SolveResult:
    """Solve A z = b for symmetric positive definite A given only v ↦ A v.

    Starts from z₀ = 0 (so no product is spent on the initial residual) and stops when
    ‖b − A z_k‖ ≤ tol · ‖b‖ or after ``maxiter`` products; iteration k costs one matvec.
    """
    xp = fw.xp
    threshold = tol * xp.sqrt(xp.sum(b * b))

    def cond(s: tuple) -> Any:
        _, _, _, rs, k = s
        return (xp.sqrt(rs) > threshold) & (k < maxiter)

    def body(s: tuple) -> tuple:
        z, r, p, rs, k = s
        fw.tick("solver_iters", rs)
        Ap = matvec(p)
        alpha = rs / xp.sum(p * Ap)
        z = z + alpha * p
        r = r - alpha * Ap
        rs_new = xp.sum(r * r)
        p = r + (rs_new / rs) * p
        return z, r, p, rs_new, k + 1

    init = (xp.zeros_like(b), b, b, xp.sum(b * b), xp.asarray(0))
    z, _, _, rs, k = fw.while_loop(cond, body, init)
    return SolveResult(z, k, xp.sqrt(rs) <= threshold)


def gmres(
    fw: Any, matvec: Callable[[Any], Any], b: Any, tol: float, restart: int, maxiter: int
) -> SolveResult:
    """Solve A z = b for general (non-symmetric, indefinite) A given only v ↦ A v.

    Restarted GMRES(m): Arnoldi with classical Gram–Schmidt applied twice (CGS2), the
    Hessenberg matrix reduced by Givens rotations as it grows, so the residual norm |g_{j+1}|
    is known after every product and the solve stops as soon as it is ≤ tol·‖b‖. Each restart
    spends one extra product on its true residual b − A z. ``maxiter`` bounds the total
    number of Arnoldi steps (``solver_iters``).
    """
    xp = fw.xp
    n = b.shape[0]
    m = max(1, min(restart, n))
    threshold = tol * xp.sqrt(xp.sum(b * b))
    dtype = b.dtype

    def arnoldi_cond(s: tuple) -> Any:
        _, _, _, _, g, j, k = s
        return (xp.abs(g[j]) > threshold) & (j < m) & (k < maxiter)

    def arnoldi_body(s: tuple) -> tuple:
        V, Ht, cs, sn, g, j, k = s
        fw.tick("solver_iters", g)
        w = matvec(V[j])
        h = V @ w  # rows of V beyond j are still zero
        w = w - h @ V
        h2 = V @ w
        w = w - h2 @ V
        h = h + h2
        h_next = xp.sqrt(xp.sum(w * w))
        safe = xp.where(h_next > 0, h_next, xp.ones_like(h_next))
        V = fw.index_update(V, j + 1, w / safe)
        h = fw.index_update(h, j + 1, h_next)

        def rotate(i: Any, h: Any) -> Any:
            hi, hi1 = h[i], h[i + 1]
            h = fw.index_update(h, i, cs[i] * hi + sn[i] * hi1)
            return fw.index_update(h, i + 1, -sn[i] * hi + cs[i] * hi1)

        h = fw.fori_loop(0, j, rotate, h)
        radius = xp.sqrt(h[j] * h[j] + h[j + 1] * h[j + 1])
        radius = xp.where(radius > 0, radius, xp.ones_like(radius))
        c, s_ = h[j] / radius, h[j + 1] / radius
        h = fw.index_update(h, j, c * h[j] + s_ * h[j + 1])
        h = fw.index_update(h, j + 1, xp.zeros_like(h_next))
        gj = g[j]
        g = fw.index_update(g, j + 1, -s_ * gj)
        g = fw.index_update(g, j, c * gj)
        Ht = fw.index_update(Ht, j, h)  # column j of the rotated Hessenberg matrix
        cs, sn = fw.index_update(cs, j, c), fw.index_update(sn, j, s_)
        return V, Ht, cs, sn, g, j + 1, k + 1

    def restart_cond(s: tuple) -> Any:
        _, residual, k = s
        return (residual > threshold) & (k < maxiter)

    def restart_body(s: tuple) -> tuple:
        z, _, k = s
        r = b - matvec(z)
        beta = xp.sqrt(xp.sum(r * r))
        V = fw.index_update(xp.zeros((m + 1, n), dtype=dtype), 0, r / beta)
        g = fw.index_update(xp.zeros(m + 1, dtype=dtype), 0, beta)
        zeros_m = xp.zeros(m, dtype=dtype)
        init = (V, xp.zeros((m, m + 1), dtype=dtype), zeros_m, zeros_m, g, xp.asarray(0), k)
        V, Ht, _, _, g, j, k = fw.while_loop(arnoldi_cond, arnoldi_body, init)
        # R y = g over the j columns built; unused columns get a unit diagonal and y = 0
        used = xp.arange(m) < j
        R = xp.where(used[None, :] & used[:, None], Ht[:, :m].T, xp.eye(m, dtype=dtype))
        y = fw.solve(R, xp.where(used, g[:m], xp.zeros_like(g[:m])))
        return z + y @ V[:m], xp.abs(g[j]), k

    z0 = xp.zeros_like(b)
    init = (z0, xp.sqrt(xp.sum(b * b)), xp.asarray(0))
    z, residual, k = fw.while_loop(restart_cond, restart_body, init)
    return SolveResult(z, k, residual <= threshold)


def neumann_series(
    fw: Any, matvec: Callable[[Any], Any], b: Any, alpha: float, terms: int
) -> SolveResult:
    """λ_k = α Σ_{i=0}^{k} (I − αA)^i b ≈ A⁻¹b (Lorraine et al. 2019): k products.

    For symmetric A with ρ = ρ(I − αA) < 1, ‖λ_k − A⁻¹b‖ ≤ ρ^{k+1}‖A⁻¹b‖.
    """
    xp = fw.xp

    def body(s: tuple) -> tuple:
        term, total = s
        fw.tick("solver_iters", term)
        term = term - alpha * matvec(term)
        return term, total + term

    first = alpha * b
    _, total = fw.iterate(body, (first, first), terms)
    return SolveResult(total, xp.asarray(terms), xp.asarray(True))
