"""``unrolled``: reverse-mode AD through all K solver steps.

g = dℓ(x_K(θ), θ)/dθ for the K-step map, exact up to rounding. Reverse mode keeps what each of
the K steps needs for its VJP, so its trace grows as Θ(K · dim x): the report's Ω(Kn).
torch: autograd over a Python loop. JAX: ``jax.value_and_grad`` over ``lax.scan``.
"""

from __future__ import annotations

from typing import Any

from backends.base import Strategy, Theory, solve_forward


class Unrolled(Strategy):
    name = "unrolled"
    theory = Theory((1, 1), (1, 1), (1, 1), "Θ(K·n)", "Θ(K)")
    summary = "reverse mode through all K steps (exact for the K-step map; memory Θ(K))"
    reference = "k_step"
    reverse_through_steps = True

    def gradient(self, fw, P, theta, K, opts) -> tuple[Any, dict[str, Any]]:
        def outer(th: Any) -> Any:
            return P.loss(solve_forward(fw, P, th, K), th)

        _, grad = fw.value_and_grad(outer, theta)
        return grad, {}
