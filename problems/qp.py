"""``qp``: the OptNet quadratic program (report Sec. 5; Amos & Kolter 2017), batched.

    z*(θ) = argmin_z ½ zᵀQz + qᵀz   s.t.  Gz ≤ h,  Az = b,   θ = (q, h, b) or (q, h, b, Q, G, A),

for a batch of B independent instances (option ``batch``, default 4), z ∈ ℝⁿ, m = n
inequalities and p = max(1, n/4) equalities each. Instances are built as OptNet's benchmark
does: Q = UᵀU + 1e-3·I, G and A Gaussian, h = Gz₀ + s₀ with s₀ > 0, b = Az₀ (so z₀ is
feasible), with entries scaled by 1/√n so that the spectra stay O(1). θ is the concatenation
(q, h, b), each batch-major, or with option ``params=all`` (q, h, b, Q, G, A), the matrices
row-major; ``grad.npy`` follows the same order. Outer loss ℓ = Σ_b w_bᵀz_b. The gradient with
respect to Q is that of the map Q ↦ z* through the stationarity row Qz (not symmetrised);
OptNet reports its symmetric part ½(∂ℓ/∂Q + ∂ℓ/∂Qᵀ).

Two solvers (option ``solver``):

* ``ipm`` (default, OptNet's choice): a batched primal–dual interior-point method with
  Mehrotra's predictor–corrector, state s = (z, slack, λ, ν) from (0, 1, 1, 0), written in the
  framework's own differentiable ops (two dense solves of the reduced (n + p)² system per
  iteration); converged in 10–30 iterations. An instance whose duality measure falls below
  1e-12 (and residuals below 1e-10) stops moving: its later iterates are copies, so K beyond
  convergence is harmless. Differentiating the last IPM iterations is ill-conditioned all the
  same (the reduced system carries λ/s ratios near 1/μ): gradients through a converged IPM
  agree across frameworks and with the reference only to ≈ 1e-8 — one reason OptNet uses the
  IFT.
* ``admm`` (OSQP's iteration, ρ = 1, σ = 1e-6, relaxation 1.6) on l ≤ Cz ≤ u with C = [G; A]:
  a fixed matrix (Q + σI + ρCᵀC)⁻¹ built once per instance, then one matrix–vector product and
  a clip per iteration, so K ranges into the thousands — the regime of the report. With
  ``params=all`` that matrix depends on θ, and each iteration solves with it instead (O(n³)).

IFT: the KKT system of the report's eq. (12), x = (z, λ, ν) (flattened as [z; λ; ν] over the
batch),

    F(θ, x) = [ Qz + q + Gᵀλ + Aᵀν ;  diag(λ)(Gz − h) ;  Az − b ],

whose Jacobian [[Q, Gᵀ, Aᵀ], [diag(λ)G, diag(Gz − h), 0], [A, 0, 0]] is not symmetric:
``ift-direct`` and ``ift-gmres`` apply, ``ift-cg`` does not. The instances are independent:
x and F split into B blocks (instance i owns (z_i, λ_i, ν_i), gathered by ``to_blocks``), so
the IFT solves B systems of size n + m + p; with option ``jacobian=closed-form`` (default)
``ift-direct`` factors the KKT blocks above, as OptNet does, else builds them by forward mode.
(Eq. 12 writes the equality row as diag(ν)(Az − b), singular wherever some ν_j = 0; OptNet
differentiates Az − b, and so do we.) The IFT fails without strict complementarity (λ_i = 0
on an active constraint): reported.

References: ``converged`` — z*, λ*, ν* from the IPM run in float64 to 1e-12 and polished on
its active set, then the KKT solve per instance (OptNet's backward); checked against finite
differences of the solution map and against qpth in the tests. ``k_step`` — the exact
derivative of the K-step solver map by complex-step differentiation of the same solver code
run in complex128 numpy (branch decisions, such as the step length or the clip, follow the
real parts), one solve per parameter of one instance, all instances at once (they are
independent).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import array_api_compat
import numpy as np
from array_api_compat import device as array_device

from problems.base import Instance, Problem, ReferenceKind, block_matrix, numpy_namespace
from suite.plugin.options import Option

COMPLEX_STEP = 1e-30
CONVERGED_TOL = 1e-12  # duality measure μ = sᵀλ/m at which an IPM instance stops moving
RESIDUAL_TOL = 1e-10   # … provided its KKT residuals are this small (rounding floor ≈ 1e-12)
FLOOR_TOL = 1e-8       # past convergence, the residual a step may grow to (see _ipm_step)
ADMM_RHO, ADMM_SIGMA, ADMM_RELAX = 1.0, 1e-6, 1.6


def _mv(xp: Any, M: Any, v: Any) -> Any:
    """Batched matrix–vector product (B, r, c) @ (B, c) → (B, r)."""
    return (M @ v[..., None])[..., 0]


def _unless(xp: Any, skip: Any, keep: Any, compute: Any) -> Any:
    """``keep`` if the 0-d boolean ``skip`` holds, else ``compute()`` — without running
    ``compute``'s work when it does. JAX traces the loop, so the choice is ``lax.cond`` (one
    branch runs; under ``vmap`` both do, and the result is the same); eager namespaces
    branch in Python."""
    if array_api_compat.is_jax_namespace(xp):
        import jax

        return jax.lax.cond(skip, lambda: keep, compute)
    return keep if bool(skip) else compute()


def _norm2(xp: Any, v: Any) -> Any:
    """Σ v² over the last axis (no abs, so complex-step derivatives pass through)."""
    return xp.sum(v * v, axis=-1)


class QuadraticProgram(Problem):
    name = "qp"
    title = "OptNet quadratic program (batched), by interior point or by ADMM"
    size_meaning = ("n = dim z per instance; m = n inequalities, p = max(1, n/4) equalities; "
                    "dim θ = batch·(n + m + p), dim x = batch·(n + m + p)")
    jacobian_structure = "general"
    options = (
        Option("solver", str, "ipm", "inner solver", choices=("ipm", "admm")),
        Option("batch", int, 4, "independent QPs solved together", minimum=1),
        Option("params", str, "qhb", "θ = (q, h, b), or all data (q, h, b, Q, G, A)",
               choices=("qhb", "all")),
        Option("jacobian", str, "closed-form", "∂F/∂x for ift-direct: the KKT matrix in closed "
               "form (as OptNet factors it), or built by forward mode (n + m + p JVPs in all)",
               choices=("closed-form", "forward-mode")),
    )

    # ---- instance -----------------------------------------------------------------------
    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> Instance:
        rng = np.random.default_rng(seed)
        B, m, p = int(options.get("batch", 4)), n, max(1, n // 4)
        scale = 1.0 / np.sqrt(n)
        U = scale * rng.standard_normal((B, n, n))
        Q = U.transpose(0, 2, 1) @ U + 1e-3 * np.eye(n)
        G = scale * rng.standard_normal((B, m, n))
        A = scale * rng.standard_normal((B, p, n))
        z0 = rng.standard_normal((B, n))
        s0 = rng.uniform(0.1, 1.0, (B, m))
        h = np.einsum("bmn,bn->bm", G, z0) + s0
        b = np.einsum("bpn,bn->bp", A, z0)
        q = rng.standard_normal((B, n))
        w = rng.standard_normal((B, n))
        params = options.get("params", "qhb")
        blocks = [q, h, b] + ([Q, G, A] if params == "all" else [])
        theta = np.concatenate([blk.ravel() for blk in blocks])
        C = np.concatenate([G, A], axis=1)
        arrays = {"w": w}
        solver = options.get("solver", "ipm")
        if params == "qhb":  # the matrices are data
            arrays.update(Q=Q, G=G, A=A)
            if solver == "admm":  # and ADMM's matrix is fixed (the IPM never reads it)
                arrays["admm_inverse"] = np.linalg.inv(
                    Q + ADMM_SIGMA * np.eye(n) + ADMM_RHO * C.transpose(0, 2, 1) @ C)
        named = {"Q": Q, "q": q, "G": G, "h": h, "A": A, "b": b}
        return Instance(theta=theta, named={k: v for k, v in named.items() if k not in arrays},
                        arrays=arrays,
                        consts={"B": B, "n": n, "m": m, "p": p, "params": params,
                                "solver": solver,
                                "jacobian": options.get("jacobian", "closed-form")})

    def theta_layout(self, d: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        """θ's blocks in order, each with its per-instance shape (θ is batch-major per block)."""
        n, m, p = d["n"], d["m"], d["p"]
        layout = {"q": (n,), "h": (m,), "b": (p,)}
        if d["params"] == "all":
            layout.update(Q=(n, n), G=(m, n), A=(p, n))
        return layout

    def split_theta(self, xp: Any, d: Mapping[str, Any], theta: Any) -> dict[str, Any]:
        """The QP data Q, q, G, h, A, b of every instance, from θ where θ holds them."""
        out, i, B = {}, 0, d["B"]
        for name, shape in self.theta_layout(d).items():
            size = B * int(np.prod(shape))
            out[name] = xp.reshape(theta[i:i + size], (B, *shape))
            i += size
        return {**{k: d[k] for k in ("Q", "G", "A") if k not in out}, **out}

    # ---- solvers --------------------------------------------------------------------------
    def init(self, xp: Any, d: Mapping[str, Any], theta: Any) -> Any:
        B, n, m, p = d["B"], d["n"], d["m"], d["p"]
        zeros = xp.zeros_like(theta)
        if d["solver"] == "admm":  # (x, z = Cx, y)
            return (xp.reshape(zeros[: B * n], (B, n)),
                    xp.reshape(xp.zeros_like(zeros[: B * (m + p)]), (B, m + p)),
                    xp.reshape(xp.zeros_like(zeros[: B * (m + p)]), (B, m + p)))
        ones = xp.ones_like(zeros[: B * m])
        return (xp.reshape(zeros[: B * n], (B, n)), xp.reshape(ones, (B, m)),
                xp.reshape(ones, (B, m)), xp.reshape(zeros[: B * p], (B, p)))

    def step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        if d["solver"] == "admm":
            return self._admm_step(xp, d, state, theta)
        return self._ipm_step(xp, d, state, theta)

    def _admm_step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        qp = self.split_theta(xp, d, theta)
        h, b = qp["h"], qp["b"]
        x, z, y = state
        C = xp.concat([qp["G"], qp["A"]], axis=1)
        Ct = xp.matrix_transpose(C)
        rhs = ADMM_SIGMA * x - qp["q"] + _mv(xp, Ct, ADMM_RHO * z - y)
        if "admm_inverse" in d:  # the matrix is data: its inverse was built once
            x_tilde = _mv(xp, d["admm_inverse"], rhs)
        else:  # it depends on θ (params=all): solve with it, differentiably
            eye = xp.eye(d["n"], dtype=rhs.dtype)
            x_tilde = xp.linalg.solve(qp["Q"] + ADMM_SIGMA * eye + ADMM_RHO * (Ct @ C),
                                      rhs[..., None])[..., 0]
        z_tilde = _mv(xp, C, x_tilde)
        x = ADMM_RELAX * x_tilde + (1.0 - ADMM_RELAX) * x
        relaxed = ADMM_RELAX * z_tilde + (1.0 - ADMM_RELAX) * z
        target = relaxed + y / ADMM_RHO
        m = d["m"]
        z_new = xp.concat([xp.minimum(target[:, :m], h), b], axis=1)  # l ≤ Cz ≤ u
        y = y + ADMM_RHO * (relaxed - z_new)
        return x, z_new, y

    def _ipm_step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        qp = self.split_theta(xp, d, theta)
        Q, q, G, h, A, b = (qp[k] for k in ("Q", "q", "G", "h", "A", "b"))
        z, s, lam, nu = state
        Gt, At = xp.matrix_transpose(G), xp.matrix_transpose(A)
        m = d["m"]
        r_dual = _mv(xp, Q, z) + q + _mv(xp, Gt, lam) + _mv(xp, At, nu)
        r_ineq = _mv(xp, G, z) + s - h
        r_eq = _mv(xp, A, z) - b
        mu = xp.sum(s * lam, axis=-1) / m
        residual = _norm2(xp, r_dual) + _norm2(xp, r_ineq) + _norm2(xp, r_eq)
        done = (mu < CONVERGED_TOL) & (residual < RESIDUAL_TOL ** 2)

        def update() -> Any:
            new = self._ipm_update(xp, d, state, (Q, q, G, h, A, b), (r_dual, r_ineq, r_eq),
                                   mu, done)
            # Past convergence an instance whose residuals sit at their rounding floor (above
            # RESIDUAL_TOL on near-degenerate instances) would keep shrinking s∘λ towards
            # 1e-30 and diverge (n = 50, 64 instances, seed 0: ‖F‖ 3e-9 at step 11, 2.5 at
            # step 18). Shrinking μ further still sharpens the IFT gradient there (7.6e-9 off
            # at μ ≈ 1e-17, 2.7e-7 at 1e-12), so once μ < CONVERGED_TOL a step is refused only
            # if it grows the residuals beyond both their current size and FLOOR_TOL; the
            # state is then unchanged, so every later step refuses it too.
            z1, s1, lam1, nu1 = new
            grown = _norm2(xp, _mv(xp, Q, z1) + q + _mv(xp, Gt, lam1) + _mv(xp, At, nu1)) \
                + _norm2(xp, _mv(xp, G, z1) + s1 - h) + _norm2(xp, _mv(xp, A, z1) - b)
            refuse = ((mu < CONVERGED_TOL) & (grown > residual)
                      & (grown > FLOOR_TOL ** 2))[:, None]
            return tuple(xp.where(refuse, old, moved)
                         for old, moved in zip(state, new, strict=True))

        # once every instance has converged T is the identity: skip the Newton systems
        return _unless(xp, xp.all(done), state, update)

    def _ipm_update(self, xp: Any, d: Mapping[str, Any], state: Any, data: tuple,
                    residuals: tuple, mu: Any, done: Any) -> Any:
        """Mehrotra's predictor–corrector step from ``state``; converged instances stay."""
        Q, q, G, h, A, b = data
        r_dual, r_ineq, r_eq = residuals
        z, s, lam, nu = state
        Gt, At = xp.matrix_transpose(G), xp.matrix_transpose(A)
        n, m = d["n"], d["m"]

        # reduced Newton system in (dz, dν): (Q + Gᵀ diag(λ/s) G) dz + Aᵀ dν = rhs, A dz = −r_eq
        H = Q + Gt @ (G * (lam / s)[..., None])
        top = xp.concat([H, At], axis=2)
        bottom = xp.concat([A, xp.zeros_like(A[:, :, : A.shape[1]])], axis=2)
        kkt = xp.concat([top, bottom], axis=1)

        def direction(target: Any) -> tuple[Any, Any, Any, Any]:
            """Newton direction for complementarity s∘λ = target."""
            rhs_z = -r_dual - _mv(xp, Gt, (target - s * lam + lam * r_ineq) / s)
            rhs = xp.concat([rhs_z, -r_eq], axis=1)
            sol = xp.linalg.solve(kkt, rhs[..., None])[..., 0]
            dz, dnu = sol[:, :n], sol[:, n:]
            ds = -r_ineq - _mv(xp, G, dz)
            dlam = (target - s * lam - lam * ds) / s
            return dz, ds, dlam, dnu

        def step_length(ds: Any, dlam: Any) -> Any:
            ratios = xp.concat([xp.where(ds < 0, -s / ds, xp.ones_like(s) * 1e30),
                                xp.where(dlam < 0, -lam / dlam, xp.ones_like(lam) * 1e30)],
                               axis=1)
            return xp.minimum(xp.ones_like(mu), 0.99 * xp.min(ratios, axis=1))

        _, ds_aff, dlam_aff, _ = direction(xp.zeros_like(s))
        alpha = step_length(ds_aff, dlam_aff)
        mu_aff = xp.sum((s + alpha[:, None] * ds_aff) * (lam + alpha[:, None] * dlam_aff),
                        axis=-1) / m
        sigma = (mu_aff / mu) ** 3
        dz, ds, dlam, dnu = direction(sigma[:, None] * mu[:, None] - ds_aff * dlam_aff)
        alpha = step_length(ds, dlam)[:, None]
        keep = done[:, None]
        return (xp.where(keep, z, z + alpha * dz), xp.where(keep, s, s + alpha * ds),
                xp.where(keep, lam, lam + alpha * dlam), xp.where(keep, nu, nu + alpha * dnu))

    # ---- optimality conditions and loss ------------------------------------------------------
    def solution(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        if d["solver"] == "admm":
            x, _, y = state
            z, lam, nu = x, y[:, : d["m"]], y[:, d["m"]:]
        else:
            z, _, lam, nu = state
        return xp.concat([xp.reshape(z, (-1,)), xp.reshape(lam, (-1,)), xp.reshape(nu, (-1,))])

    def split_x(self, xp: Any, d: Mapping[str, Any], x: Any) -> tuple[Any, Any, Any]:
        B, n, m, p = d["B"], d["n"], d["m"], d["p"]
        return (xp.reshape(x[: B * n], (B, n)), xp.reshape(x[B * n: B * (n + m)], (B, m)),
                xp.reshape(x[B * (n + m):], (B, p)))

    # ---- block structure: instance i owns (z_i, λ_i, ν_i) and rows i of F -----------------
    def blocks(self, consts: Mapping[str, Any]) -> int | None:
        return int(consts["B"])

    def to_blocks(self, xp: Any, consts: Mapping[str, Any], v: Any) -> Any:
        """[z; λ; ν] (each batch-major) → (…, B, n + m + p), instance i's (z_i, λ_i, ν_i)."""
        B, n, m = consts["B"], consts["n"], consts["m"]
        lead = tuple(v.shape[:-1])
        parts = (v[..., : B * n], v[..., B * n: B * (n + m)], v[..., B * (n + m):])
        return xp.concat([xp.reshape(part, (*lead, B, -1)) for part in parts], axis=-1)

    def from_blocks(self, xp: Any, consts: Mapping[str, Any], V: Any) -> Any:
        n, m = consts["n"], consts["m"]
        lead = tuple(V.shape[:-2])
        parts = (V[..., :n], V[..., n:n + m], V[..., n + m:])
        return xp.concat([xp.reshape(part, (*lead, -1)) for part in parts], axis=-1)

    residual_jacobian_fresh = True  # built by block_matrix, nothing else holds it

    def residual_jacobian(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        """With option ``jacobian=closed-form``: the KKT blocks
        [[Q, Gᵀ, Aᵀ], [diag(λ)G, diag(Gz − h), 0], [A, 0, 0]] of every instance, (B, r, r)
        with r = n + m + p, as OptNet builds them."""
        if d.get("jacobian", "closed-form") != "closed-form":
            return None
        qp = self.split_theta(xp, d, theta)
        Q, G, h, A = (qp[k] for k in ("Q", "G", "h", "A"))
        z, lam, _ = self.split_x(xp, d, x)
        slack = _mv(xp, G, z) - h
        eye = xp.eye(d["m"], dtype=x.dtype, device=array_device(x))
        Gt, At = xp.matrix_transpose(G), xp.matrix_transpose(A)
        return block_matrix(xp, [[Q, Gt, At],
                                 [lam[..., None] * G, slack[..., None] * eye, None],
                                 [A, None, None]], like=z)

    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        qp = self.split_theta(xp, d, theta)
        Q, q, G, h, A, b = (qp[k] for k in ("Q", "q", "G", "h", "A", "b"))
        z, lam, nu = self.split_x(xp, d, x)
        stationarity = (_mv(xp, Q, z) + q + _mv(xp, xp.matrix_transpose(G), lam)
                        + _mv(xp, xp.matrix_transpose(A), nu))
        complementarity = lam * (_mv(xp, G, z) - h)
        feasibility = _mv(xp, A, z) - b
        return xp.concat([xp.reshape(stationarity, (-1,)), xp.reshape(complementarity, (-1,)),
                          xp.reshape(feasibility, (-1,))])

    def loss(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        z, _, _ = self.split_x(xp, d, x)
        return xp.sum(d["w"] * z)

    def ift_warnings(self, instance: Instance, x: np.ndarray) -> list[str]:
        d = {**instance.arrays, **instance.consts}
        qp = self.split_theta(np, d, instance.theta)
        z, lam, _ = self.split_x(np, d, x)
        slack = qp["h"] - np.einsum("bmn,bn->bm", qp["G"], z)
        degenerate = (lam < 1e-9) & (slack < 1e-9)
        if degenerate.any():
            return [f"qp: {int(degenerate.sum())} constraint(s) active with a zero multiplier "
                    "(no strict complementarity): ∂F/∂x is singular, the IFT does not apply"]
        return []

    # ---- float64 references --------------------------------------------------------------
    def solve(self, instance: Instance, iterations: int = 200) -> np.ndarray:
        """x* = (z*, λ*, ν*) by the interior-point method in float64, to 1e-12."""
        npx = numpy_namespace()
        d = {**instance.arrays, **instance.consts, "solver": "ipm"}
        state = self.init(npx, d, instance.theta)
        with np.errstate(divide="ignore"):  # step-length ratios where a direction is 0
            for _ in range(iterations):
                state = self._ipm_step(npx, d, state, instance.theta)
        return self._polish(d, instance.theta,
                            np.asarray(self.solution(npx, d, state, instance.theta)))

    def _polish(self, d: Mapping[str, Any], theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Active-set polish of an interior-point solution (as OSQP polishes): with the
        active set 𝒜 = {i : λᵢ > slackᵢ}, solve [[Q, G_𝒜ᵀ, Aᵀ], [G_𝒜, 0, 0], [A, 0, 0]] for
        (z, λ_𝒜, ν) and set λ off 𝒜 to 0. The IPM leaves λᵢ ≈ μ/slackᵢ ≈ 1e-11 on inactive
        constraints, which Q's 1e-3 eigenvalues amplify to ≈ 1e-9 in z; the polished point
        is exact to rounding. Kept only if it is primal and dual feasible."""
        qp = self.split_theta(np, d, theta)
        q, h, b = qp["q"], qp["h"], qp["b"]
        z, lam, nu = (v.copy() for v in self.split_x(np, d, x))
        for i in range(d["B"]):
            G, A = qp["G"][i], qp["A"][i]
            active = lam[i] > h[i] - G @ z[i]
            Ga, na, p = G[active], int(active.sum()), A.shape[0]
            kkt = np.block([[qp["Q"][i], Ga.T, A.T],
                            [Ga, np.zeros((na, na + p))],
                            [A, np.zeros((p, na + p))]])
            sol = np.linalg.solve(kkt, np.concatenate([-q[i], h[i][active], b[i]]))
            n = z.shape[1]
            z_i, lam_a = sol[:n], sol[n:n + na]
            if (lam_a >= 0).all() and (G @ z_i <= h[i] + 1e-12).all():
                z[i], nu[i] = z_i, sol[n + na:]
                lam[i] = 0.0
                lam[i][active] = lam_a
        return np.concatenate([z.ravel(), lam.ravel(), nu.ravel()])

    def reference_gradient(self, instance: Instance, K: int, kind: ReferenceKind) -> np.ndarray:
        if kind == "k_step":
            return self._complex_step_k_step(instance, K)
        d = {**instance.arrays, **instance.consts}
        B, n, m, p = d["B"], d["n"], d["m"], d["p"]
        qp = self.split_theta(np, d, instance.theta)
        z, lam, nu = self.split_x(np, d, self.solve(instance))
        grads: dict[str, list[np.ndarray]] = {name: [] for name in self.theta_layout(d)}
        for i in range(B):
            Q, G, A, h = qp["Q"][i], qp["G"][i], qp["A"][i], qp["h"][i]
            jac = np.block([
                [Q, G.T, A.T],
                [lam[i][:, None] * G, np.diag(G @ z[i] - h), np.zeros((m, p))],
                [A, np.zeros((p, m)), np.zeros((p, p))]])
            rhs = np.concatenate([d["w"][i], np.zeros(m + p)])
            adj = np.linalg.solve(jac.T, rhs)  # (∂F/∂x)ᵀ a = ∇ₓℓ, then dℓ/dθ = −(∂F/∂θ)ᵀ a
            a1, a2, a3 = adj[:n], adj[n:n + m], adj[n + m:]
            # ∂F/∂q = [I; 0; 0], ∂F/∂h = [0; −diag λ; 0], ∂F/∂b = [0; 0; −I], and for the
            # matrices, from Qz, Gᵀλ, λ∘(Gz), Aᵀν and Az:
            block = {"q": -a1, "h": lam[i] * a2, "b": a3,
                     "Q": -np.outer(a1, z[i]),
                     "G": -(np.outer(lam[i], a1) + np.outer(a2 * lam[i], z[i])),
                     "A": -(np.outer(nu[i], a1) + np.outer(a3, z[i]))}
            for name in grads:
                grads[name].append(block[name])
        return np.concatenate([np.stack(g).ravel() for g in grads.values()])

    def _complex_step_k_step(self, instance: Instance, K: int) -> np.ndarray:
        """Complex step on parameter j of every instance at once (instances are independent):
        one complex128 run of the solver per per-instance parameter."""
        npx = numpy_namespace()
        d = {**instance.arrays, **instance.consts}
        B = d["B"]
        layout = self.theta_layout(d)
        base = np.asarray(instance.theta, dtype=complex)
        out = np.zeros(instance.theta.size)
        offset = 0
        for shape in layout.values():
            size = int(np.prod(shape))
            for j in range(size):
                idx = offset + np.arange(B) * size + j
                theta = base.copy()
                theta[idx] += 1j * COMPLEX_STEP
                state = self.init(npx, d, theta)
                for _ in range(K):
                    state = self.step(npx, d, state, theta)
                z, _, _ = self.split_x(np, d, np.asarray(self.solution(npx, d, state, theta)))
                out[idx] = np.imag(np.sum(d["w"] * z, axis=1)) / COMPLEX_STEP
            offset += B * size
        return out
