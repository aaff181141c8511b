"""Problems for ``tests/test_check.py`` and ``tests/test_external_problems.py``: one sound
problem and, per rule of ``ift-bench check``, a variant broken so that exactly that rule fires.

The sound one, ``Sound``: θ, w ∈ ℝⁿ, M = I + GGᵀ/n (SPD), targets c ~ N(0, I),

    f(w, θ) = ½ wᵀMw + Σⱼ log cosh(wⱼ − θⱼ),   F = ∇_w f = Mw + tanh(w − θ),
    T(w, θ) = w − η F(w, θ),  η = 1/(‖M‖₂ + 1),  w₀ = 0,     ℓ(w) = ½‖w − c‖²,

∂F/∂x = M + diag(sech²(w − θ)) (SPD), ∂F/∂θ = −diag(sech²(w − θ)); ℓ is not f, and the step is
nonlinear in w. It supplies no reference, so the suite computes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from problems.base import Instance, Problem


class Sound(Problem):
    name = "sound"
    title = "log-cosh regularised quadratic, a test fixture"
    jacobian_structure = "spd"

    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> Instance:
        rng = np.random.default_rng(seed)
        G = rng.standard_normal((n, n))
        M = np.eye(n) + G @ G.T / n
        return Instance(theta=rng.standard_normal(n), arrays={"M": M, "c": rng.standard_normal(n)},
                        consts={"lr": float(1.0 / (np.linalg.norm(M, 2) + 1.0))})

    def init(self, xp: Any, d: Mapping[str, Any], theta: Any) -> Any:
        return xp.zeros_like(theta)

    def step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        return state - d["lr"] * self.residual(xp, d, state, theta)

    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        return d["M"] @ x + xp.tanh(x - theta)

    def loss(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        return 0.5 * xp.sum((x - d["c"]) ** 2)


class NonDeterministic(Sound):
    """Rule 1: the targets are drawn from an unseeded generator."""

    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> Instance:
        inst = super().generate(n, seed, options)
        return Instance(theta=inst.theta, consts=inst.consts,
                        arrays={**inst.arrays, "c": np.random.default_rng().standard_normal(n)})


class ResidualTooLong(Sound):
    """Rule 1: F has one entry more than x (the step itself is sound)."""

    def step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        return state - d["lr"] * (d["M"] @ state + xp.tanh(state - theta))

    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        F = super().residual(xp, d, x, theta)
        return xp.concat([F, xp.sum(F)[None]])


class SlowSolver(Sound):
    """Rule 2: a step 1000 times too small, so ‖F‖ is still large after a few hundred steps."""

    def step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        return state - 1e-3 * d["lr"] * self.residual(xp, d, state, theta)


class WrongReference(Sound):
    """Rule 3: a hand-written reference that forgets the curvature of log cosh in ∂F/∂x,
    dℓ/dθ = sech²(w − θ) ⊙ M⁻¹(w − c) instead of sech² ⊙ (M + diag sech²)⁻¹(w − c)."""

    def reference_gradient(self, instance: Instance, K: int, kind: str) -> np.ndarray:
        from suite.references import solve

        w, _ = solve(self, instance)
        d = instance.arrays
        sech2 = 1.0 - np.tanh(w - instance.theta) ** 2
        return sech2 * np.linalg.solve(d["M"], w - d["c"])


class FrameworkDependent(Sound):
    """Rule 4: the JAX path takes a slightly different step than every other namespace."""

    def step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        lr = d["lr"] * (1.01 if "jax" in getattr(xp, "__name__", "") else 1.0)
        return state - lr * self.residual(xp, d, state, theta)


class FalseSPD(Sound):
    """Rule 5: declares spd, but F gains a skew part S w (S = −Sᵀ), so ∂F/∂x is not symmetric
    (its symmetric part is still positive definite, and the solver still converges)."""

    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> Instance:
        inst = super().generate(n, seed, options)
        B = np.random.default_rng(seed + 1).standard_normal((n, n))
        return Instance(theta=inst.theta, consts=inst.consts,
                        arrays={**inst.arrays, "S": 0.3 * (B - B.T) / np.sqrt(n)})

    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        return super().residual(xp, d, x, theta) + d["S"] @ x


class SPDOnlyNearTheSolution(Sound):
    """Rule 5: declares ∂F/∂x SPD everywhere, but F = ∇(½xᵀMx − 2 Σ log cosh x − θᵀx) has
    J = M − 2 diag(sech² x): SPD at the local minimum the solver reaches, indefinite at x₀ = 0
    (M = I + GGᵀ/n has eigenvalues below 2)."""

    jacobian_spd_everywhere = True

    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        return d["M"] @ x - 2.0 * xp.tanh(x) - theta


class LinearStep(Sound):
    """Rule 6: gradient descent on a quadratic with θ entering linearly, F = Mw − θ: the step
    is affine in w, and reverse mode through it keeps nothing per step."""

    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        return d["M"] @ x - theta


class EnvelopeLoss(Sound):
    """Rule 7: the outer loss is the inner objective f itself, so ∇ₓℓ = F vanishes at w*."""

    def loss(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        return 0.5 * x @ (d["M"] @ x) + xp.sum(xp.log(xp.cosh(x - theta)))


class TorchOnly(Sound):
    """A single-framework problem: it calls ``torch.tanh`` directly (not through ``xp``), so
    neither numpy nor JAX could run it."""

    frameworks = ("torch",)

    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        import torch

        return d["M"] @ x + torch.tanh(x - theta)


class NotAProblem:
    """Not a subclass of problems.base.Problem."""


class MissingStep(Problem):
    """Implements everything but ``step``."""

    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> Instance:
        return Instance(theta=np.zeros(n), arrays={})

    def init(self, xp: Any, d: Mapping[str, Any], theta: Any) -> Any:
        return xp.zeros_like(theta)

    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        return x

    def loss(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        return xp.sum(x)
