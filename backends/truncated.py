"""``truncated``: reverse mode through the last k of the K steps only.

The first K − k steps run with θ and the state cut from the tape, so

    g_trunc = d/dθ ℓ(T_θ^k(stop(s_{K−k})), θ)

drops every path through which θ influenced s_{K−k}. Memory Θ(k) states, independent of K;
the gradient is biased, and ``grad_rel_error`` against the exact K-step reference shows by how
much. Option ``k`` (default 10, clipped to K); k = K is exactly ``unrolled``, s₀(θ) included.
"""

from __future__ import annotations

from typing import Any

from backends.base import Strategy, Theory
from suite.plugin.options import Option


class Truncated(Strategy):
    name = "truncated"
    theory = Theory((0, 0), (1, 1), (1, 1), "Θ(k·n)", "Θ(K)")
    summary = "reverse mode through the last k steps only (memory Θ(k); biased)"
    reference = "k_step"
    reverse_through_steps = True
    options = (Option("k", int, 10, "number of final steps differentiated (clipped to K)",
                      minimum=1),)

    def resolve_defaults(self, opts, K, dtype, dim_x):
        return {**opts, "k": min(opts["k"], K)}

    def gradient(self, fw, P, theta, K, opts) -> tuple[Any, dict[str, Any]]:
        k = opts["k"]

        def outer(th: Any) -> Any:
            if k < K:
                frozen = fw.stop_gradient(th)
                state = fw.iterate(lambda s: P.step(s, frozen), P.init(frozen), K - k)
                state = fw.stop_gradient(state)
            else:  # nothing to truncate: exactly unrolled, s₀(θ) included
                state = P.init(th)
            state = fw.iterate(lambda s: P.step(s, th), state, k)
            return P.loss(P.solution(state, th), th)

        _, grad = fw.value_and_grad(outer, theta)
        return grad, {}
