"""qpth (Amos & Kolter's OptNet layer) as a peer row of ``ift-direct`` on the ``qp`` problem.

``qpth.qp.QPFunction`` solves the batch of QPs  min ½zᵀQz + qᵀz  s.t. Gz ≤ h, Az = b  with its
own batched primal–dual interior-point method (``PDIPM_BATCHED``) to ``eps`` and differentiates
z* by one factorisation of the KKT matrix at the solution: the IFT with a direct solve, as
``ift-direct`` does at our x_K. The row is **converged-only**: qpth runs its own solver, so the
point's K (and the problem's ``solver`` option) does not reach it; K only names the point.

θ is the problem's (q, h, b) or, with ``params=all``, (q, h, b, Q, G, A): it is split into the
QP data by the problem itself (``split_theta``), so autograd maps qpth's gradients back to θ's
layout. One convention differs: qpth returns the symmetric part ½(∂ℓ/∂Q + ∂ℓ/∂Qᵀ) (Q is
symmetric for it), ours is ∂ℓ/∂Q through the stationarity row Qz + q as written. Q and q enter F
only through that row, so ∂ℓ/∂Q = (∂ℓ/∂q) zᵀ per instance; the Q block is built from qpth's own
∂ℓ/∂q and z* that way (qpth's symmetrised ∂ℓ/∂Q is its symmetric part — the tests check both).

ℓ is the problem's, evaluated at x = (z*, 0, 0): qpth returns z* alone (its multipliers stay
inside its autograd context), and qp's ℓ = Σ_b w_bᵀz_b reads z only.

qpth exposes no iteration count. Its interior-point loop factors the reduced KKT system once
per pass (``pdipm.batch.factor_kkt``), plus once for its starting point; counting those calls
during the forward gives ``ipm_iterations`` (in ``diagnostics``): the passes of its loop, the
last being the one that found the residual below ``eps`` (or stopped improving), as its
``verbose=1`` output numbers them.
"""

from __future__ import annotations

from typing import Any

from backends.base import Theory
from backends.peers.base import PeerStrategy
from suite.plugin.options import Option

_TRACE_NOTE = ("qpth keeps its KKT factors, multipliers and slacks for the backward pass as "
               "attributes of its autograd context (ctx.Q_LU, ctx.S_LU, ctx.lams, …), which "
               "saved-tensor hooks do not see: a metered number would undercount")


class Qpth(PeerStrategy):
    name = "qpth"
    summary = ("qpth.qp.QPFunction: its own batched interior point to convergence, then one "
               "KKT solve (peer of ift-direct; converged-only, K ignored)")
    # its own bands, not ift-direct's: qpth's solve does not run our K steps, so neither its
    # memory nor its time depends on K
    theory = Theory((0, 0), (2, 2), (0, 0), "Θ(n²) per instance",
                    "its own interior point (K-independent) + one KKT solve")
    modules = ("qpth.qp",)
    distribution = "qpth"
    corresponds_to = "ift-direct"
    frameworks = ("torch",)
    problems = ("qp",)
    converged_only = True
    own_solver = True
    parity_note = ("JAX ift-direct's peak is set by our interior-point forward (two reduced "
                   "(n + p)² solves per iteration: 545 kB of XLA temp buffers at n = 50, batch "
                   "4), not by the adjoint solve: a Schur-complement KKT solve cut the buffers "
                   "807 → 727 kB and left the peak where it was (885 vs 894 kB; qpth 771 kB)")
    counts = ()
    options = (
        Option("eps", float, 1e-12, "qpth's stopping residual (primal + dual + m·μ; its default)",
               minimum=0.0, exclusive_minimum=True),
        Option("max_iter", int, 50, "most interior-point passes (qpth's default is 20, which "
               "stops short on the larger instances)", minimum=1),
    )

    def trace_unmeasurable(self, framework):
        return _TRACE_NOTE

    def gradient(self, fw, P, theta, K, opts) -> tuple[Any, dict[str, Any]]:
        import torch
        from qpth.qp import QPFunction, QPSolvers
        from qpth.solvers.pdipm import batch as pdipm

        problem, xp, d = P.problem, P.xp, P.data
        layer = QPFunction(eps=opts["eps"], verbose=-1, maxIter=opts["max_iter"],
                           solver=QPSolvers.PDIPM_BATCHED)
        factorisations = 0
        solved: dict[str, Any] = {}

        def outer(th: Any) -> Any:
            nonlocal factorisations
            qp = problem.split_theta(xp, d, th)
            factor = pdipm.factor_kkt

            def counted(*args: Any) -> Any:
                nonlocal factorisations
                factorisations += 1
                return factor(*args)

            pdipm.factor_kkt = counted
            try:
                # Q detached: its block is rebuilt below in our convention from ∂ℓ/∂q and z*
                z = layer(qp["Q"].detach(), qp["q"], qp["G"], qp["h"], qp["A"], qp["b"])
            finally:
                pdipm.factor_kkt = factor
            solved["z"] = z.detach()
            rest = xp.zeros_like(th[: d["B"] * (d["m"] + d["p"])])
            return P.loss(xp.concat([xp.reshape(z, (-1,)), rest]), th)

        _, grad = fw.value_and_grad(outer, theta)
        if d["params"] == "all":
            grad = self._q_block_ours(problem, d, grad, solved["z"])
        return grad, {"ipm_iterations": torch.tensor(factorisations - 1)}

    @staticmethod
    def _q_block_ours(problem: Any, d: dict[str, Any], grad: Any, z: Any) -> Any:
        """θ's gradient with the Q block set to (∂ℓ/∂q) z*ᵀ per instance (see the module doc)."""
        import array_api_compat.torch as xp

        out = grad.clone()
        blocks = problem.split_theta(xp, d, out)  # views into ``out`` (contiguous slices)
        blocks["Q"][...] = blocks["q"][:, :, None] * z[:, None, :]
        return out
