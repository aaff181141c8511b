"""The OptNet QP: its two solvers agree, the interior point's K-step derivative is exact, the
KKT (IFT) gradient agrees with an established differentiable QP layer (qpth), and a
constraint that is active with a zero multiplier is reported."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from problems.qp import QuadraticProgram
from suite.point import Point
from suite.program import evaluate, prepare

from .conftest import FRAMEWORKS
from .helpers import rel

PROBLEM = QuadraticProgram()


def _solve(framework: str, solver: str, K: int, n: int = 8) -> np.ndarray:
    prep = prepare(Point("qp", "unrolled", framework, n=n, K=K,
                         options={"solver": solver, "batch": "3"}))
    _, x = prep.fw.compile(prep.forward_program())(prep.theta, prep.arrays)
    assert prep.residual_norm(x) < 1e-9
    return prep.fw.to_numpy(x)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_interior_point_and_admm_reach_the_same_solution(framework):
    ipm, admm = _solve(framework, "ipm", 30), _solve(framework, "admm", 3000)
    assert np.abs(ipm - admm).max() < 1e-6
    reference = PROBLEM.solve(PROBLEM.generate(8, 0, {"batch": 3}))
    assert np.abs(admm - reference).max() < 1e-9


@pytest.mark.parametrize("params", ["qhb", "all"])
def test_converged_reference_against_finite_differences_of_the_solution_map(params):
    inst = PROBLEM.generate(5, 2, {"batch": 2, "params": params})
    d = {**inst.arrays, **inst.consts}

    def outer(theta):
        z, _, _ = PROBLEM.split_x(np, d, PROBLEM.solve(dataclasses.replace(inst, theta=theta)))
        return float(np.sum(d["w"] * z))

    h, fd = 1e-6, np.empty(inst.theta.size)
    for i in range(inst.theta.size):
        e = np.zeros(inst.theta.size)
        e[i] = h
        fd[i] = (outer(inst.theta + e) - outer(inst.theta - e)) / (2 * h)
    assert rel(PROBLEM.reference_gradient(inst, 1, "converged"), fd) < 1e-7


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("solver, K", [("admm", 30), ("ipm", 4)])
@pytest.mark.parametrize("backend", ["unrolled", "checkpoint-sqrt"])
def test_k_step_derivative_with_respect_to_every_matrix(backend, solver, K, framework):
    """params=all: θ = (q, h, b, Q, G, A); the ADMM step then solves with θ-dependent
    (Q + σI + ρCᵀC). Exact strategies equal the complex-step derivative of the K-step map."""
    options = {"solver": solver, "batch": "2", "params": "all"}
    inst = PROBLEM.generate(4, 0, {"solver": solver, "batch": 2, "params": "all"})
    assert inst.theta.size == 2 * (4 + 4 + 1 + 16 + 16 + 4)
    ev = evaluate(Point("qp", backend, framework, n=4, K=K, options=options))
    assert rel(ev.gradient, PROBLEM.reference_gradient(inst, K, "k_step")) < 1e-10


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("backend", ["unrolled", "checkpoint-sqrt", "forward-batched"])
def test_interior_point_k_step_derivative(backend, framework):
    """Before convergence (K = 4) the derivative of the IPM map is exact to 1e-10 against the
    complex-step reference; after it (K = 25) the λ/s ratios near 1/μ cost digits (≤ 1e-6)."""
    options = {"solver": "ipm", "batch": "2"}
    inst = PROBLEM.generate(6, 0, {"solver": "ipm", "batch": 2})
    for K, tol in ((4, 1e-10), (25, 1e-6)):
        ev = evaluate(Point("qp", backend, framework, n=6, K=K, options=options))
        assert rel(ev.gradient, PROBLEM.reference_gradient(inst, K, "k_step")) < tol


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("backend", ["ift-direct", "ift-gmres"])
def test_ift_gradient_matches_qpth(backend, framework):
    """qpth (Amos & Kolter's layer) solves the same batch and differentiates ℓ = Σ w·z* by its
    own KKT backward; our IFT gradient after 30 interior-point iterations agrees to 1e-5."""
    torch = pytest.importorskip("torch")
    from qpth.qp import QPFunction, QPSolvers

    n, B = 6, 2
    inst = PROBLEM.generate(n, 4, {"batch": B, "params": "all"})
    d = {**inst.arrays, **inst.consts}
    data = {k: torch.tensor(v, requires_grad=True)
            for k, v in PROBLEM.split_theta(np, d, inst.theta).items()}
    z = QPFunction(verbose=-1, eps=1e-12, maxIter=50, solver=QPSolvers.PDIPM_BATCHED)(
        *(data[k] for k in ("Q", "q", "G", "h", "A", "b")))
    (torch.tensor(d["w"]) * z).sum().backward()

    ours = evaluate(Point("qp", backend, framework, n=n, K=30, seed=4,
                          options={"batch": str(B), "params": "all"}))
    z_ours, _, _ = PROBLEM.split_x(np, d, PROBLEM.solve(inst))
    assert np.abs(z.detach().numpy() - z_ours).max() < 1e-5
    ours_blocks = PROBLEM.split_theta(np, d, ours.gradient)
    for name in ("q", "h", "b", "G", "A"):
        assert rel(ours_blocks[name], data[name].grad.numpy()) < 1e-5, name
    # qpth reports the symmetric part of ∂ℓ/∂Q (Q is symmetric); ours is through Qz as written
    dQ = ours_blocks["Q"]
    assert rel(0.5 * (dQ + dQ.transpose(0, 2, 1)), data["Q"].grad.numpy()) < 1e-5
    assert rel(ours.gradient, PROBLEM.reference_gradient(inst, 1, "converged")) < 1e-8


def test_instance_dump_names_every_matrix(tmp_path):
    """instance.npz: Q, q, G, h, A, b, w under their own names; θ = (q, h, b) in that order."""
    inst = PROBLEM.generate(5, 1, {"batch": 3})
    inst.dump(tmp_path / "instance.npz")
    data = np.load(tmp_path / "instance.npz")
    assert {"theta", "Q", "q", "G", "h", "A", "b", "w"} <= set(data.files)
    assert data["Q"].shape == (3, 5, 5) and data["A"].shape == (3, 1, 5)
    assert np.array_equal(data["theta"], np.concatenate(
        [data["q"].ravel(), data["h"].ravel(), data["b"].ravel()]))
    # OptNet's construction: Q = UᵀU + 1e-3·I is positive definite with λ_min ≥ 1e-3
    assert np.linalg.eigvalsh(data["Q"]).min() >= 1e-3 - 1e-12


def test_ift_cg_is_unsupported_with_a_reason():
    from suite.plugin.errors import UnsupportedError
    from suite.point import validate_point

    with pytest.raises(UnsupportedError, match="symmetric"):
        validate_point(Point("qp", "ift-cg", "torch", n=4, K=10))


def test_weakly_active_constraint_is_reported():
    """Move an inactive constraint onto z*: z* stays optimal with λᵢ = 0 on an active
    constraint — no strict complementarity, ∂F/∂x singular, and ift_warnings says so."""
    inst = PROBLEM.generate(6, 0, {"batch": 1})
    d = {**inst.arrays, **inst.consts}
    x = PROBLEM.solve(inst)
    assert PROBLEM.ift_warnings(inst, x) == []
    z, lam, _ = PROBLEM.split_x(np, d, x)
    qp = PROBLEM.split_theta(np, d, inst.theta)
    q, h, b = qp["q"], qp["h"], qp["b"]
    i = int(np.argmin(np.where(lam[0] < 1e-9, 0, np.inf) + np.arange(lam.shape[1])))
    h = h.copy()
    h[0, i] = qp["G"][0, i] @ z[0]
    moved = dataclasses.replace(inst, theta=np.concatenate([q.ravel(), h.ravel(), b.ravel()]))
    # the polished solution solves the moved problem too (λᵢ = 0 exactly): F(θ', x*) = 0
    npx_residual = PROBLEM.residual(np, d, x, moved.theta)
    assert lam[0, i] == 0.0 and np.abs(npx_residual).max() < 1e-12
    warnings = PROBLEM.ift_warnings(moved, x)
    assert warnings and "strict complementarity" in warnings[0]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_gmres_default_restart_solves_the_batched_kkt_within_dim_x_steps(framework):
    """Full GMRES needs at most dim x Arnoldi steps; the default restart (full while the basis
    fits in 4 MiB) keeps it full here, where restarting at 50 took ≈ 1000 steps for the same
    tolerance."""
    point = dict(n=10, K=1000, options={"solver": "admm", "batch": "4"})
    ev = evaluate(Point("qp", "ift-gmres", framework, **point))
    direct = evaluate(Point("qp", "ift-direct", framework, **point)).gradient
    dim_x = 4 * (10 + 10 + 2)
    assert int(ev.aux["solver_iters"]) <= dim_x and bool(ev.aux["solver_converged"])
    assert rel(ev.gradient, direct) < 1e-12


def test_torch_forward_mode_jacobian_pushes_its_tangents_in_chunks():
    """jacobian=forward-mode builds the KKT blocks from 112 JVPs (n = 50: 50 + 50 + 12 per
    instance); eager vmap held every intermediate for all of them at once (10.1 MB peak at
    batch 4), in chunks of JVP_CHUNK_BYTES (18 tangents of 448 doubles) the whole gradient
    stays under 4 MiB, and the gradient is the closed form's to rounding."""
    from suite.frameworks.torch_adapter import JVP_CHUNK_BYTES
    from suite.measure import measure
    from suite.point import Settings

    opts = {"solver": "ipm", "batch": "4"}
    forward = Point("qp", "ift-direct", "torch", n=50, K=10,
                    options={**opts, "jacobian": "forward-mode"})
    record = measure(forward, Settings(repeats=1))
    assert record.status == "ok" and record.jvp_evals == 112
    assert JVP_CHUNK_BYTES // (448 * 8) < 112 and record.peak_bytes < 4 * 2**20
    closed = evaluate(Point("qp", "ift-direct", "torch", n=50, K=10, options=opts)).gradient
    assert rel(evaluate(forward).gradient, closed) < 1e-10
