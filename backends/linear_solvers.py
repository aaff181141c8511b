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
