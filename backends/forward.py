"""Forward mode: push tangent directions of θ through the K steps alongside the solve.

No tape is kept, so memory does not grow with K; the price is one sweep per direction of θ.

* ``forward``: p = dim θ sequential JVP sweeps, the j-th with tangent e_j, each giving
  g_j = dℓ/dθ · e_j. Memory Θ(dim x + p), time Θ(p·K), ``jvp_evals`` = p·K.
* ``forward-batched``: all p tangents at once (``vmap`` of ``jvp``, i.e. ``jacfwd``):
  one sweep carrying a p × dim x tangent block. Memory Θ(p · dim x), time Θ(p·K) with better
  hardware use.

Both are exact for the K-step map, so they are judged against the ``k_step`` reference.
"""

from __future__ import annotations

from typing import Any

from backends.base import Strategy, Theory, solve_forward


def _outer(fw: Any, P: Any, K: int):
    def outer(theta: Any) -> Any:
        return P.loss(solve_forward(fw, P, theta, K), theta)

    return outer


class Forward(Strategy):
    name = "forward"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(n + p)", "Θ(p·K)")
    summary = "p = dim θ sequential JVP sweeps (memory flat in K, time Θ(pK))"
    reference = "k_step"
    counts = ("step_evals", "jvp_evals")

    def gradient(self, fw, P, theta, K, opts) -> tuple[Any, dict[str, Any]]:
        xp = fw.xp
        p = theta.shape[0]
        outer = _outer(fw, P, K)

        def sweep(j: Any) -> Any:
            direction = xp.astype(xp.arange(p) == j, theta.dtype)
            return fw.jvp(outer, (theta,), (direction,))[1]

        return fw.sequential_map(sweep, p), {}


class ForwardBatched(Strategy):
    name = "forward-batched"
    theory = Theory((0, 0), (2, 2), (1, 1), "Θ(p·n)", "Θ(p·K), vectorised")
    summary = "all p tangent directions in one sweep (jacfwd; memory Θ(p·dim x))"
    reference = "k_step"
    counts = ("step_evals", "jvp_evals")

    def gradient(self, fw, P, theta, K, opts) -> tuple[Any, dict[str, Any]]:
        xp = fw.xp
        basis = xp.eye(theta.shape[0], dtype=theta.dtype)
        _, grad = fw.jvp(_outer(fw, P, K), (theta,), (basis,), batched=True)
        return grad, {}
