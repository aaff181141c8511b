"""``savi``: semi-amortised variational inference (report Sec. 7; Kim et al. 2018).

Generative model (Dai et al. 2019): z ~ N(0, I_d), x | z ~ N(μ_θ(z), γI_D) with the decoder
μ_θ(z) = W₂ tanh(W₁z + b₁) + b₂ (hidden width H). For a batch X ∈ ℝ^{B×D} the variational
parameters λ = (μ_b, ρ_b = log σ_b)_{b≤B} ∈ ℝ^{2dB} start at an amortised guess λ₀ = g_φ(X)
(a linear encoder φ) and are refined by K steps of heavy-ball descent (SA-VAE's inner loop),

    v ← γ_m v − η ∇_λ f(λ, θ),   λ ← λ + v,      (λ, v)₀ = (g_φ(X), 0),

on the negative reparameterised ELBO with noise ε ∈ ℝ^{B×d} fixed by the seed,

    f(λ, θ) = Σ_b ‖x_b − μ_θ(z_b)‖²/(2γ) + KL(q_λb ‖ N(0, I)),   z_b = μ_b + exp(ρ_b) ⊙ ε_b,
    KL = ½ Σ_j (μ_bj² + e^{2ρ_bj} − 2ρ_bj − 1)

(the reconstruction term sampled, the KL term analytic, as in Kingma & Welling's estimator;
constants dropped). F(θ, λ) = ∇_λ f, whose Jacobian, the Hessian, is block-diagonal over the
batch and positive definite at the minimum the solver reaches: ``ift-cg`` applies.

Outer loss: ℓ(λ, θ) = the same negative ELBO estimated with an *independent* draw ε′ — not the
inner objective, or the implicit term would vanish at the optimum (DESIGN.md's second trap).

θ (option ``wrt``): ``decoder`` (default) — θ = (W₁, b₁, W₂, b₂) flattened, dim θ =
H·d + H + D·H + D; or ``encoder`` — θ = φ = (E_μ, c_μ, E_ρ, c_ρ), with λ₀ = (X E_μᵀ + c_μ,
X E_ρᵀ + c_ρ). At an exact optimum λ* does not depend on λ₀, so the IFT gradient with respect
to the encoder is exactly zero while the unrolled one is not: ``grad_norm`` against K for
``wrt=encoder`` measures how much the encoder still learns through K refinement steps — the
question the report's Sec. 7 leaves open.

Sizes: n = latent dimension d. D = 64 (the 8×8 handwritten digits bundled with scikit-learn,
scaled to [0, 1]; option ``data=synthetic`` samples D = 64 observations from the model with a
random decoder instead), H = ``hidden`` (32), B = ``batch`` (8), γ = ``gamma`` (0.1),
γ_m = ``momentum`` (0.9); η = 1/L with L a power-iteration estimate of the Hessian's largest
eigenvalue at λ₀ (× 2 for safety).

References (float64 numpy, no AD framework): ∇_λ f and ∇_θ f are written by hand; the
second-order products the adjoint sweep needs — (∂∇_λf/∂λ)ᵀa and (∂∇_λf/∂θ)ᵀa = ∂(∇_θ f)/∂λ · a —
are complex-step derivatives of those hand-written gradients along a, Im ∇f(λ + i h a)/h, exact
to rounding. ``k_step``: the adjoint of the K heavy-ball steps over the stored trajectory.
``converged``: λ* by heavy ball then Newton (Hessian blocks by complex step) to ‖F‖ ≤ 1e-12,
then dℓ/dθ = ∇_θℓ − (∂∇_λf/∂θ)ᵀ H⁻¹∇_λℓ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from problems.base import Instance, MomentumDescent, Problem, ReferenceKind
from suite.plugin.options import Option

COMPLEX_STEP = 1e-30
DECODER = ("W1", "b1", "W2", "b2")
ENCODER = ("E_mu", "c_mu", "E_rho", "c_rho")


def _unflatten(xp: Any, flat: Any, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    out, i = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = xp.reshape(flat[i:i + size], shape)
        i += size
    return out


class SemiAmortisedVI(MomentumDescent, Problem):
    name = "savi"
    title = "Semi-amortised variational inference: K refinement steps of an amortised posterior"
    size_meaning = ("n = latent dimension d; dim x = dim λ = 2·d·batch; "
                    "dim θ = H·d + H + 64·H + 64 "
                    "(decoder) or 2·d·64 + 2·d (encoder)")
    jacobian_structure = "spd"
    preload = ("sklearn.datasets",)  # the digits; importing scikit-learn costs 1.4 s
    options = (
        Option("wrt", str, "decoder", "θ: the decoder's or the encoder's parameters",
               choices=("decoder", "encoder")),
        Option("data", str, "digits", "observations: scikit-learn's 8×8 digits or samples of "
               "the model", choices=("digits", "synthetic")),
        Option("batch", int, 8, "data points B refined together", minimum=1),
        Option("hidden", int, 32, "decoder hidden width H", minimum=1),
        Option("gamma", float, 0.1, "likelihood variance γ", minimum=0.0,
               exclusive_minimum=True),
        Option("momentum", float, 0.9, "heavy-ball momentum γ_m of the inner loop",
               minimum=0.0, maximum=0.99),
    )

    # ---- instance -----------------------------------------------------------------------
    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> Instance:
        rng = np.random.default_rng(seed)
        d, H, B = n, int(options.get("hidden", 32)), int(options.get("batch", 8))
        gamma = float(options.get("gamma", 0.1))
        D = 64

        def decoder() -> dict[str, np.ndarray]:
            return {"W1": rng.standard_normal((H, d)) / np.sqrt(d),
                    "b1": 0.1 * rng.standard_normal(H),
                    "W2": rng.standard_normal((D, H)) / np.sqrt(H),
                    "b2": 0.5 + 0.1 * rng.standard_normal(D)}

        if options.get("data", "digits") == "digits":
            from sklearn.datasets import load_digits

            images = load_digits().data / 16.0
            X = images[rng.choice(len(images), size=B, replace=False)]
        else:
            truth = decoder()
            Z = rng.standard_normal((B, d))
            X = np.tanh(Z @ truth["W1"].T + truth["b1"]) @ truth["W2"].T + truth["b2"]
            X = X + np.sqrt(gamma) * rng.standard_normal((B, D))
        dec = decoder()
        enc = {"E_mu": 0.1 * rng.standard_normal((d, D)) / np.sqrt(D),
               "c_mu": np.zeros(d),
               "E_rho": 0.1 * rng.standard_normal((d, D)) / np.sqrt(D),
               "c_rho": -1.0 + np.zeros(d)}
        eps, eps_outer = rng.standard_normal((B, d)), rng.standard_normal((B, d))
        wrt = options.get("wrt", "decoder")
        free, fixed = (dec, enc) if wrt == "decoder" else (enc, dec)
        theta = np.concatenate([free[k].ravel() for k in free])
        consts = {"gamma": gamma, "momentum": float(options.get("momentum", 0.9)),
                  "wrt": wrt, "B": B, "d": d, "H": H, "D": D, "lr": 0.0}
        inst = Instance(theta=theta, arrays={"X": X, "eps": eps, "eps_outer": eps_outer, **fixed},
                        consts=consts)
        consts["lr"] = 1.0 / (2.0 * self._curvature(inst))
        return inst

    def blocks(self, consts: Mapping[str, Any]) -> int | None:
        """Data point b owns λ_b = (μ_b, ρ_b), contiguous in λ, and F's rows ∇_{λ_b} f."""
        return int(consts["B"])

    def _shapes(self, d: Mapping[str, Any], which: tuple[str, ...]) -> dict[str, tuple]:
        dd, H, D = d["d"], d["H"], d["D"]
        table = {"W1": (H, dd), "b1": (H,), "W2": (D, H), "b2": (D,), "E_mu": (dd, D),
                 "c_mu": (dd,), "E_rho": (dd, D), "c_rho": (dd,)}
        return {k: table[k] for k in which}

    def _params(self, xp: Any, d: Mapping[str, Any], theta: Any) -> tuple[dict, dict]:
        """(decoder, encoder) parameters, one of them unpacked from θ."""
        if d["wrt"] == "decoder":
            return _unflatten(xp, theta, self._shapes(d, DECODER)), {k: d[k] for k in ENCODER}
        return {k: d[k] for k in DECODER}, _unflatten(xp, theta, self._shapes(d, ENCODER))

    # ---- the math (namespace-generic; numpy with complex numbers for references) --------
    def _objective_parts(self, xp: Any, d: Mapping[str, Any], lam: Any, dec: Mapping[str, Any],
                         eps: Any) -> tuple[Any, ...]:
        B, dd = d["B"], d["d"]
        L = xp.reshape(lam, (B, 2 * dd))
        mu, rho = L[:, :dd], L[:, dd:]
        sigma_eps = xp.exp(rho) * eps
        Z = mu + sigma_eps
        T = xp.tanh(Z @ dec["W1"].T + dec["b1"])
        R = d["X"] - (T @ dec["W2"].T + dec["b2"])
        return Z, T, R, rho, sigma_eps

    def _lambda_grad(self, xp: Any, d: Mapping[str, Any], lam: Any, dec: Mapping[str, Any],
                     eps: Any) -> Any:
        """∇_λ of the negative ELBO with noise eps."""
        _, T, R, rho, sigma_eps = self._objective_parts(xp, d, lam, dec, eps)
        mu = xp.reshape(lam, (d["B"], 2 * d["d"]))[:, : d["d"]]
        dZ = -((R @ dec["W2"]) * (1.0 - T * T)) @ dec["W1"] / d["gamma"]
        var = xp.exp(2.0 * rho)
        return xp.reshape(xp.concat([dZ + mu, dZ * sigma_eps + var - 1.0], axis=1), (-1,))

    def _objective(self, xp: Any, d: Mapping[str, Any], lam: Any, dec: Mapping[str, Any],
                   eps: Any) -> Any:
        _, _, R, rho, _ = self._objective_parts(xp, d, lam, dec, eps)
        mu = xp.reshape(lam, (d["B"], 2 * d["d"]))[:, : d["d"]]
        kl = 0.5 * xp.sum(mu * mu + xp.exp(2.0 * rho) - 2.0 * rho - 1.0)
        return xp.sum(R * R) / (2.0 * d["gamma"]) + kl

    def init(self, xp: Any, d: Mapping[str, Any], theta: Any) -> Any:
        _, enc = self._params(xp, d, theta)
        mu = d["X"] @ enc["E_mu"].T + enc["c_mu"]
        rho = d["X"] @ enc["E_rho"].T + enc["c_rho"]
        lam = xp.reshape(xp.concat([mu, rho], axis=1), (-1,))
        return (lam, xp.zeros_like(lam)) if d["momentum"] > 0 else lam

    def inner_gradient(self, xp: Any, d: Mapping[str, Any], w: Any, theta: Any) -> Any:
        dec, _ = self._params(xp, d, theta)
        return self._lambda_grad(xp, d, w, dec, d["eps"])

    def loss(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        dec, _ = self._params(xp, d, theta)
        return self._objective(xp, d, x, dec, d["eps_outer"])

    # ---- float64 references --------------------------------------------------------------
    def _data(self, inst: Instance) -> dict[str, Any]:
        return {**inst.arrays, **inst.consts}

    def _theta_grad(self, d: Mapping[str, Any], lam: np.ndarray, dec: Mapping[str, Any],
                    eps: np.ndarray) -> np.ndarray:
        """∇ of the negative ELBO w.r.t. the decoder (hand-written backprop; complex-safe)."""
        Z, T, R, _, _ = self._objective_parts(np, d, lam, dec, eps)
        dM = -R / d["gamma"]
        dA = (dM @ dec["W2"]) * (1.0 - T * T)
        grads = {"W1": dA.T @ Z, "b1": dA.sum(0), "W2": dM.T @ T, "b2": dM.sum(0)}
        return np.concatenate([grads[k].ravel() for k in DECODER])

    def _decoder_np(self, d: Mapping[str, Any], theta: np.ndarray) -> dict[str, Any]:
        return self._params(np, d, theta)[0]

    def _curvature(self, inst: Instance, iterations: int = 60) -> float:
        """Largest eigenvalue of ∂²f/∂λ² at λ₀ by power iteration on complex-step HVPs."""
        d = self._data(inst)
        dec = self._decoder_np(d, inst.theta)
        lam = self.solution(np, d, self.init(np, d, inst.theta), inst.theta)
        v = np.random.default_rng(0).standard_normal(lam.size)
        value = 1.0
        for _ in range(iterations):
            v /= np.linalg.norm(v)
            hv = self._hvp(d, lam, dec, d["eps"], v)
            value = float(v @ hv)
            v = hv
        return max(abs(value), 1.0)

    def _hvp(self, d: Mapping[str, Any], lam: np.ndarray, dec: Mapping[str, Any],
             eps: np.ndarray, a: np.ndarray) -> np.ndarray:
        h = COMPLEX_STEP
        return np.imag(self._lambda_grad(np, d, lam + 1j * h * a, dec, eps)) / h

    def _mixed(self, d: Mapping[str, Any], lam: np.ndarray, theta: np.ndarray,
               a: np.ndarray) -> np.ndarray:
        """(∂∇_λf/∂θ)ᵀ a = ∂(∇_θ f)/∂λ · a, by complex step along a."""
        if d["wrt"] != "decoder":
            return np.zeros_like(theta)
        h = COMPLEX_STEP
        dec = self._decoder_np(d, theta)
        return np.imag(self._theta_grad(d, lam + 1j * h * a, dec, d["eps"])) / h

    def _loss_grads(self, d: Mapping[str, Any], lam: np.ndarray,
                    theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dec = self._decoder_np(d, theta)
        g_lam = self._lambda_grad(np, d, lam, dec, d["eps_outer"])
        g_theta = (self._theta_grad(d, lam, dec, d["eps_outer"]) if d["wrt"] == "decoder"
                   else np.zeros_like(theta))
        return g_lam, g_theta

    def _through_init(self, d: Mapping[str, Any], theta: np.ndarray,
                      adj: np.ndarray) -> np.ndarray:
        """(∂λ₀/∂θ)ᵀ adj: nonzero only for θ = encoder (λ₀ is linear in it)."""
        if d["wrt"] == "decoder":
            return np.zeros_like(theta)
        B, dd = d["B"], d["d"]
        A = adj.reshape(B, 2 * dd)
        a_mu, a_rho = A[:, :dd], A[:, dd:]
        X = d["X"]
        grads = {"E_mu": a_mu.T @ X, "c_mu": a_mu.sum(0), "E_rho": a_rho.T @ X,
                 "c_rho": a_rho.sum(0)}
        return np.concatenate([grads[k].ravel() for k in ENCODER])

    def solve(self, inst: Instance, tol: float = 1e-12, max_steps: int = 200_000) -> np.ndarray:
        """λ* the inner solver converges to: heavy ball to ‖F‖ ≤ 1e-6, then Newton."""
        d = self._data(inst)
        theta = inst.theta
        state = self.init(np, d, theta)
        for _ in range(max_steps):
            lam = self.solution(np, d, state, theta)
            if np.linalg.norm(self.inner_gradient(np, d, lam, theta)) <= 1e-6:
                break
            state = self.step(np, d, state, theta)
        lam = self.solution(np, d, state, theta)
        dec = self._decoder_np(d, theta)
        for _ in range(50):
            g = self.inner_gradient(np, d, lam, theta)
            if np.linalg.norm(g) <= tol:
                return lam
            lam = lam - self._block_solve(d, lam, dec, g)
        raise RuntimeError("savi reference: Newton did not converge")

    def _hessian_blocks(self, d: Mapping[str, Any], lam: np.ndarray,
                        dec: Mapping[str, Any]) -> np.ndarray:
        """H = ∂²f/∂λ² as its (B, 2d, 2d) diagonal blocks (complex-step HVPs)."""
        B, k = d["B"], 2 * d["d"]
        cols = []
        for j in range(k):  # column j of every block at once
            e = np.zeros((B, k))
            e[:, j] = 1.0
            cols.append(self._hvp(d, lam, dec, d["eps"], e.ravel()).reshape(B, k))
        return np.stack(cols, axis=2)

    def _block_solve(self, d: Mapping[str, Any], lam: np.ndarray, dec: Mapping[str, Any],
                     rhs: np.ndarray) -> np.ndarray:
        """H⁻¹ rhs with H = ∂²f/∂λ², block-diagonal over the batch (2d × 2d blocks)."""
        blocks = self._hessian_blocks(d, lam, dec)
        return np.linalg.solve(blocks, rhs.reshape(blocks.shape[0], -1, 1)).ravel()

    def ift_warnings(self, instance: Instance, x: np.ndarray) -> list[str]:
        """The IFT (and CG) need H = ∂F/∂λ positive definite at λ_K; a saddle is reported."""
        d = self._data(instance)
        blocks = self._hessian_blocks(d, x, self._decoder_np(d, instance.theta))
        smallest = np.linalg.eigvalsh(0.5 * (blocks + blocks.transpose(0, 2, 1))).min()
        if smallest <= 0:
            return [f"savi: the Hessian ∂²f/∂λ² has eigenvalue {smallest:.2e} ≤ 0 at λ_K "
                    "(not a minimum): the IFT's linear system is indefinite, CG does not apply"]
        return []

    def reference_gradient(self, instance: Instance, K: int, kind: ReferenceKind) -> np.ndarray:
        d = self._data(instance)
        theta = instance.theta
        lr, gamma = self.descent_rates(instance.consts)
        dec = self._decoder_np(d, theta)
        if kind == "converged":
            lam = self.solve(instance)
            g_lam, g_theta = self._loss_grads(d, lam, theta)
            adj = self._block_solve(d, lam, dec, g_lam)
            return g_theta - self._mixed(d, lam, theta, adj)
        state = self.init(np, d, theta)
        trajectory = []
        for _ in range(K):
            trajectory.append(self.solution(np, d, state, theta))
            state = self.step(np, d, state, theta)
        adj_lam, grad = self._loss_grads(d, self.solution(np, d, state, theta), theta)
        adj_v = np.zeros_like(adj_lam)
        for lam_k in reversed(trajectory):
            total = adj_v + adj_lam if gamma > 0 else adj_lam
            adj_lam = adj_lam - lr * self._hvp(d, lam_k, dec, d["eps"], total)
            grad = grad - lr * self._mixed(d, lam_k, theta, total)
            adj_v = gamma * total
        return grad + self._through_init(d, theta, adj_lam)
