"""torchopt (MetaOPT) as peer rows, in torch, on the momentum-descent problems (gd, savi).

* ``torchopt-cg`` ↔ ``ift-cg``: ``torchopt.diff.implicit.custom_root(F, argnums=θ,
  solve=torchopt.linear_solve.solve_cg(rtol=tol, maxiter=maxiter))`` wrapped around *our* K-step
  forward, so the solution it differentiates is our x_K bit for bit. Its backward solves
  (∂F/∂x)ᵀ u = −∇ₓℓ by CG on ``torch.func.vjp`` products of F and returns (∂F/∂θ)ᵀ u, i.e.
  dℓ/dθ = −(∂F/∂θ)ᵀ (∂F/∂x)⁻ᵀ ∇ₓℓ (ℓ reads θ only through x on these problems; an explicit
  ∂ℓ/∂θ is added by autograd as usual).
* ``torchopt-unrolled`` ↔ ``unrolled``: torchopt's functional optimiser
  ``torchopt.sgd(η, momentum=γ)`` with ``update(…, inplace=False)`` and
  ``apply_updates(…, inplace=False)`` for K steps, fed the problem's inner gradient ∇_w f(w, θ)
  (the same hand-written formula our step uses), then reverse mode through all K steps.
  torchopt's momentum is the trace m ← γm + g, update −ηm (the first call sets m = g, which is
  the same from m₀ = 0); with v = −ηm that is our heavy ball v ← γv − η∇f, w ← w + v, so x_K
  agrees with ours to rounding (bit for bit when γ = 0).

Tolerances are ours, not torchopt's. torchopt's defaults: ``custom_root`` without ``solve``
uses ``solve_normal_cg()`` — CG on the normal equations (∂F/∂x)(∂F/∂x)ᵀ, squaring the condition
number — and ``linalg.cg`` stops at ‖r‖ ≤ rtol·‖b‖ with rtol = 1e-5, maxiter = 10·dim x, no
ridge. ``solve_cg`` (plain CG, for the symmetric positive definite ∂F/∂x of gd and savi) with
rtol = 1e-10 in float64 and 1e-5 in float32 and maxiter = 1000 is exactly our ``ift-cg`` stopping
rule; what the defaults cost in accuracy is measured in tests/test_peers_torch.py and the README.

torchopt 0.7.3 ships a compiled ``torchopt._C`` built for an older torch; with torch 2.13 it does
not load. Only its accelerated Adam uses it (and falls back to Python); ``custom_root``,
``linear_solve``, ``linalg.cg``, ``sgd`` and ``apply_updates`` are pure Python, the only paths
used here.
"""

from __future__ import annotations

import warnings
from typing import Any

from backends.base import Run, solve_forward
from backends.ift import adjoint_diagnostics
from backends.linear_solvers import DEFAULT_TOLERANCE
from backends.peers.base import PeerStrategy
from problems.base import MomentumDescent

#: torch.func inside a custom autograd backward is incompatible with saved-tensor hooks
_IMPLICIT_TRACE_NOTE = (
    "torchopt's implicit backward calls torch.func.vjp inside an autograd Function, and "
    "torch.func refuses to run under saved-tensor hooks (RuntimeError: torch.func transforms "
    "don't yet support saved tensor hooks), so the trace meter cannot run; its CG keeps "
    "Θ(dim x) vectors, as ift-cg does")


class TorchoptCG(PeerStrategy):
    name = "torchopt-cg"
    summary = ("torchopt.diff.implicit.custom_root with solve_cg around our K-step forward "
               "(peer of ift-cg)")
    modules = ("torchopt",)
    distribution = "torchopt"
    corresponds_to = "ift-cg"
    frameworks = ("torch",)
    problems = ("gd", "savi")
    reads_forward_state_only = True  # custom_root's backward reads only the x_K solved for
    # step_evals: our forward's steps (the adapter counts them); hvp_evals: every product
    # torchopt's CG asks for, wrapped; solver_iters: its CG iterations (products after the
    # first, which forms r₀ = b − A·0)
    counts = ("step_evals", "hvp_evals", "solver_iters")
    option_help = {
        "tol": f"relative residual ‖r‖/‖b‖ torchopt's CG stops at (rtol; default ours: "
               f"{DEFAULT_TOLERANCE}; torchopt's own is 1e-5)",
        "maxiter": "most CG iterations (ours; torchopt's own is 10·dim x)",
    }

    def diagnose(self, run: Run) -> None:
        # the adjoint its CG solved for (returned as ours is), checked as ours
        if run.adjoint is not None:
            run.diagnostics.update(adjoint_diagnostics(run.prepared, run.x, run.adjoint))
        super().diagnose(run)

    def trace_unmeasurable(self, framework):
        return _IMPLICIT_TRACE_NOTE

    def gradient(self, fw, P, theta, K, opts) -> tuple[Any, dict[str, Any]]:
        import torch
        from torchopt.diff.implicit import custom_root
        from torchopt.linear_solve import solve_cg

        cg = solve_cg(rtol=opts["tol"], maxiter=opts["maxiter"])
        seen: dict[str, Any] = {}

        def solve(matvec: Any, b: Any) -> Any:
            products = 0

            def counted(v: Any) -> Any:
                nonlocal products
                fw.tick("hvp_evals", v)
                if products:
                    fw.tick("solver_iters", v)
                products += 1
                return matvec(v)

            u = cg(counted, b)  # b and u are 1-tuples: custom_root passes the solution as a tuple
            seen["iterations"], seen["adjoint"] = products - 1, -u[0]  # it solves Aᵀu = −∇ₓℓ
            return u

        def optimality(x: Any, th: Any) -> Any:
            return P.residual(x, th)

        # the first argument is custom_root's init-params slot; our forward starts from s₀(θ)
        @custom_root(optimality, argnums=1, solve=solve)
        def solver(init: Any, th: Any) -> Any:
            return solve_forward(fw, P, th, K)

        with warnings.catch_warnings():
            # torchopt 0.7.3 still calls functorch.vjp (deprecated alias of torch.func.vjp)
            warnings.simplefilter("ignore", FutureWarning)
            _, grad = fw.value_and_grad(lambda th: P.loss(solver(None, th), th), theta)
        return grad, {"solver_iters": torch.tensor(seen["iterations"]),
                      "adjoint": seen["adjoint"]}


class TorchoptUnrolled(PeerStrategy):
    name = "torchopt-unrolled"
    summary = ("torchopt.sgd(η, momentum=γ), functional (inplace=False), for K steps; reverse "
               "mode through them (peer of unrolled)")
    modules = ("torchopt",)
    distribution = "torchopt"
    corresponds_to = "unrolled"
    frameworks = ("torch",)
    problems = ("gd", "savi")
    counts = ("step_evals", "vjp_evals")

    def unsupported_reason(self, problem, framework):
        reason = super().unsupported_reason(problem, framework)
        if reason is None and not isinstance(problem, MomentumDescent):
            return f"{self.name} runs heavy-ball descent; {problem.name}'s solver is not one"
        return reason

    def gradient(self, fw, P, theta, K, opts) -> tuple[Any, dict[str, Any]]:
        _, grad = fw.value_and_grad(lambda th: P.loss(sgd_forward(fw, P, th, K), th), theta)
        return grad, {}


def sgd_forward(fw: Any, P: Any, theta: Any, K: int) -> Any:
    """w_K after K steps of torchopt's functional ``sgd(η, momentum=γ)`` from our w₀(θ), fed
    ∇_w f(w, θ); differentiable in θ (nothing is updated in place)."""
    import torchopt

    problem = P.problem
    lr, gamma = problem.descent_rates(P.consts)
    # a fresh optimiser per call: torchopt's trace keeps a first-call flag in a closure
    optimiser = torchopt.sgd(lr, momentum=gamma)
    w = P.solution(P.init(theta), theta)  # v₀ = 0 in our init, m₀ = 0 in torchopt's
    state = optimiser.init(w)
    for _ in range(K):
        g = problem.inner_gradient(P.xp, P.data, w, theta)
        updates, state = optimiser.update(g, state, inplace=False)
        w = torchopt.apply_updates(w, updates, inplace=False)
        fw.tick("step_evals", w)
        if fw.counter is not None and w.requires_grad:
            # one VJP through this step per backward pass (as the adapter counts ours)
            w.register_hook(lambda grad: fw.tick("vjp_evals", grad))
    return w
