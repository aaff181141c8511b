"""``sparsemax``: Euclidean projection onto the simplex (report Sec. 4.3), by bisection.

    z*(θ) = argmin_{z ∈ Δⁿ} ‖z − θ‖² = max(θ − τ*, 0),
    τ* the root of φ(τ) = Σᵢ max(θᵢ − τ, 0) − 1.

θ ∈ ℝⁿ ~ N(0, 1); outer loss ℓ(z) = wᵀz with w ~ N(0, I) (dumped as ``w``). The solver is
bisection on the threshold, K halvings of a bracket that starts at [min θ − 1, max θ]:

    T((lo, hi), θ) = (m, hi) if φ(m) > 0 else (lo, m),   m = (lo + hi)/2,

and x = (z, τ) with τ = (lo + hi)/2, z = max(θ − τ, 0). The problem is piecewise linear, which
makes it the suite's cautionary tale: every iterate τ_K is an affine combination a_K (min θ − 1)
+ b_K max θ, so reverse mode through the solver — ``unrolled`` and every exact strategy —
differentiates *the bracketing*, dτ_K/dθ = a_K e_argmin + b_K e_argmax, not the threshold; it
keeps only one predicate per step and never converges to the sparsemax Jacobian however large K
is (``k_step`` reference: that affine derivative, tracked exactly). The IFT, applied on the
active set to

    F(θ, x) = [ z − max(θ − τ, 0) ;  Σz − 1 ],   ∂F/∂x = [[I, s], [1ᵀ, 0]],  ∂F/∂θ = [−diag(s); 0],

gives dz/dθ = diag(s) − ssᵀ/|S| (s the support indicator; ``converged`` reference, from the
sort-based closed form). ∂F/∂x is not symmetric: ``ift-direct`` and ``ift-gmres`` apply, ``ift-cg``
does not. The IFT fails where some θᵢ = τ* (a kink of max: F is not differentiable there); such
ties are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from problems.base import Instance, Problem, ReferenceKind

#: |θᵢ − τ| below this: θᵢ sits on a kink of max(θ − τ, 0) and F is not differentiable
KINK = 1e-12


def sparsemax_threshold(theta: np.ndarray) -> float:
    """τ* by the sort-based closed form (Held, Wolfe & Crowder; Martins & Astudillo 2016)."""
    srt = np.sort(theta)[::-1]
    cumulative = np.cumsum(srt) - 1.0
    k = np.arange(1, theta.size + 1)
    support = srt - cumulative / k > 0
    rho = k[support][-1]
    return float(cumulative[rho - 1] / rho)


class Sparsemax(Problem):
    name = "sparsemax"
    title = "Sparsemax (Euclidean projection onto the simplex) by bisection on the threshold"
    size_meaning = "n = dim θ = dim z; x = (z, τ) has n + 1 entries"
    jacobian_structure = "general"

    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> Instance:
        rng = np.random.default_rng(seed)
        return Instance(theta=rng.standard_normal(n), arrays={"w": rng.standard_normal(n)})

    def init(self, xp: Any, d: Mapping[str, Any], theta: Any) -> Any:
        return (xp.min(theta) - 1.0, xp.max(theta))

    def step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        lo, hi = state
        mid = 0.5 * (lo + hi)
        above = xp.sum(xp.maximum(theta - mid, xp.zeros_like(theta))) > 1.0
        return xp.where(above, mid, lo), xp.where(above, hi, mid)

    def solution(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        tau = 0.5 * (state[0] + state[1])
        z = xp.maximum(theta - tau, xp.zeros_like(theta))
        return xp.concat([z, xp.reshape(tau, (1,))])

    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        n = theta.shape[0]
        z, tau = x[:n], x[n]
        projection = z - xp.maximum(theta - tau, xp.zeros_like(theta))
        return xp.concat([projection, xp.reshape(xp.sum(z) - 1.0, (1,))])

    def loss(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        return xp.sum(d["w"] * x[: theta.shape[0]])

    def ift_warnings(self, instance: Instance, x: np.ndarray) -> list[str]:
        gap = np.abs(instance.theta - x[-1]).min()
        if gap < KINK:
            return [f"sparsemax: some θᵢ lies within {gap:.1e} of τ: F is not differentiable "
                    "there and the IFT does not apply"]
        return []

    def reference_gradient(self, instance: Instance, K: int, kind: ReferenceKind) -> np.ndarray:
        theta, w = instance.theta, instance.arrays["w"]
        if kind == "converged":
            tau = sparsemax_threshold(theta)
            dtau = (theta > tau) / (theta > tau).sum()
        else:
            # the bracket as exact affine combinations of L = min θ − 1 and U = max θ
            low, high = np.array([1.0, 0.0]), np.array([0.0, 1.0])
            ends = np.array([theta.min() - 1.0, theta.max()])
            for _ in range(K):
                mid = 0.5 * (low + high)
                if np.maximum(theta - mid @ ends, 0.0).sum() > 1.0:
                    low = mid
                else:
                    high = mid
            coeff = 0.5 * (low + high)
            tau = coeff @ ends
            dtau = np.zeros_like(theta)
            dtau[np.argmin(theta)] += coeff[0]
            dtau[np.argmax(theta)] += coeff[1]
        support = (theta > tau).astype(float)
        return support * w - (support @ w) * dtau
