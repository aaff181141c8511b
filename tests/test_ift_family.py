"""The IFT family's linear solvers: GMRES on non-symmetric systems, the Neumann bound,
JFB's bias, and the adjoint diagnostics."""

from __future__ import annotations

import numpy as np
import pytest

from backends.ift import adjoint_diagnostics
from backends.linear_solvers import Operator, conjugate_gradient, direct, gmres, neumann_series
from problems.gd import GradientDescentHyper
from suite.plugin.errors import UnsupportedError
from suite.point import Point
from suite.program import evaluate, prepare

from .conftest import FRAMEWORKS
from .helpers import SMALL, rel

PROBLEM = GradientDescentHyper()


def _framework(name: str):
    from suite.frameworks import registry

    return registry()[name]("cpu", "float64")


def _system(n: int = 40, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = np.eye(n) * 3 + rng.standard_normal((n, n)) / np.sqrt(n)  # non-symmetric, indefinite-ish
    return A, rng.standard_normal(n)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("restart", [5, 15, 40])
def test_gmres_solves_a_nonsymmetric_system(framework, restart):
    fw = _framework(framework)
    A, b = _system()
    A_fw, b_fw = fw.asarray(A), fw.asarray(b)
    result = gmres(fw, Operator(lambda v: A_fw @ v), b_fw,
                   {"tol": 1e-11, "restart": restart, "maxiter": 500})
    z = fw.to_numpy(result.solution)
    assert bool(fw.to_numpy(result.converged))
    assert np.linalg.norm(A @ z - b) <= 1.5e-11 * np.linalg.norm(b)
    assert rel(z, np.linalg.solve(A, b)) < 1e-9


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_cg_and_gmres_agree_on_an_spd_system(framework):
    fw = _framework(framework)
    rng = np.random.default_rng(3)
    M = rng.standard_normal((30, 30))
    A, b = M @ M.T + 30 * np.eye(30), rng.standard_normal(30)
    A_fw, b_fw = fw.asarray(A), fw.asarray(b)
    op = Operator(lambda v: A_fw @ v)
    cg = fw.to_numpy(conjugate_gradient(fw, op, b_fw, {"tol": 1e-12, "maxiter": 200}).solution)
    gm = fw.to_numpy(gmres(fw, op, b_fw, {"tol": 1e-12, "restart": 30, "maxiter": 200})
                     .solution)
    assert rel(cg, gm) < 1e-10


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_neumann_series_meets_its_bound(framework):
    fw = _framework(framework)
    rng = np.random.default_rng(4)
    M = rng.standard_normal((25, 25))
    A, b = M @ M.T / 25 + np.eye(25), rng.standard_normal(25)
    eig = np.linalg.eigvalsh(A)
    alpha = 1.0 / eig[-1]
    rho = max(abs(1 - alpha * eig))
    exact = np.linalg.solve(A, b)
    A_fw, b_fw = fw.asarray(A), fw.asarray(b)
    errors = []
    for k in (0, 5, 20, 80):
        approx = fw.to_numpy(neumann_series(fw, Operator(lambda v: A_fw @ v), b_fw,
                                            {"alpha": alpha, "k": k}).solution)
        errors.append(rel(approx, exact))
        assert errors[-1] <= rho ** (k + 1) * (1 + 1e-9)
    assert errors == sorted(errors, reverse=True)


def _block_system(B: int = 5, m: int = 12, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """B independent SPD systems; the first is 2·I (one Krylov step solves it)."""
    rng = np.random.default_rng(seed)
    blocks = [2.0 * np.eye(m)]
    for i in range(1, B):
        M = rng.standard_normal((m, m))
        blocks.append(M @ M.T / m + (0.05 + 2.0 * (B - i) / B) * np.eye(m))
    return np.stack(blocks), rng.standard_normal((B, m))


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("solver, opts", [
    (conjugate_gradient, {"tol": 1e-12, "maxiter": 500}),
    (gmres, {"tol": 1e-12, "restart": 7, "maxiter": 500}),
    (direct, {}),
])
def test_block_solvers_stop_each_block_on_its_own_residual(solver, opts, framework):
    """One batched program solves B independent systems: each block to tol·‖b_i‖, the loop
    as long as the slowest block (iterations = the largest per-block count, each loop step
    one batched product), the easy blocks frozen earlier."""
    fw = _framework(framework)
    A, b = _block_system()
    A_fw = fw.asarray(A)
    products = []

    def matvec(V):
        products.append(1)
        return (A_fw @ V[..., None])[..., 0]

    result = solver(fw, Operator(matvec, lambda: A_fw), fw.asarray(b), opts)
    z = fw.to_numpy(result.solution)
    exact = np.linalg.solve(A, b[..., None])[..., 0]
    residual = np.linalg.norm(np.einsum("bij,bj->bi", A, z) - b, axis=1)
    if solver is direct:
        assert result.iterations is None and rel(z, exact) < 1e-13
        return
    assert (residual <= 1.5e-12 * np.linalg.norm(b, axis=1)).all()
    assert rel(z, exact) < 1e-10
    its = fw.to_numpy(result.block_iterations)
    assert int(fw.to_numpy(result.iterations)) == its.max() and its.min() < its.max()
    if solver is conjugate_gradient and framework == "torch":  # eager: products are visible
        assert len(products) == its.max()


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("owned", [False, True])
def test_a_direct_solve_of_spd_blocks_is_cholesky_of_their_lower_triangle(framework, owned):
    """``Operator(spd=True)``: each block factored by Cholesky, which reads only the lower
    triangle — so blocks whose upper triangle is garbage still solve the SPD system their lower
    triangle defines (an LU would solve the garbage one), in place or on a copy."""
    fw = _framework(framework)
    A, b = _block_system()
    garbage = np.tril(A) + np.triu(np.random.default_rng(1).standard_normal(A.shape), 1)

    def dense():
        return fw.asarray(garbage.copy())  # a new array each call, as dense_owned promises

    op = Operator(lambda V: None, dense, dense_owned=owned, spd=True)
    z = fw.to_numpy(direct(fw, op, fw.asarray(b), {}).solution)
    assert rel(z, np.linalg.solve(A, b[..., None])[..., 0]) < 1e-13
    general = fw.to_numpy(direct(fw, Operator(lambda V: None, dense, owned), fw.asarray(b),
                                 {}).solution)
    assert rel(general, np.linalg.solve(garbage, b[..., None])[..., 0]) < 1e-12
    assert rel(general, z) > 1e-3


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ift_gmres_and_cg_match_ift_direct_on_gd(framework):
    direct = evaluate(Point("gd", "ift-direct", framework, n=20, K=3000)).gradient
    for backend in ("ift-cg", "ift-gmres"):
        assert rel(evaluate(Point("gd", backend, framework, n=20, K=3000)).gradient,
                   direct) < 1e-9


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_neumann_adjoint_error_falls_with_k_within_the_bound(framework):
    errors = []
    for k in (10, 60, 300):
        ev = evaluate(Point("gd", "ift-neumann", framework, n=20, K=3000, options={"k": str(k)}),
                      count=True)
        assert ev.counts["hvp_evals"] == k
        diag = adjoint_diagnostics(ev.prepared, _x_K(ev.prepared), ev.aux["adjoint"])
        assert 0 < diag["neumann_rho"] < 1
        assert diag["adjoint_rel_error"] <= diag["error_bound"] * (1 + 1e-6)
        errors.append(diag["adjoint_rel_error"])
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_jfb_is_cheap_and_biased(framework):
    ev = evaluate(Point("gd", "ift-jfb", framework, n=20, K=3000), count=True)
    conv = PROBLEM.reference_gradient(PROBLEM.generate(20, 0, {}), 1, "converged")
    assert ev.counts["hvp_evals"] == 0 and ev.counts["vjp_evals"] == 2
    assert rel(ev.gradient, conv) > 0.1


def test_ift_cg_adjoint_matches_the_dense_solve():
    ev = evaluate(Point("gd", "ift-cg", "jax", n=20, K=3000))
    diag = adjoint_diagnostics(ev.prepared, _x_K(ev.prepared), ev.aux["adjoint"])
    assert diag["adjoint_rel_error"] < 1e-9
    assert 1 < diag["jacobian_cond"] < 1e3


def _x_K(prep) -> np.ndarray:
    fw = prep.fw
    _, x = fw.compile(prep.forward_program())(prep.theta, prep.arrays)
    return fw.to_numpy(x)


@pytest.mark.parametrize("backend", ["ift-neumann", "ift-jfb"])
@pytest.mark.parametrize("problem", ["qp", "softmax", "sparsemax"])
def test_prepare_rejects_alpha_less_problems_cleanly(problem, backend):
    """A problem without a default step α refuses Neumann/JFB before anything runs, in one line
    naming the option; given α, the same point prepares and carries it."""
    options = SMALL.get(problem, {})
    with pytest.raises(UnsupportedError) as exc:
        prepare(Point(problem, backend, "torch", n=4, K=3, options=options))
    message = str(exc.value)
    assert "alpha" in message and problem in message and "\n" not in message
    given = prepare(Point(problem, backend, "torch", n=4, K=3,
                          options={**options, "alpha": "0.05"}))
    assert given.options["alpha"] == 0.05


@pytest.mark.parametrize("backend", ["ift-neumann", "ift-jfb"])
def test_gd_supplies_its_inner_step_as_alpha(backend):
    # gd has a default α (its inner step), so both α-strategies are valid without the option
    assert prepare(Point("gd", backend, "torch", n=4, K=3)).options.get("alpha") is None
