"""pytest-benchmark timings of the key cells: every strategy on gd at one size, both frameworks.

``make bench-pytest`` times them; ``make test`` runs each once as a test. Every gradient is
checked to rounding: the exact strategies against gd's own float64 reference, the IFT solvers
against the same solve done densely, and the biased strategies (``truncated``, ``ift-neumann``,
``ift-jfb``) against their own definitions, written below in float64 numpy independently of the
framework code. Save and compare baselines as the README shows.
"""

from __future__ import annotations

import numpy as np
import pytest

from suite.point import Point
from suite.program import prepare

from ..support_matrix import BACKENDS, PEERS

#: our own strategies (the peer rows have their own tests: tests/test_peers_*.py)
OURS = [b for b in BACKENDS if b not in PEERS]
N, K = 16, 200
OPTIONS = {"momentum": "0.9"}
#: what each strategy's gradient must equal (to TOLERANCE): its own biased definition, or the
#: dense IFT gradient at x_K; every other strategy: gd's exact K-step reference
INDEPENDENT = ("truncated", "ift-neumann", "ift-jfb", "ift-direct", "ift-cg", "ift-gmres")
#: relative error allowed against the formula or reference: achieved ≤ 2.4e-14 (reversible,
#: whose reconstruction rounds differently), ≤ 3.7e-15 for every other strategy (the biased
#: ones ≤ 7.7e-16; their error against the exact gradient is 0.14–0.96)
TOLERANCE = 1e-12


# ---- gd's math in float64 numpy (the documented formulas of problems/gd.py) ------------------
def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-t))


class GdMath:
    """f(w, θ) = mean log(1 + exp(−y⊙Aw)) + ½ Σ exp(θ)w², ℓ(w) = mean log(1 + exp(−y_v⊙A_v w));
    heavy-ball descent v⁺ = γv − η∇_w f, w⁺ = w + v⁺ from (0, 0)."""

    def __init__(self, instance):
        arrays, consts = instance.arrays, instance.consts
        self.A, self.y = arrays["A"], arrays["y"]
        self.A_val, self.y_val = arrays["A_val"], arrays["y_val"]
        self.theta = instance.theta
        self.lr, self.gamma = consts["lr"], consts["momentum"]

    def grad_f(self, w: np.ndarray) -> np.ndarray:
        """∇_w f = −Aᵀ(y ⊙ σ(−y⊙Aw))/m + exp(θ)⊙w."""
        return (-self.A.T @ (self.y * _sigmoid(-self.y * (self.A @ w))) / len(self.y)
                + np.exp(self.theta) * w)

    def hess_f(self, w: np.ndarray) -> np.ndarray:
        """H = Aᵀ diag(σ(1 − σ)) A / m + diag(exp θ), σ = σ(y⊙Aw)."""
        s = _sigmoid(self.y * (self.A @ w))
        return (self.A.T * (s * (1 - s))) @ self.A / len(self.y) + np.diag(np.exp(self.theta))

    def grad_loss(self, w: np.ndarray) -> np.ndarray:
        """∇ℓ = −A_vᵀ(y_v ⊙ σ(−y_v⊙A_v w))/m."""
        return (-self.A_val.T @ (self.y_val * _sigmoid(-self.y_val * (self.A_val @ w)))
                / len(self.y_val))

    def iterates(self, K: int) -> list[np.ndarray]:
        """w_0, …, w_K."""
        w, v = np.zeros_like(self.theta), np.zeros_like(self.theta)
        ws = [w]
        for _ in range(K):
            v = self.gamma * v - self.lr * self.grad_f(w)
            w = w + v
            ws.append(w)
        return ws

    def truncated(self, K: int, k: int) -> np.ndarray:
        """d/dθ ℓ(w_K) through the last k steps only, (w, v)_{K−k} held constant: the adjoint
        recursion c = ā_w + ā_v, θ̄ −= η exp(θ)⊙w_j⊙c, ā_w −= ηH(w_j)c, ā_v = γc for
        j = K−1 … K−k (∂∇_w f/∂θ = diag(exp(θ)⊙w))."""
        ws = self.iterates(K)
        adj_w, adj_v, grad = self.grad_loss(ws[K]), np.zeros_like(self.theta), 0.0
        for j in range(K - 1, K - k - 1, -1):
            c = adj_w + adj_v
            grad = grad - self.lr * np.exp(self.theta) * ws[j] * c
            adj_w = adj_w - self.lr * self.hess_f(ws[j]) @ c
            adj_v = self.gamma * c
        return grad

    def implicit(self, K: int, adjoint: str, terms: int = 0, alpha: float | None = None
                 ) -> np.ndarray:
        """dℓ/dθ = −(∂F/∂θ)ᵀλ = −exp(θ)⊙w_K⊙λ at w_K (ℓ has no direct θ term), with λ from
        Hλ = ∇ℓ solved densely, or by the Neumann sum λ = α Σ_{i=0}^{terms} (I − αH)^i ∇ℓ
        (α = η unless given); JFB's λ = α∇ℓ is the terms = 0 sum."""
        alpha = self.lr if alpha is None else alpha
        w = self.iterates(K)[K]
        H, rhs = self.hess_f(w), self.grad_loss(w)
        if adjoint == "dense":
            lam = np.linalg.solve(H, rhs)
        else:
            term = lam = alpha * rhs
            for _ in range(terms):
                term = term - alpha * (H @ term)
                lam = lam + term
        return -np.exp(self.theta) * w * lam


def expected_gradient(prep) -> np.ndarray:
    math, opts = GdMath(prep.instance), prep.options
    backend = prep.point.backend
    if backend == "truncated":
        return math.truncated(K, opts["k"])
    if backend == "ift-neumann":
        return math.implicit(K, "neumann", opts["k"])
    if backend == "ift-jfb":
        return math.implicit(K, "neumann", 0)
    return math.implicit(K, "dense")


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("backend", OURS)
def test_gradient(benchmark, backend, framework):
    prep = prepare(Point("gd", backend, framework, n=N, K=K, options=OPTIONS))
    fw = prep.fw
    fn = fw.compile(prep.gradient_program())
    fw.synchronize(fn(prep.theta, prep.arrays))  # compile / warm up outside the timing

    def gradient():
        out = fn(prep.theta, prep.arrays)
        fw.synchronize(out)
        return out

    grad, _ = benchmark(gradient)
    if backend in INDEPENDENT:
        expected = expected_gradient(prep)
    else:
        expected = prep.problem.reference_gradient(prep.instance, K, "k_step")
    error = np.linalg.norm(fw.to_numpy(grad) - expected) / np.linalg.norm(expected)
    assert error < TOLERANCE


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("backend, options", [
    ("truncated", {"k": "1"}), ("truncated", {"k": "150"}), ("ift-neumann", {"k": "7"}),
    ("ift-jfb", {"alpha": "0.3"}),
])
def test_biased_strategies_equal_their_definition(backend, options, framework):
    """Beyond the default k: the truncation depth and the number of Neumann terms used are the
    ones asked for, and JFB's α is honoured."""
    from suite.program import evaluate

    ev = evaluate(Point("gd", backend, framework, n=N, K=K, options={**OPTIONS, **options}))
    math = GdMath(ev.prepared.instance)
    if backend == "truncated":
        expected = math.truncated(K, int(options["k"]))
    elif backend == "ift-neumann":
        expected = math.implicit(K, "neumann", int(options["k"]))
    else:
        expected = math.implicit(K, "neumann", 0, alpha=float(options["alpha"]))
    # the biased gradient is far from the exact one, so agreement is not an accident
    exact = ev.prepared.problem.reference_gradient(ev.prepared.instance, K, "k_step")
    assert np.linalg.norm(expected - exact) > 1e-6 * np.linalg.norm(exact)
    # TOLERANCE as in test_gradient (the biased strategies achieve ≤ 7.7e-16 at the defaults)
    assert np.linalg.norm(ev.gradient - expected) <= TOLERANCE * np.linalg.norm(expected)
