"""``softmax``: entropy-regularised argmax, differentiated through mirror ascent (report Sec. 4).

    z*(θ) = argmax_{z ∈ Δⁿ} zᵀθ + τ H(z),   H(z) = −Σᵢ zᵢ log zᵢ,   so z* = softmax(θ/τ).

θ ∈ ℝⁿ (n = dim θ), temperature τ (option ``tau``, default 1). The solver is exponentiated
gradient (mirror ascent) from the uniform point with step η (option ``eta``, default 0.01):

    T(z, θ) = normalise(z^{1−ητ} ⊙ exp(ηθ)) = softmax((1 − ητ) log z + ηθ),   z₀ = 1/n.

Its K-step iterate has a closed form, z_K = softmax(c_K θ/τ) with c_K = 1 − (1 − ητ)^K, so the
exact K-step gradient of the outer loss ℓ(z) = wᵀz (w ~ N(0, I) from the seed) is

    dℓ/dθ = (c_K/τ) (diag z_K − z_K z_Kᵀ) w            (``k_step`` reference),

and at the solution (1/τ)(diag z − zzᵀ)w (``converged``). With the default η the K-step map
is 63 % of the way at K = 100, within 5e-5 at K = 1000 and at machine precision by K = 3000.

IFT system (the report's eq. 4, with τ): x = (z, u, v) ∈ ℝ^{2n+1},

    F(θ, x) = [ θ − τ(log z + 1) + u·1 + v ;  u (zᵀ1 − 1) ;  diag(v) z ],

with Jacobian (eq. 5) [[−τ diag(1/z), 1, I], [u 1ᵀ, zᵀ1 − 1, 0], [diag(v), 0, diag(z)]].
From an iterate z the duals are recovered as v = 0 (z > 0) and u = mean(τ(log z + 1) − θ) (the
least-squares multiplier), so ‖F‖ measures how far z is from optimal. ∂F/∂x is not symmetric:
``ift-cg`` does not apply, ``ift-gmres`` and ``ift-direct`` do; the problem knows no step α with
ρ(I − α ∂F/∂x) < 1 (∂F/∂x is indefinite), so ``ift-neumann`` and ``ift-jfb`` need ``alpha``.
The IFT fails where some zᵢ → 0
(diag(1/z) blows up; the report's footnote 13) and where u = τ(1 − LSE(θ/τ)) = 0 (the row
u(zᵀ1 − 1) vanishes); both are detected and reported (``ift_warnings``, ``jacobian_cond``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from problems.base import Instance, Problem, ReferenceKind
from suite.plugin.options import Option

#: a probability below this makes ∂F/∂x numerically singular (diag(1/z), diag(z) blocks)
SINGULAR_Z = 1e-12


def _softmax(xp: Any, s: Any) -> Any:
    s = s - xp.max(s)
    e = xp.exp(s)
    return e / xp.sum(e)


def _softmax_np(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max())
    return e / e.sum()


class Softmax(Problem):
    name = "softmax"
    title = "Entropy-regularised argmax (softmax) through mirror ascent, with its KKT system"
    size_meaning = "n = dim θ = dim z; the KKT variables x = (z, u, v) have 2n + 1 entries"
    jacobian_structure = "general"
    options = (
        Option("tau", float, 1.0, "temperature τ of the entropy term", minimum=0.0,
               exclusive_minimum=True),
        Option("eta", float, 0.01, "mirror-ascent step η (needs 0 < ητ ≤ 1)", minimum=0.0,
               exclusive_minimum=True),
        Option("scale", float, 2.0, "θ ~ N(0, scale²): larger scales push some zᵢ toward 0",
               minimum=0.0, exclusive_minimum=True),
    )

    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> Instance:
        tau, eta = float(options.get("tau", 1.0)), float(options.get("eta", 0.01))
        if not 0 < eta * tau <= 1:
            from suite.plugin.errors import UsageError

            raise UsageError("option 'eta'", f"η·τ = {eta * tau:g} must lie in (0, 1]",
                             "0 < eta·tau ≤ 1")
        rng = np.random.default_rng(seed)
        theta = float(options.get("scale", 2.0)) * rng.standard_normal(n)
        w = rng.standard_normal(n)
        return Instance(theta=theta, arrays={"w": w}, consts={"tau": tau, "eta": eta})

    def init(self, xp: Any, d: Mapping[str, Any], theta: Any) -> Any:
        return xp.ones_like(theta) / theta.shape[0]

    def step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        keep = 1.0 - d["eta"] * d["tau"]
        return _softmax(xp, keep * xp.log(state) + d["eta"] * theta)

    def solution(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        z = state
        u = xp.mean(d["tau"] * (xp.log(z) + 1.0) - theta)
        return xp.concat([z, xp.reshape(u, (1,)), xp.zeros_like(z)])

    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        n = theta.shape[0]
        z, u, v = x[:n], x[n], x[n + 1:]
        stationarity = theta - d["tau"] * (xp.log(z) + 1.0) + u + v
        equality = u * (xp.sum(z) - 1.0)
        return xp.concat([stationarity, xp.reshape(equality, (1,)), v * z])

    def loss(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        return xp.sum(d["w"] * x[: theta.shape[0]])

    def ift_warnings(self, instance: Instance, x: np.ndarray) -> list[str]:
        n = instance.theta.size
        z, u = x[:n], x[n]
        out = []
        if z.min() < SINGULAR_Z:
            out.append(f"softmax: min zᵢ = {z.min():.1e} < {SINGULAR_Z:g}: ∂F/∂x is singular "
                       "there (diag(1/z)); the IFT does not apply (report, footnote 13)")
        if abs(u) < 1e-10:
            out.append("softmax: the multiplier u ≈ 0 makes the row u(zᵀ1 − 1) of ∂F/∂x vanish")
        return out

    def reference_gradient(self, instance: Instance, K: int, kind: ReferenceKind) -> np.ndarray:
        tau, eta = instance.consts["tau"], instance.consts["eta"]
        w = instance.arrays["w"]
        c = 1.0 if kind == "converged" else 1.0 - (1.0 - eta * tau) ** K
        z = _softmax_np(c * instance.theta / tau)
        return (c / tau) * (z * w - z * (z @ w))
