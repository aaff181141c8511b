"""``gd``: hyperparameter gradient through K steps of gradient descent.

Inner problem: L2-regularised logistic regression with one penalty per feature,

    f(w, θ) = (1/m) Σᵢ log(1 + exp(−yᵢ aᵢᵀw)) + ½ Σⱼ exp(θⱼ) wⱼ²,      w, θ ∈ ℝⁿ,

on a training set (A ∈ ℝ^{m×n}, y ∈ {±1}^m), m = 2n. The solver is plain gradient descent from
w₀ = 0 with the fixed step η = 1/L, L = ‖A‖₂²/(4m) + maxⱼ exp(θⱼ) (an upper bound on the
curvature, so every step contracts):

    T(w, θ) = w − η ∇_w f(w, θ).

The optimality condition is stationarity, F(θ, w) = ∇_w f(w, θ), whose Jacobian in w is the
Hessian H = (1/m) Aᵀ diag(σ'(y⊙Aw)) A + diag(exp θ): symmetric positive definite, so the IFT
always applies and CG is the natural matrix-free solver. ∂F/∂θ = diag(exp(θ) ⊙ w).

Outer loss: the logistic loss on a separate validation set (A_val ∈ ℝ^{m×n}, y_val), m = 2n,

    ℓ(w) = (1/m) Σᵢ log(1 + exp(−y_val,ᵢ a_val,ᵢᵀ w)),

which differs from the training objective (DESIGN.md's envelope-theorem trap) and is nonlinear
in w, so reverse mode must keep per-step residuals (the linear-map trap).

Data: a ground-truth w_true ~ N(0, 4/n · I) makes the logits ≈ N(0, 4); features are standard
normal; labels are Bernoulli(σ(aᵀw_true)). θⱼ = log 0.01 + 0.5 ξⱼ, ξ ~ N(0, 1): the penalties
spread over about one order of magnitude and the Hessian's condition number at w* is ≈ 17–28
for n = 20–400. The K-step gradient is then 20 % off the converged one at K = 100, ≈ 1e-9 at
K = 1000 and at machine precision by K = 3000, so a K sweep spans both regimes of the report.

Option ``momentum`` = γ > 0 turns the solver into heavy-ball descent, v ← γv − η∇_w f(w, θ),
w ← w + v, with state (w, v) from (0, 0); F, ℓ and w* are unchanged. This is the solver
``reversible`` needs (Maclaurin et al. 2015).

References (float64 numpy, independent of any AD framework):

* ``k_step``: the exact gradient of θ ↦ ℓ(w_K(θ)) by a hand-written adjoint sweep over the stored
  trajectory: ā ← ∇ℓ(w_K); for k = K−1…0: ḡ += −η exp(θ)⊙w_k⊙ā, ā ← ā − η H(w_k) ā.
* ``converged``: w* by Newton's method to ‖F‖ ≤ 1e-13, then dℓ/dθ = −(exp(θ)⊙w*) ⊙ H(w*)⁻¹∇ℓ(w*).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from problems.base import Instance, MomentumDescent, Problem, ReferenceKind
from suite.plugin.options import Option


def _sigmoid_neg(xp: Any, t: Any) -> Any:
    """σ(−t) = (1 − tanh(t/2)) / 2: one transcendental, no overflow in either tail."""
    return 0.5 - 0.5 * xp.tanh(0.5 * t)


class GradientDescentHyper(MomentumDescent, Problem):
    name = "gd"
    title = "Hyperparameter gradient through gradient descent (L2 logistic regression)"
    size_meaning = "n = number of features = dim θ = dim x; m = 2n training and 2n validation rows"
    jacobian_structure = "spd"
    # H = (1/m) Aᵀ diag(σ'(·)) A + diag(exp θ) with σ' > 0 and exp θ > 0: SPD at every w
    jacobian_spd_everywhere = True
    options = (
        Option("momentum", float, 0.0, "heavy-ball momentum γ of the inner solver "
               "(0: plain gradient descent; > 0: state (w, v), needed by reversible)",
               minimum=0.0, maximum=0.99),
    )

    # ---- data ---------------------------------------------------------------------------
    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> Instance:
        rng = np.random.default_rng(seed)
        m = 2 * n
        w_true = rng.standard_normal(n) * (2.0 / np.sqrt(n))

        def sample() -> tuple[np.ndarray, np.ndarray]:
            A = rng.standard_normal((m, n))
            p = 1.0 / (1.0 + np.exp(-(A @ w_true)))
            y = np.where(rng.random(m) < p, 1.0, -1.0)
            return A, y

        A, y = sample()
        A_val, y_val = sample()
        theta = np.log(0.01) + 0.5 * rng.standard_normal(n)
        lipschitz = np.linalg.norm(A, 2) ** 2 / (4 * m) + np.exp(theta).max()
        return Instance(
            theta=theta,
            arrays={"A": A, "y": y, "A_val": A_val, "y_val": y_val},
            consts={"lr": float(1.0 / lipschitz), "m": m,
                    "momentum": float(options.get("momentum", 0.0))},
        )

    # ---- math (namespace-generic) ------------------------------------------------------
    def init(self, xp: Any, d: Mapping[str, Any], theta: Any) -> Any:
        w = xp.zeros_like(theta)
        return (w, xp.zeros_like(theta)) if d["momentum"] > 0 else w

    def inner_gradient(self, xp: Any, d: Mapping[str, Any], w: Any, theta: Any) -> Any:
        y = d["y"]
        coeff = y * _sigmoid_neg(xp, y * (d["A"] @ w))
        return -(coeff @ d["A"]) / d["m"] + xp.exp(theta) * w

    def loss(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        margins = d["y_val"] * (d["A_val"] @ x)
        return xp.mean(xp.logaddexp(xp.zeros_like(margins), -margins))

    # ---- float64 references ------------------------------------------------------------
    @staticmethod
    def _hessian_vec(inst: Instance, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        A, y, m = inst.arrays["A"], inst.arrays["y"], inst.consts["m"]
        s = 1.0 / (1.0 + np.exp(-(y * (A @ w))))
        return ((s * (1.0 - s)) * (A @ v)) @ A / m + np.exp(inst.theta) * v

    @staticmethod
    def _hessian(inst: Instance, w: np.ndarray) -> np.ndarray:
        A, y, m = inst.arrays["A"], inst.arrays["y"], inst.consts["m"]
        s = 1.0 / (1.0 + np.exp(-(y * (A @ w))))
        return (A.T * (s * (1.0 - s))) @ A / m + np.diag(np.exp(inst.theta))

    def _loss_grad(self, inst: Instance, w: np.ndarray) -> np.ndarray:
        A_val, y_val = inst.arrays["A_val"], inst.arrays["y_val"]
        return -((y_val * _sigmoid_neg(np, y_val * (A_val @ w))) @ A_val) / len(y_val)

    def solve(self, inst: Instance, tol: float = 1e-13, max_newton: int = 100) -> np.ndarray:
        """w* by damped-free Newton from w₀ = 0 (f is strongly convex and smooth)."""
        d = {**inst.arrays, **inst.consts}
        w = np.zeros_like(inst.theta)
        for _ in range(max_newton):
            g = self.inner_gradient(np, d, w, inst.theta)
            if np.linalg.norm(g) <= tol:
                return w
            w = w - np.linalg.solve(self._hessian(inst, w), g)
        raise RuntimeError(f"gd reference: Newton did not reach ‖F‖ ≤ {tol} in {max_newton} steps")

    def reference_gradient(self, instance: Instance, K: int, kind: ReferenceKind) -> np.ndarray:
        inst, theta = instance, instance.theta
        lam = np.exp(theta)
        if kind == "converged":
            w = self.solve(inst)
            adj = np.linalg.solve(self._hessian(inst, w), self._loss_grad(inst, w))
            return -(lam * w) * adj
        d = {**inst.arrays, **inst.consts}
        lr, gamma = self.descent_rates(inst.consts)
        trajectory = np.empty((K, theta.size))
        state = self.init(np, d, theta)
        for k in range(K):
            trajectory[k] = self.solution(np, d, state, theta)
            state = self.step(np, d, state, theta)
        # adjoint of v⁺ = γv − η∇f(w), w⁺ = w + v⁺ (γ = 0: plain descent, the v-adjoint is 0)
        adj_w = self._loss_grad(inst, self.solution(np, d, state, theta))
        adj_v = np.zeros_like(theta)
        grad = np.zeros_like(theta)
        for k in range(K - 1, -1, -1):
            w_k = trajectory[k]
            adj_total = adj_v + adj_w
            grad -= lr * lam * w_k * adj_total
            adj_w = adj_w - lr * self._hessian_vec(inst, w_k, adj_total)
            adj_v = gamma * adj_total
        return grad
