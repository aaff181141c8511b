"""Untimed float64 checks of the adjoint an IFT strategy solved for.

At the strategy's final iterate x_K, the exact adjoint is λ* = (∂F/∂x)⁻ᵀ ∇ₓℓ. Comparing the
strategy's λ with λ* separates the error of the linear solve (CG tolerance, Neumann truncation,
JFB's identity) from the error of evaluating the IFT off a solution. The strategy adds its
solver's a-priori bound where it has one (``ift-neumann``: ρ = ρ(I − α ∂F/∂x) and ρ^{k+1} on
‖λ − λ*‖/‖λ*‖ for symmetric ∂F/∂x).

A problem that declares block structure (``Problem.blocks``) is checked block by block: ∂F/∂x
is built as its B diagonal blocks (m JVPs), so the check reaches sizes whose full dense
Jacobian it could not hold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.ift import block_jacobian
from problems.base import Bound, numpy_namespace

#: above this many Jacobian entries (B·m²; m = dim x without blocks) ∂F/∂x is not built in
#: float64 (O(Bm²) memory, O(Bm³) time)
MAX_DENSE_ENTRIES = 2000 ** 2


def _jacobian_and_loss_gradient(prep: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the (B, m, m) blocks of ∂F/∂x, ∇ₓℓ) at (θ, x) in float64 by the point's own framework
    (forward mode for the Jacobian, never a closed form the strategy may have used), as one
    compiled program: under JAX, eager dispatch would compile every primitive separately
    (≈ 1 s per point at n = 50, against ≈ 0.15 s for one jit)."""
    fw64 = type(prep.fw)(prep.point.device, "float64")
    consts = prep.instance.consts

    def program(theta: Any, data: Any) -> tuple[Any, Any]:
        P = Bound(prep.problem, fw64.xp, data["arrays"], consts)
        jac, _ = block_jacobian(fw64, P, data["x"], theta, closed_form=False)
        value, pullback = fw64.vjp(P.loss, data["x"], theta, count="vjp_evals")
        return jac, pullback(fw64.xp.ones_like(value))[0]

    data = {"arrays": {k: fw64.asarray(v) for k, v in prep.instance.arrays.items()},
            "x": fw64.asarray(x)}
    jac, loss_x = fw64.compile(program)(fw64.asarray(prep.instance.theta), data)
    return fw64.to_numpy(jac), fw64.to_numpy(loss_x)


def dense_jacobian(prep: Any, x: np.ndarray) -> np.ndarray:
    """∂F/∂x at (θ, x) in float64, by the point's own framework's forward mode, as the full
    dim x × dim x matrix in x's own layout (zero off the declared diagonal blocks)."""
    blocks = _jacobian_and_loss_gradient(prep, x)[0]
    index = np.asarray(prep.problem.to_blocks(numpy_namespace(), prep.instance.consts,
                                              np.arange(x.size)))  # (B, m): x's entries
    full = np.zeros((x.size, x.size))
    for b, idx in enumerate(index):
        full[np.ix_(idx, idx)] = blocks[b]
    return full


def adjoint_diagnostics(prep: Any, x: np.ndarray, adjoint: np.ndarray) -> dict[str, Any]:
    B = int(prep.problem.blocks(prep.instance.consts) or 1)
    if x.size ** 2 // B > MAX_DENSE_ENTRIES:
        return {"adjoint_check": f"skipped: dim x = {x.size} in {B} block(s), more than "
                                 f"{MAX_DENSE_ENTRIES} Jacobian entries"}
    blocks, loss_x = _jacobian_and_loss_gradient(prep, x)
    npx, consts = numpy_namespace(), prep.instance.consts
    exact = np.linalg.solve(blocks.transpose(0, 2, 1),
                            np.asarray(prep.problem.to_blocks(npx, consts, loss_x))[..., None])
    error = np.asarray(prep.problem.to_blocks(npx, consts, adjoint)) - exact[..., 0]
    singular = np.linalg.svd(blocks, compute_uv=False)  # cond of diag(J_b): over all blocks
    out: dict[str, Any] = {
        "adjoint_rel_error": float(np.linalg.norm(error) / max(np.linalg.norm(exact), 1e-300)),
        "jacobian_cond": float(singular.max() / singular.min()) if singular.min() > 0
        else float("inf"),
    }
    bound = getattr(prep.strategy, "adjoint_bound", None)  # IFT strategies; peers have none
    if bound is not None:
        out.update(bound(prep.problem, consts, prep.options, blocks))
    return out


def counterpart_difference(prep: Any, grad: np.ndarray) -> float | None:
    """‖g_ours − g_peer‖/‖g_peer‖ for a peer row (``Strategy.counterpart``): our corresponding
    strategy's gradient on the same instance, with the same problem options and the options
    both declare (tolerances, snapshots), computed untimed in this process. Records keep no
    gradients, so the report's peers table reads this instead. None for our own strategies or
    where ours does not run with these options."""
    ours = prep.strategy.counterpart()
    if ours is None:
        return None
    from dataclasses import replace

    import backends
    from suite.plugin.errors import UnsupportedError
    from suite.program import prepare

    declared = ({o.name for o in prep.problem.options}
                | {o.name for o in backends.registry()[ours].options})
    point = replace(prep.point, backend=ours,
                    options={k: v for k, v in prep.point.options.items() if k in declared})
    try:
        other = prepare(point)
    except UnsupportedError:
        return None
    g_ours, _ = other.fw.compile(other.gradient_program())(other.theta, other.arrays)
    g_ours = other.fw.to_numpy(g_ours)
    denom = float(np.linalg.norm(grad))
    diff = float(np.linalg.norm(g_ours - grad))
    return diff / denom if denom > 0 else diff
