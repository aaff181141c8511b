"""``reversible``: exact-arithmetic reversible momentum descent (Maclaurin et al. 2015).

For a solver v ← γv − η∇_w f(w, θ), w ← w + v (``problems.base.MomentumDescent``) the forward
pass runs in fixed point (int64, radix 2⁵²) with the multiplication by γ made exact by an
information buffer (``backends.exact_arithmetic``). The backward pass then runs the solver
backwards, bit for bit,

    w_t = w_{t+1} − v_{t+1},   γv_t = v_{t+1} + η∇f(w_t),   v_t = (γv_t)/γ  (exactly),

and accumulates the adjoint of the real-valued step at each reconstructed state:

    ā_tot = v̄ + w̄,   w̄ ← w̄ − η (∂∇f/∂w)ᵀā_tot,   v̄ ← γ ā_tot,   θ̄ ← θ̄ − η (∂∇f/∂θ)ᵀā_tot.

No trajectory is stored: memory is the state plus the buffer, ≈ K · log₂(1/γ) bits per
parameter, and T's expensive part (∇f) is evaluated 2K times. The gradient is exact for the
K-step map of the fixed-point solver, which differs from the float64 one by rounding at 2⁻⁵².
"""

from __future__ import annotations

from typing import Any

from backends.base import Run, Strategy, Theory
from backends.exact_arithmetic import InformationBuffer, to_fixed, to_float
from problems.base import MomentumDescent


class Reversible(Strategy):
    name = "reversible"
    theory = Theory((0, 1), (1, 1), (1, 1), "Θ(n) + K·n·log₂(1/γ) bits", "≈ 2–3 forward passes")
    summary = "exact-arithmetic reversible momentum descent (memory Θ(1) + K·log₂(1/γ) bits)"
    reference = "k_step"
    counts = ("step_evals", "vjp_evals")

    def unsupported_reason(self, problem, framework):
        if not isinstance(problem, MomentumDescent):
            return (f"reversible needs a momentum-descent solver; {problem.name}'s solver "
                    "is not one")
        return None

    def options_reason(self, problem, problem_options, strategy_options):
        if problem_options.get("momentum", 0.0) <= 0.0:
            return (f"reversible needs momentum γ in (0, 1) (multiplying by γ = 0 destroys all "
                    f"information); run {problem.name} with --option momentum=0.9")
        return None

    def diagnose(self, run: Run) -> None:
        """The two ways exact reversal can fail, from the program's own flags."""
        if run.diagnostics.get("reconstruction_exact") is False:
            run.warnings.append("reversible: the backward pass did not reconstruct x₀ bit for bit")
        if run.diagnostics.get("buffer_overflow") is True:
            run.warnings.append("reversible: the information buffer overflowed its capacity")
        super().diagnose(run)

    def gradient(self, fw, P, theta, K, opts) -> tuple[Any, dict[str, Any]]:
        xp = fw.xp
        problem = P.problem
        lr, gamma = problem.descent_rates(P.consts)
        buffer = InformationBuffer.for_run(gamma, K)
        w_start, v_start = P.init(theta)
        dtype = w_start.dtype

        def inner_gradient(w: Any, th: Any) -> Any:
            return problem.inner_gradient(xp, P.data, w, th)

        def exact_step(carry: tuple) -> tuple:
            w, v, B = carry
            B, v = buffer.multiply(fw, B, v)  # v ← γ v, exactly
            g = inner_gradient(to_float(xp, w, dtype), theta)
            fw.tick("step_evals", g)
            v = v - to_fixed(xp, lr * g)
            return w + v, v, B

        w0, v0 = to_fixed(xp, w_start), to_fixed(xp, v_start)
        wK, vK, BK = fw.iterate(exact_step, (w0, v0, buffer.empty(xp, w0.shape[0])), K)
        fw.hold_for_backward(BK)

        def terminal(state: Any, th: Any) -> Any:
            return P.loss(P.solution(state, th), th)

        state_K = (to_float(xp, wK, dtype), to_float(xp, vK, dtype))
        value, loss_pullback = fw.vjp(terminal, state_K, theta)
        (adj_w, adj_v), grad = loss_pullback(xp.ones_like(value))

        def reverse_step(carry: tuple) -> tuple:
            w, v, B, adj_w, adj_v, grad = carry
            w = w - v
            g, pullback = fw.vjp(inner_gradient, to_float(xp, w, dtype), theta)
            fw.tick("step_evals", g)
            v = v + to_fixed(xp, lr * g)
            B, v = buffer.divide(fw, B, v)
            adj_total = adj_v + adj_w
            h_w, h_theta = pullback(adj_total)
            return w, v, B, adj_w - lr * h_w, gamma * adj_total, grad - lr * h_theta

        w_back, v_back, B_back, adj_w, adj_v, grad = fw.iterate(
            reverse_step, (wK, vK, BK, adj_w, adj_v, grad), K)
        _, init_pullback = fw.vjp(P.init, theta)
        (grad_init,) = init_pullback((adj_w, adj_v))

        exact = xp.all(w_back == w0) & xp.all(v_back == v0) & xp.all(B_back == 0)
        return grad + grad_init, {
            "reconstruction_exact": exact,
            "buffer_overflow": buffer.overflowed(xp, BK),
            "buffer_bits_per_iteration": xp.mean(buffer.bits(xp, BK)) / K,
            "buffer_bits_theory": xp.asarray(buffer.bits_per_multiplication),
            "buffer_capacity_bytes": xp.asarray(buffer.capacity_bytes(w0.shape[0])),
        }
