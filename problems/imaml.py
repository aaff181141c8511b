"""``imaml``: implicit MAML — the meta-gradient of a proximal few-shot adaptation
(Rajeswaran, Finn, Kakade & Levine 2019, "Meta-Learning with Implicit Gradients").

Task: a c-way, k-shot classification episode from the 8×8 handwritten digits bundled with
scikit-learn (64 features, pixels scaled to [0, 1] by dividing by 16): c classes (option
``classes``, 5) drawn by the seed, and per class k support examples (option ``support``, 5)
and q query examples (option ``query``, 15), disjoint, drawn by the seed.

Model: an MLP 64 → n (tanh) → c with flat parameters w = (W₁ ∈ ℝ^{n×64}, b₁ ∈ ℝⁿ,
W₂ ∈ ℝ^{c×n}, b₂ ∈ ℝᶜ), row-major in that order, dim w = 64n + n + nc + c, and the mean
softmax cross-entropy L_S(w) over the support set (L_Q over the query set).

θ ∈ ℝ^{dim w}: the meta-initialisation, drawn from the seed Glorot-style
(W₁ ~ N(0, 2/(64 + n)), W₂ ~ N(0, 2/(n + c)), biases 0).

Inner problem (iMAML's proximal adaptation), λ = option ``lam``:

    w*(θ) = argmin_w  f(w, θ) = L_S(w) + (λ/2)‖w − θ‖².

The solver is K steps of gradient descent from w₀ = θ with a fixed step,
T(w, θ) = w − η ∇_w f(w, θ), η = 1/L with

    L = λ + 2 max(μ̂(θ), μ̂(w̃)),   w̃ = θ − ∇L_S(θ)/λ,

μ̂(w) = ‖∇²L_S(w)‖₂ (≥ its largest eigenvalue) by 50 power iterations on exact Hessian-vector
products from a fixed start vector (deterministic, ≈ 100 products in ``generate``). w̃ minimises the
linearised inner objective, a first-order estimate of w*: the curvature grows as the network
fits the support set (up to 3× from θ to w* at n = 4), which the start alone misses (with
L = λ + 2μ̂(θ), η λ_max(∂F/∂w) reached 1.34 along the path at n = 4). Measured over 3000 steps,
seeds 0–4: η λ_max(∂F/∂w) ≤ 0.74 at n = 4, ≤ 0.60 at n = 16, ≤ 0.57 at n = 64 (≤ 0.70 with
10 classes × 1 shot or 2 classes × 20 shots), so every step contracts near w*, and
‖F‖ ≤ 1e-10 after 140–280 steps. Option ``momentum`` = γ > 0 makes it heavy ball,
v ← γv − η∇_w f, w ← w + v, with state (w, v) from (θ, 0) (the solver ``reversible`` needs).

Optimality: F(θ, w) = ∇L_S(w) + λ(w − θ), ∂F/∂w = ∇²L_S(w) + λI, ∂F/∂θ = −λI. The Hessian of a
tanh MLP's cross-entropy is indefinite: its smallest eigenvalue (float64, the dense Hessian from
dim w products; seeds 0–4) is down to −2.21 / −1.52 / −1.30 at θ and −0.94 / −0.92 / −0.60 at w*
for n = 4 / 16 / 64. λ (option ``lam``) must exceed that, with room: the default λ = 2 leaves
λ_min(∂F/∂w) ≥ 1.06 / 1.08 / 1.39 at w* (≥ 0.93 with 10 classes × 1 shot at n = 16), so
``jacobian_structure`` is "spd" and CG applies. λ = 1 left 0.33 at w* (n = 4), ∂F/∂w indefinite
at θ for 3 of the 5 seeds (down to −1.21), and iterates twice as far from θ, whose curvature
outgrows the step rule (η λ_max up to 1.12; up to 750 steps to ‖F‖ ≤ 1e-10). A λ too small for a
given instance is reported on IFT records (``ift_warnings``: λ_min(∂F/∂w) ≤ 0 at w_K).

Outer loss: ℓ(w) = L_Q(w), the query cross-entropy at x = w_K — not the inner objective (its
data differ, DESIGN.md's envelope trap), and tanh makes T nonlinear in w.

By the IFT, dw*/dθ = λ(∇²L_S(w*) + λI)⁻¹, so the meta-gradient is

    dℓ/dθ = λ (∇²L_S(w*) + λI)⁻¹ ∇L_Q(w*),

iMAML's implicit meta-gradient (which the paper approximates by CG).

References (float64 numpy, no AD framework; gradient and Hessian-vector products of the MLP
cross-entropy written by hand, the latter by Pearlmutter's R-operator):

* ``k_step``: the exact gradient of θ ↦ ℓ(w_K(θ)) by a hand-written adjoint sweep over the
  trajectory (kept as every ⌈√K⌉-th state, each segment recomputed for the sweep):
  ā ← ∇L_Q(w_K), b̄ ← 0; for k = K−1…0: t = ā + b̄, ḡ += ηλ t, ā ← ā − η(∇²L_S(w_k) + λI)t,
  b̄ ← γt; finally ḡ += ā (w₀ = θ).
* ``converged``: w* by the solver itself to ‖F‖ ≤ 1e-6 then Newton to ‖F‖ ≤ 1e-12, then
  λ(∇²L_S(w*) + λI)⁻¹∇L_Q(w*). The Newton and adjoint systems are solved densely (Hessian from
  dim w Hessian-vector products) up to dim w = 1500, by conjugate gradients on
  Hessian-vector products (relative residual 1e-14) above.

Forward mode costs dim θ = dim x tangent directions pushed through K steps here, each step
Θ(dim θ) per direction: ``forward`` and ``forward-batched`` are refused above dim θ = 20000
(n ≥ 286 with 5 classes), where one gradient takes minutes at K = 10 and the batched tangents
take 13–16 GB (``FORWARD_MAX_DIM``, ``size_reason``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from problems.base import Instance, MomentumDescent, Problem, ReferenceKind
from suite.plugin.options import Option

FEATURES = 64
#: dim θ above which forward mode is refused (``size_reason``). Both forms push dim θ tangent
#: directions through K steps of Θ(dim θ) work each: Θ(dim θ² K) time. Measured at dim θ = 1125,
#: K = 30: ``forward`` 0.55 s in JAX (0.49 ms a sweep) and 27 s in torch (eager, 0.8 ms a step),
#: ``forward-batched`` 0.48 s in JAX; at dim θ = 2245, 2.8 s. At dim θ = 20000 one JAX
#: gradient takes ≈ 1 min at K = 10 and ≈ 10 min at K = 100, so a point (warm-up, repeats,
#: counting pass) cannot finish inside the default 300 s timeout at any K worth measuring, torch
#: still less. ``forward-batched`` also keeps dim θ × dim x tangent blocks: peak 41 / 164 MB at
#: dim θ = 1125 / 2245 in JAX (51 / 202 MB torch), ≈ 32–40 B·dim θ², 13–16 GB at 20000.
FORWARD_MAX_DIM = {"forward": 20000, "forward-batched": 20000}
#: dim w up to which the converged reference solves its linear systems densely
DENSE_MAX_DIM = 1500
#: dim w up to which IFT records are checked for an indefinite ∂F/∂w (``ift_warnings``)
EIGEN_CHECK_MAX_DIM = 20000


def dim_theta(n: int, classes: int) -> int:
    """dim θ = dim w of the 64 → n → c MLP."""
    return FEATURES * n + n + classes * n + classes


class ImplicitMAML(MomentumDescent, Problem):
    name = "imaml"
    title = "Implicit MAML: meta-gradient of a proximal few-shot adaptation of an MLP (digits)"
    size_meaning = ("n = hidden width of the MLP 64 → n (tanh) → c; dim θ = dim x = "
                    "64n + n + cn + c (c = classes, 5: 70n + 5)")
    jacobian_structure = "spd"
    preload = ("sklearn.datasets",)  # the digits; importing scikit-learn costs 1.4 s
    #: support + query ≤ 174, the rarest digit's count
    options = (
        Option("classes", int, 5, "classes c of the few-shot episode", minimum=2, maximum=10),
        Option("support", int, 5, "support (training) examples k per class", minimum=1,
               maximum=87),
        Option("query", int, 15, "query (outer-loss) examples q per class", minimum=1,
               maximum=87),
        Option("lam", float, 2.0, "proximal strength λ of the inner problem (∂F/∂w = "
               "∇²L_S + λI; the default keeps it positive definite at w*, measured at "
               "n = 4–64)", minimum=0.0, exclusive_minimum=True),
        Option("momentum", float, 0.0, "heavy-ball momentum γ of the inner solver "
               "(0: plain gradient descent; > 0: state (w, v), needed by reversible)",
               minimum=0.0, maximum=0.99),
    )

    # ---- instance -----------------------------------------------------------------------
    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> Instance:
        from sklearn.datasets import load_digits

        rng = np.random.default_rng(seed)
        c = int(options.get("classes", 5))
        k, q = int(options.get("support", 5)), int(options.get("query", 15))
        digits = load_digits()
        images, labels = digits.data / 16.0, digits.target
        chosen = rng.choice(10, size=c, replace=False)
        support, query = [], []
        for j, label in enumerate(chosen):
            rows = rng.choice(np.flatnonzero(labels == label), size=k + q, replace=False)
            support += [(r, j) for r in rows[:k]]
            query += [(r, j) for r in rows[k:]]

        def episode(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
            rows, ys = zip(*pairs, strict=True)
            return images[list(rows)], np.eye(c)[list(ys)]

        X_s, Y_s = episode(support)
        X_q, Y_q = episode(query)
        theta = np.concatenate([
            (rng.standard_normal((n, FEATURES)) * np.sqrt(2.0 / (FEATURES + n))).ravel(),
            np.zeros(n),
            (rng.standard_normal((c, n)) * np.sqrt(2.0 / (n + c))).ravel(),
            np.zeros(c)])
        consts = {"hidden": n, "classes": c, "lam": float(options.get("lam", 2.0)),
                  "momentum": float(options.get("momentum", 0.0)), "lr": 0.0}
        inst = Instance(theta=theta, arrays={"X_s": X_s, "Y_s": Y_s, "X_q": X_q, "Y_q": Y_q},
                        consts=consts)
        # curvature at the start and at the first-order estimate of w*, the minimiser
        # θ − ∇L_S(θ)/λ of the linearised inner objective
        d = self._data(inst)
        ahead = theta - self.cross_entropy_grad(np, d, theta, X_s, Y_s) / consts["lam"]
        consts["lr"] = 1.0 / (2.0 * max(self.curvature(inst, theta), self.curvature(inst, ahead))
                              + consts["lam"])
        return inst

    # ---- the math (namespace-generic) ---------------------------------------------------
    @staticmethod
    def _unpack(xp: Any, d: Mapping[str, Any], w: Any) -> tuple[Any, Any, Any, Any]:
        n, c = d["hidden"], d["classes"]
        i1, i2, i3 = n * FEATURES, n * FEATURES + n, n * FEATURES + n + c * n
        return (xp.reshape(w[:i1], (n, FEATURES)), w[i1:i2],
                xp.reshape(w[i2:i3], (c, n)), w[i3:])

    @staticmethod
    def _log_softmax(xp: Any, Z: Any) -> Any:
        """log softmax by rows, the row maximum subtracted first (no overflow)."""
        shifted = Z - xp.max(Z, axis=1, keepdims=True)
        return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))

    def _forward(self, xp: Any, d: Mapping[str, Any], w: Any, X: Any) -> tuple[Any, Any]:
        W1, b1, W2, b2 = self._unpack(xp, d, w)
        hidden = xp.tanh(X @ W1.T + b1)
        return hidden, hidden @ W2.T + b2

    def cross_entropy(self, xp: Any, d: Mapping[str, Any], w: Any, X: Any, Y: Any) -> Any:
        """Mean softmax cross-entropy of the MLP w on (X, one-hot Y)."""
        _, Z = self._forward(xp, d, w, X)
        return -xp.sum(Y * self._log_softmax(xp, Z)) / X.shape[0]

    def cross_entropy_grad(self, xp: Any, d: Mapping[str, Any], w: Any, X: Any, Y: Any) -> Any:
        """∇_w of ``cross_entropy``: backpropagation written out."""
        W2 = self._unpack(xp, d, w)[2]
        hidden, Z = self._forward(xp, d, w, X)
        dZ = (xp.exp(self._log_softmax(xp, Z)) - Y) / X.shape[0]
        dA = (dZ @ W2) * (1.0 - hidden * hidden)
        return xp.concat([
            xp.reshape(dA.T @ X, (-1,)), xp.sum(dA, axis=0),
            xp.reshape(dZ.T @ hidden, (-1,)), xp.sum(dZ, axis=0)])

    def init(self, xp: Any, d: Mapping[str, Any], theta: Any) -> Any:
        w = theta + 0.0  # w₀ = θ (a new array: a state must not alias θ)
        return (w, xp.zeros_like(theta)) if d["momentum"] > 0 else w

    def inner_gradient(self, xp: Any, d: Mapping[str, Any], w: Any, theta: Any) -> Any:
        return self.cross_entropy_grad(xp, d, w, d["X_s"], d["Y_s"]) + d["lam"] * (w - theta)

    def loss(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        return self.cross_entropy(xp, d, x, d["X_q"], d["Y_q"])

    # ---- float64 numpy: Hessian-vector products and references ---------------------------
    @staticmethod
    def _data(inst: Instance) -> dict[str, Any]:
        return {**inst.arrays, **inst.consts}

    def cross_entropy_hvp(self, d: Mapping[str, Any], w: np.ndarray, V: np.ndarray,
                          X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """∇²_w (mean cross-entropy on X, Y) · V for V of shape (dim w,) or (r, dim w): the
        R-operator (forward-over-reverse, Pearlmutter 1994) of ``cross_entropy_grad``, exact."""
        single = V.ndim == 1
        V = np.atleast_2d(V)
        W1, _, W2, _ = self._unpack(np, d, w)
        n, c, m = d["hidden"], d["classes"], X.shape[0]
        r = V.shape[0]
        V1, vb1, V2, vb2 = (np.reshape(V[:, :n * FEATURES], (r, n, FEATURES)),
                            V[:, n * FEATURES:n * FEATURES + n],
                            np.reshape(V[:, n * FEATURES + n:-c], (r, c, n)), V[:, -c:])
        hidden, Z = self._forward(np, d, w, X)
        S = 1.0 - hidden * hidden                                     # tanh′
        P = np.exp(self._log_softmax(np, Z))
        dZ = (P - Y) / m
        dH = dZ @ W2
        # forward tangents R(·) along V
        RH = S * (np.einsum("md,rnd->rmn", X, V1) + vb1[:, None, :])
        RZ = (np.einsum("rmn,cn->rmc", RH, W2) + np.einsum("mn,rcn->rmc", hidden, V2)
              + vb2[:, None, :])
        RdZ = P * (RZ - np.sum(P * RZ, axis=-1, keepdims=True)) / m
        # tangents of the backward pass
        RdH = np.einsum("rmc,cn->rmn", RdZ, W2) + np.einsum("mc,rcn->rmn", dZ, V2)
        RdA = RdH * S - 2.0 * dH * hidden * RH
        out = np.concatenate([
            np.einsum("rmn,md->rnd", RdA, X).reshape(r, -1), RdA.sum(axis=1),
            (np.einsum("rmc,mn->rcn", RdZ, hidden)
             + np.einsum("mc,rmn->rcn", dZ, RH)).reshape(r, -1), RdZ.sum(axis=1)], axis=1)
        return out[0] if single else out

    def jacobian_vec(self, d: Mapping[str, Any], w: np.ndarray, V: np.ndarray) -> np.ndarray:
        """∂F/∂w · V = (∇²L_S(w) + λI) V."""
        return self.cross_entropy_hvp(d, w, V, d["X_s"], d["Y_s"]) + d["lam"] * V

    def jacobian(self, d: Mapping[str, Any], w: np.ndarray) -> np.ndarray:
        """∂F/∂w = ∇²L_S(w) + λI, dense (dim w Hessian-vector products at once)."""
        J = self.jacobian_vec(d, w, np.eye(w.size))
        return 0.5 * (J + J.T)

    def curvature(self, inst: Instance, w: np.ndarray, iterations: int = 50) -> float:
        """‖∇²L_S(w)‖₂ ≥ its largest eigenvalue, by power iteration from a fixed vector (‖Hv‖
        of the unit iterate: the magnitude, so an indefinite H whose most negative eigenvalue
        dominates cannot make the estimate small)."""
        d = self._data(inst)
        v = np.random.default_rng(0).standard_normal(w.size)
        value = 0.0
        for _ in range(iterations):
            v /= np.linalg.norm(v)
            v = self.cross_entropy_hvp(d, w, v, d["X_s"], d["Y_s"])
            value = float(np.linalg.norm(v))
        return max(value, 1e-3)

    def _solve(self, d: Mapping[str, Any], w: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """(∇²L_S(w) + λI)⁻¹ rhs: dense up to ``DENSE_MAX_DIM``, else conjugate gradients."""
        if w.size <= DENSE_MAX_DIM:
            return np.linalg.solve(self.jacobian(d, w), rhs)
        x = np.zeros_like(rhs)
        r = rhs.copy()
        p = r.copy()
        rr = r @ r
        target = 1e-14 * np.linalg.norm(rhs)
        for _ in range(10 * w.size):
            if np.sqrt(rr) <= target:
                return x
            Jp = self.jacobian_vec(d, w, p)
            alpha = rr / (p @ Jp)
            x += alpha * p
            r -= alpha * Jp
            rr, rr_old = r @ r, rr
            p = r + (rr / rr_old) * p
        raise RuntimeError("imaml reference: CG did not reach relative residual 1e-14")

    def solve(self, inst: Instance, tol: float = 1e-12, max_steps: int = 200_000) -> np.ndarray:
        """w* the solver converges to: its own steps to ‖F‖ ≤ 1e-6, then Newton to ‖F‖ ≤ tol."""
        d, theta = self._data(inst), inst.theta
        state = self.init(np, d, theta)
        for _ in range(max_steps):
            if np.linalg.norm(self.residual(np, d, self.solution(np, d, state, theta),
                                            theta)) <= 1e-6:
                break
            state = self.step(np, d, state, theta)
        w = self.solution(np, d, state, theta)
        for _ in range(50):
            g = self.inner_gradient(np, d, w, theta)
            if np.linalg.norm(g) <= tol:
                return w
            w = w - self._solve(d, w, g)
        raise RuntimeError(f"imaml reference: Newton did not reach ‖F‖ ≤ {tol}")

    def reference_gradient(self, instance: Instance, K: int, kind: ReferenceKind) -> np.ndarray:
        d, theta = self._data(instance), instance.theta
        lam = d["lam"]
        if kind == "converged":
            w = self.solve(instance)
            return lam * self._solve(d, w, self.cross_entropy_grad(np, d, w, d["X_q"], d["Y_q"]))
        lr, gamma = self.descent_rates(instance.consts)
        # the trajectory is kept as every S-th state (S = ⌈√K⌉) and each segment recomputed in
        # turn for the adjoint sweep: 2√K states in memory instead of K (at n = 16384, K = 300:
        # 35 states of 9 MB, not 2.8 GB — the reference runs inside the point's memory cap)
        segment = max(1, math.isqrt(K - 1) + 1) if K > 0 else 1
        state = self.init(np, d, theta)
        checkpoints = []
        for k in range(K):
            if k % segment == 0:
                checkpoints.append(state)
            state = self.step(np, d, state, theta)
        w_K = self.solution(np, d, state, theta)
        # adjoint of v⁺ = γv − η(∇L_S(w) + λ(w − θ)), w⁺ = w + v⁺ (γ = 0: v-adjoint stays 0)
        adj_w = self.cross_entropy_grad(np, d, w_K, d["X_q"], d["Y_q"])
        adj_v = np.zeros_like(theta)
        grad = np.zeros_like(theta)
        for c in range(len(checkpoints) - 1, -1, -1):
            state, ws = checkpoints[c], []
            for _ in range(min(segment, K - c * segment)):
                ws.append(self.solution(np, d, state, theta))
                state = self.step(np, d, state, theta)
            for w_k in reversed(ws):
                total = adj_w + adj_v
                grad += lr * lam * total                     # ∂T/∂θ = ηλI
                adj_w = adj_w - lr * self.jacobian_vec(d, w_k, total)
                adj_v = gamma * total
        return grad + adj_w  # w₀ = θ (and v₀ = 0)

    # ---- refusals and warnings -------------------------------------------------------------
    def size_reason(self, strategy: str, framework: str, n: int,
                    options: Mapping[str, Any]) -> str | None:
        limit = FORWARD_MAX_DIM.get(strategy)
        if limit is None:
            return None
        c = int(options.get("classes", 5))
        p = dim_theta(n, c)
        if p <= limit:
            return None
        largest = (limit - c) // (FEATURES + 1 + c)
        cost = ("dim θ sequential JVP sweeps of K steps, each Θ(dim θ): Θ(dim θ²·K) time"
                if strategy == "forward" else
                f"Θ(dim θ²·K) time and ≈ 32–40 B·dim θ² of tangent blocks "
                f"({32 * p * p / 2**30:.0f}–{40 * p * p / 2**30:.0f} GiB here)")
        return (f"{strategy} at imaml n = {n} has dim θ = {p} > {limit}: it needs {cost}; run "
                f"it at n ≤ {largest} (classes = {c}), or use a reverse-mode or IFT strategy")

    def ift_warnings(self, instance: Instance, x: np.ndarray) -> list[str]:
        """CG and the IFT need ∂F/∂w = ∇²L_S + λI positive definite at w_K (λ too small for
        this tanh network's negative curvature breaks it). Checked up to dim w =
        ``EIGEN_CHECK_MAX_DIM``: above, ARPACK's smallest eigenvalue costs minutes (> 290 s at
        dim w = 1.15 M, n = 16384), more than the point it would annotate."""
        d = self._data(instance)
        if np.size(x) > EIGEN_CHECK_MAX_DIM:
            return []
        smallest = self.smallest_eigenvalue(d, np.asarray(x, dtype=np.float64))
        if smallest <= 0:
            return [f"imaml: ∂F/∂w = ∇²L_S + λI has eigenvalue {smallest:.2e} ≤ 0 at w_K "
                    f"(λ = {d['lam']:g} does not cover the negative curvature): the IFT's "
                    "system is indefinite, CG does not apply"]
        return []

    def smallest_eigenvalue(self, d: Mapping[str, Any], w: np.ndarray) -> float:
        """λ_min(∇²L_S(w) + λI): dense up to ``DENSE_MAX_DIM``, else Lanczos (ARPACK)."""
        if w.size <= DENSE_MAX_DIM:
            return float(np.linalg.eigvalsh(self.jacobian(d, w))[0])
        from scipy.sparse.linalg import LinearOperator, eigsh

        op = LinearOperator((w.size, w.size), dtype=np.float64,
                            matvec=lambda v: self.jacobian_vec(d, w, np.ravel(v)))
        v0 = np.random.default_rng(0).standard_normal(w.size)
        return float(eigsh(op, k=1, which="SA", v0=v0, tol=1e-6,
                           return_eigenvectors=False)[0])
