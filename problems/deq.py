"""``deq``: a deep-equilibrium (DEQ) layer, x* = tanh(W x* + U u + b), differentiated to θ.

For an input batch u ∈ ℝ^{B×d} (rows u_b), the layer's output is the fixed point of

    T(x, θ)_b = tanh(W x_b + U u_b + b),   b = 1…B,      θ = (W, U, b),

with W ∈ ℝ^{n×n}, U ∈ ℝ^{n×d}, b ∈ ℝⁿ, flattened row-major and concatenated in that order:
dim θ = n² + n·d + n. The state x ∈ ℝ^{B·n} is the batch's hidden states, batch-major
(x = [x_1; …; x_B]). W is drawn Gaussian and scaled to the spectral norm ‖W‖₂ = ``spectral_norm``
(default 0.9) at generation; since |tanh′| ≤ 1, ‖∂T/∂x‖₂ ≤ ‖W‖₂ < 1 everywhere: T is a
contraction, the fixed point is unique and every solver below converges from x₀ = 0.

Solvers (option ``method``; not ``solver``, which qp declares with other choices):

* ``picard`` (default): the plain fixed-point iteration x ← T(x, θ). State s = x.
* ``anderson``: Anderson acceleration with memory m (option ``memory``, default 5; the DEQ
  literature's default solver). State s = (x, X, Φ, v): the last m iterates X = (x_i) and their
  images Φ = (T(x_i)), newest first, and v ∈ {0, 1}^m marking the filled slots. One step
  evaluates T once, pushes (x, T(x)) into the history, and mixes

      x⁺ = Σᵢ αᵢ T(xᵢ),   α = argmin ‖Σᵢ αᵢ gᵢ‖² + λ‖g₀‖²‖α‖²  s.t.  Σᵢ αᵢ = 1,   gᵢ = T(xᵢ) − xᵢ,

  i.e. α = M⁻¹v / (vᵀM⁻¹v) with M = GGᵀ + (λ‖g₀‖² + ε²)I (on the filled slots; λ = 1e-8, ε the
  dtype's machine epsilon, so M is never singular, even at an exact fixed point where G = 0):
  an m × m solve per step, written with differentiable array ops only, so unrolled reverse mode
  and forward mode run through it. Its first step (one filled slot) is a Picard step. Past
  convergence the weights are decided by rounding, but their derivative does not leak into
  the gradient: Σᵢ dαᵢ = 0 and the images T(xᵢ) coincide there, so Σᵢ dαᵢ T(xᵢ) ≈ 0 (the
  K-step gradient at K = 1000 equals the converged one to 1e-15, tested).

F(θ, x) = x − T(x, θ); ∂F/∂x = I − diag(1 − x²) W per batch element (block-diagonal over the
batch), not symmetric: ``ift-direct``, ``ift-gmres``, ``ift-neumann`` and ``ift-jfb`` apply
(α = 1: ρ(I − ∂F/∂x) = ρ(diag(1 − x²)W) ≤ ‖W‖₂ < 1, so the Neumann series is the fixed-point
iteration of the adjoint, and JFB — the method was made for DEQs — replaces (∂F/∂x)⁻¹ by I);
``ift-cg`` does not (not symmetric), nor ``reversible`` (not momentum descent). The IFT holds at
every fixed point (I − diag(1 − x²)W is invertible for a contraction).

Outer loss: a fixed linear readout R ∈ ℝ^{c×n} (c = ``READOUT`` = 4 outputs) and targets
Y ∈ ℝ^{B×c}, both from the seed,

    ℓ(x) = 1/(2B) Σ_b ‖R x_b − y_b‖²,

which is no inner objective (a DEQ has none: DESIGN.md's envelope trap cannot occur), and
reverse mode through T must keep each step's tanh output (the map is nonlinear in x: no
linear-map trap).

Data: W₀ ~ N(0, 1/n), W = spectral_norm · W₀/‖W₀‖₂; U ~ N(0, 1/d); b ~ N(0, 0.1²); u ~ N(0, I);
R ~ N(0, 1/n); Y ~ N(0, I). With the default spectral norm 0.9 the Gaussian W's spectral
radius is about half its norm: at n = 8 Picard reaches ‖F‖ ≤ 1e-10·‖F(x₀)‖ in 31 steps and
Anderson (m = 5) in 18 (exact counts, tested), so K = 10 is short of the fixed point and
K ≥ 100 is at it to rounding.

References (float64 numpy, no AD framework):

* ``k_step``, Picard: a hand-written adjoint sweep over the stored trajectory:
  a_K = ∇ℓ(x_K); for k = K−1…0: ζ_b = (1 − x_{k+1,b}²) ⊙ a_{k+1,b}, ∂W += Σ_b ζ_b x_{k,b}ᵀ,
  ∂U += Σ_b ζ_b u_bᵀ, ∂b += Σ_b ζ_b, a_{k,b} = Wᵀζ_b.
  Anderson: complex-step derivatives of the same solver code run in complex128 numpy, all
  dim θ directions at once (a leading axis), exact to rounding.
* ``converged``: x* by Picard, then Newton per batch element to ‖F‖ ≤ 1e-14·√(B·n), then
  λ_b = (I − diag(s_b)W)⁻ᵀ ∇_{x_b}ℓ with s_b = 1 − x*_b², ζ_b = s_b ⊙ λ_b and
  dℓ/dW = Σ_b ζ_b x*_bᵀ, dℓ/dU = Σ_b ζ_b u_bᵀ, dℓ/db = Σ_b ζ_b.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from problems.base import Instance, Problem, ReferenceKind, numpy_namespace
from suite.plugin.errors import ReferenceUnavailable
from suite.plugin.options import Option

#: outputs of the fixed linear readout R ∈ ℝ^{c×n}
READOUT = 4
#: Anderson's Tikhonov weight, relative to ‖g₀‖² (scale-free: the mixing does not change with
#: the residual's size; an absolute weight would swamp GGᵀ as the residuals shrink and turn
#: the weights uniform, a plain average of the last m images, long before convergence)
ANDERSON_REG = 1e-8
COMPLEX_STEP = 1e-30
#: θ entries above which Anderson's k-step reference (one complex-step direction per entry,
#: each a K-step solve of the whole batch) is not computed: at width 64 (dim θ 4 416) it takes
#: seconds; at width 256 (66 816) its dim θ × dim x complex numbers would be 33 GiB
COMPLEX_STEP_MAX_DIRECTIONS = 5000


class DeepEquilibrium(Problem):
    name = "deq"
    title = "Deep-equilibrium layer x* = tanh(Wx* + Uu + b), by fixed-point iteration or Anderson"
    size_meaning = ("n = hidden width (x_b ∈ ℝⁿ); dim x = batch·n; "
                    "dim θ = n² + n·d + n for θ = (W, U, b), d = option inputs")
    jacobian_structure = "general"
    options = (
        Option("spectral_norm", float, 0.9, "‖W‖₂ at generation (< 1: T is a contraction)",
               minimum=0.0, maximum=0.99, exclusive_minimum=True),
        Option("method", str, "picard", "fixed-point solver: plain iteration or Anderson "
               "acceleration", choices=("picard", "anderson")),
        Option("memory", int, 5, "Anderson's history length m (method=anderson)", minimum=1,
               maximum=50),
        Option("batch", int, 8, "inputs u_b solved together (B)", minimum=1),
        Option("inputs", int, 4, "input dimension d (U ∈ ℝ^{n×d})", minimum=1),
    )

    # ---- instance -----------------------------------------------------------------------
    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> Instance:
        rng = np.random.default_rng(seed)
        B, d = int(options.get("batch", 8)), int(options.get("inputs", 4))
        W0 = rng.standard_normal((n, n)) / np.sqrt(n)
        W = float(options.get("spectral_norm", 0.9)) * W0 / np.linalg.norm(W0, 2)
        U = rng.standard_normal((n, d)) / np.sqrt(d)
        b = 0.1 * rng.standard_normal(n)
        u = rng.standard_normal((B, d))
        R = rng.standard_normal((READOUT, n)) / np.sqrt(n)
        Y = rng.standard_normal((B, READOUT))
        theta = np.concatenate([W.ravel(), U.ravel(), b])
        return Instance(
            theta=theta, arrays={"u": u, "R": R, "Y": Y, "x0": np.zeros(B * n)},
            named={"W": W, "U": U, "b": b},
            consts={"n": n, "d": d, "B": B, "method": options.get("method", "picard"),
                    "memory": int(options.get("memory", 5))})

    def split_theta(self, xp: Any, d: Mapping[str, Any], theta: Any) -> tuple[Any, Any, Any]:
        """(W, U, b) from θ; a leading axis of θ (complex-step directions) is kept."""
        n, dd = d["n"], d["d"]
        lead = tuple(theta.shape[:-1])
        W = xp.reshape(theta[..., : n * n], (*lead, n, n))
        U = xp.reshape(theta[..., n * n: n * n + n * dd], (*lead, n, dd))
        return W, U, theta[..., n * n + n * dd:]

    # ---- the map and the solvers (namespace-generic; leading axes allowed) ---------------
    def layer(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        """T(x, θ) = tanh(W x_b + U u_b + b) for every batch row, x flat (…, B·n)."""
        W, U, b = self.split_theta(xp, d, theta)
        lead = tuple(x.shape[:-1])
        X = xp.reshape(x, (*lead, d["B"], d["n"]))
        Z = X @ xp.matrix_transpose(W) + d["u"] @ xp.matrix_transpose(U) + b[..., None, :]
        return xp.reshape(xp.tanh(Z), (*lead, d["B"] * d["n"]))

    def init(self, xp: Any, d: Mapping[str, Any], theta: Any) -> Any:
        # x₀ = 0 from the instance (it lives on the framework's device); the zeros of θ's shape
        # give it θ's leading axes (complex-step directions) without a dependence on θ
        x = d["x0"] + xp.zeros_like(theta[..., :1])
        if d["method"] == "picard":
            return x
        history = xp.stack([x] * d["memory"], axis=-2)
        return x, history, history, xp.zeros_like(history[..., 0])

    def step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        if d["method"] == "picard":
            return self.layer(xp, d, state, theta)
        return self._anderson_step(xp, d, state, theta)

    def _anderson_step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        x, X, Phi, valid = state
        image = self.layer(xp, d, x, theta)
        X = xp.concat([x[..., None, :], X[..., :-1, :]], axis=-2)
        Phi = xp.concat([image[..., None, :], Phi[..., :-1, :]], axis=-2)
        valid = xp.concat([xp.ones_like(valid[..., :1]), valid[..., :-1]], axis=-1)
        G = Phi - X  # rows of unfilled slots are 0 - 0
        g0_sq = xp.sum(G[..., 0, :] * G[..., 0, :], axis=-1)  # no abs: complex-step safe
        # identity built from the state (no device argument): slot index i = cumsum(1) − 1
        slot = xp.cumsum(xp.ones_like(valid), axis=-1)
        eye = xp.astype(slot[..., :, None] == slot[..., None, :], x.dtype)
        shift = ANDERSON_REG * g0_sq + float(xp.finfo(x.dtype).eps) ** 2
        # (1 − v) and the shift added apart: 1 + shift − 1 would round the shift away
        M = (G @ xp.matrix_transpose(G) + shift[..., None, None] * eye
             + (1.0 - valid[..., None, :]) * eye)
        z = xp.linalg.solve(M, valid[..., :, None])[..., 0]
        alpha = z / xp.sum(z, axis=-1, keepdims=True)
        return xp.sum(alpha[..., :, None] * Phi, axis=-2), X, Phi, valid

    def solution(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        return state if d["method"] == "picard" else state[0]

    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        return x - self.layer(xp, d, x, theta)

    def loss(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        lead = tuple(x.shape[:-1])
        X = xp.reshape(x, (*lead, d["B"], d["n"]))
        E = X @ xp.matrix_transpose(d["R"]) - d["Y"]
        return 0.5 * xp.sum(xp.reshape(E * E, (*lead, -1)), axis=-1) / d["B"]

    # ---- block structure: batch row b of F reads x_b only ---------------------------------
    def blocks(self, consts: Mapping[str, Any]) -> int | None:
        return int(consts["B"])

    def to_blocks(self, xp: Any, consts: Mapping[str, Any], v: Any) -> Any:
        """x (…, B·n), batch-major → (…, B, n)."""
        return xp.reshape(v, (*tuple(v.shape[:-1]), consts["B"], consts["n"]))

    def from_blocks(self, xp: Any, consts: Mapping[str, Any], V: Any) -> Any:
        return xp.reshape(V, (*tuple(V.shape[:-2]), consts["B"] * consts["n"]))

    def neumann_alpha(self, consts: Mapping[str, Any]) -> float | None:
        return 1.0  # ρ(I − ∂F/∂x) = ρ(diag(1 − x²) W) ≤ ‖W‖₂ < 1

    # ---- float64 references --------------------------------------------------------------
    def _data(self, inst: Instance) -> dict[str, Any]:
        return {**inst.arrays, **inst.consts}

    def _loss_grad(self, d: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
        """∇ₓℓ as (B, n): (R x_b − y_b)ᵀR / B."""
        X = x.reshape(d["B"], d["n"])
        return (X @ d["R"].T - d["Y"]) @ d["R"] / d["B"]

    def _theta_grad(self, d: Mapping[str, Any], zeta: np.ndarray,
                    X_in: np.ndarray) -> np.ndarray:
        """(∂T/∂θ)ᵀ applied to pre-activation adjoints ζ (B, n) at inputs X_in (B, n)."""
        return np.concatenate([(zeta.T @ X_in).ravel(), (zeta.T @ d["u"]).ravel(),
                               zeta.sum(0)])

    def solve(self, inst: Instance, tol: float = 1e-14, max_picard: int = 100_000) -> np.ndarray:
        """x*: Picard to ‖F‖ ≤ 1e-8·√N, then Newton per batch element to ‖F‖ ≤ tol·√N."""
        d, theta = self._data(inst), inst.theta
        N = d["B"] * d["n"]
        x = np.zeros(N)
        for _ in range(max_picard):
            if np.linalg.norm(self.residual(np, d, x, theta)) <= 1e-8 * np.sqrt(N):
                break
            x = self.layer(np, d, x, theta)
        W = self.split_theta(np, d, theta)[0]
        eye = np.eye(d["n"])
        for _ in range(20):
            F = self.residual(np, d, x, theta)
            if np.linalg.norm(F) <= tol * np.sqrt(N):
                return x
            S = 1.0 - self.layer(np, d, x, theta).reshape(d["B"], d["n"]) ** 2
            jac = eye - S[:, :, None] * W  # (B, n, n): I − diag(s_b) W
            x = x - np.linalg.solve(jac, F.reshape(d["B"], d["n"], 1)).ravel()
        raise RuntimeError(f"deq reference: Newton did not reach ‖F‖ ≤ {tol}·√N")

    def reference_gradient(self, instance: Instance, K: int, kind: ReferenceKind) -> np.ndarray:
        d, theta = self._data(instance), instance.theta
        B, n = d["B"], d["n"]
        W = self.split_theta(np, d, theta)[0]
        if kind == "converged":
            x = self.solve(instance)
            X = x.reshape(B, n)
            S = 1.0 - X ** 2
            jac_t = np.eye(n) - (S[:, :, None] * W).transpose(0, 2, 1)
            lam = np.linalg.solve(jac_t, self._loss_grad(d, x)[:, :, None])[:, :, 0]
            return self._theta_grad(d, S * lam, X)
        if d["method"] == "anderson":
            if theta.size > COMPLEX_STEP_MAX_DIRECTIONS:
                raise ReferenceUnavailable(
                    f"Anderson's k-step reference is a complex step per θ entry: {theta.size} "
                    f"of them (> {COMPLEX_STEP_MAX_DIRECTIONS}); the converged reference stands")
            return self._complex_step_k_step(instance, K)
        trajectory = [np.zeros(B * n)]
        for _ in range(K):
            trajectory.append(self.layer(np, d, trajectory[-1], theta))
        adj = self._loss_grad(d, trajectory[-1])
        grad = np.zeros_like(theta)
        for k in range(K - 1, -1, -1):
            zeta = (1.0 - trajectory[k + 1].reshape(B, n) ** 2) * adj
            grad += self._theta_grad(d, zeta, trajectory[k].reshape(B, n))
            adj = zeta @ W
        return grad

    def _complex_step_k_step(self, instance: Instance, K: int) -> np.ndarray:
        """dℓ(x_K)/dθ_j = Im ℓ(x_K(θ + i h e_j))/h for every j at once (leading axis j)."""
        d, theta = self._data(instance), instance.theta
        npx = numpy_namespace()  # complex128 arrays through the same namespace
        thetas = theta[None, :] + 1j * COMPLEX_STEP * np.eye(theta.size)
        state = self.init(npx, d, thetas)
        for _ in range(K):
            state = self.step(npx, d, state, thetas)
        return np.imag(self.loss(npx, d, self.solution(npx, d, state, thetas), thetas)) \
            / COMPLEX_STEP
