"""Learning to reweight training examples for a robust regression — an ift-bench problem
written outside the suite, as a user would write one (see README, "Measuring your own problem").

A training set (A, y) ∈ ℝ^{m×n} × ℝ^m, m = 2n, of which a quarter of the labels are corrupted
by gross outliers, and a clean validation set (A_val, y_val). Each training example i gets a
weight exp(θᵢ); the model w ∈ ℝⁿ minimises the weighted pseudo-Huber loss with a ridge term,

    f(w, θ) = (1/m) Σᵢ exp(θᵢ) ρ(aᵢᵀw − yᵢ) + (λ/2)‖w‖²,    ρ(r) = δ²(√(1 + (r/δ)²) − 1),

by gradient descent from w₀ = 0 with step η = 1/L, L = max exp(θ)·‖A‖₂²/m + λ (ρ'' ≤ 1):

    T(w, θ) = w − η ∇_w f(w, θ),   F(θ, w) = ∇_w f = (1/m) Aᵀ(exp(θ) ⊙ ρ'(Aw − y)) + λw.

∂F/∂w = (1/m) Aᵀ diag(exp(θ) ⊙ ρ''(Aw − y)) A + λI is symmetric positive definite, so
``jacobian_structure = "spd"`` and ``ift-cg`` applies. ρ' is nonlinear in w, so reverse mode
keeps residuals per step (not the linear-map trap). The outer loss is the validation error

    ℓ(w) = (1/2m) ‖A_val w − y_val‖²,

not f (not the envelope trap): dℓ/dθ says which training examples to trust. θ ∈ ℝ^m (m = 2n),
x = w ∈ ℝⁿ. There is no ``reference_gradient``: the suite computes both references itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from problems.base import Instance, Problem
from suite.options import Option


class SampleReweighting(Problem):
    name = "reweighting"
    title = "Per-example weights of a pseudo-Huber regression, judged on clean validation data"
    size_meaning = "n = features = dim x; m = 2n training examples = dim θ"
    jacobian_structure = "spd"
    options = (
        Option("delta", float, 1.0, "pseudo-Huber transition δ", minimum=0.0,
               exclusive_minimum=True),
        Option("ridge", float, 0.1, "ridge penalty λ", minimum=0.0, exclusive_minimum=True),
    )

    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> Instance:
        rng = np.random.default_rng(seed)
        m = 2 * n
        w_true = rng.standard_normal(n)
        A, A_val = rng.standard_normal((m, n)), rng.standard_normal((m, n))
        y = A @ w_true + 0.1 * rng.standard_normal(m)
        outliers = rng.permutation(m)[: m // 4]
        y[outliers] += 10.0 * rng.standard_normal(outliers.size)  # gross label noise
        y_val = A_val @ w_true + 0.1 * rng.standard_normal(m)
        theta = 0.1 * rng.standard_normal(m)  # log-weights near 0: all examples trusted
        ridge = float(options.get("ridge", 0.1))
        L = float(np.exp(theta).max() * np.linalg.norm(A, 2) ** 2 / m + ridge)
        return Instance(theta=theta, arrays={"A": A, "y": y, "A_val": A_val, "y_val": y_val},
                        consts={"lr": 1.0 / L, "m": m, "ridge": ridge,
                                "delta": float(options.get("delta", 1.0))})

    def init(self, xp: Any, d: Mapping[str, Any], theta: Any) -> Any:
        return xp.zeros_like(d["A"][0])

    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        r = d["A"] @ x - d["y"]
        rho_prime = r / xp.sqrt(1.0 + (r / d["delta"]) ** 2)  # ρ'(r)
        return (xp.exp(theta) * rho_prime) @ d["A"] / d["m"] + d["ridge"] * x

    def step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        return state - d["lr"] * self.residual(xp, d, state, theta)

    def loss(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        err = d["A_val"] @ x - d["y_val"]
        return 0.5 * xp.sum(err * err) / d["m"]
