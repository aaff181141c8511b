"""What each problem is there to show: the report's softmax identity and its singularity,
sparsemax's unrolled gradient that never converges, SAVI's vanishing encoder gradient."""

from __future__ import annotations

import numpy as np
import pytest

from backends.ift import dense_jacobian
from problems.softmax import Softmax
from problems.sparsemax import Sparsemax, sparsemax_threshold
from suite.point import Point
from suite.program import evaluate, prepare

from .conftest import FRAMEWORKS
from .helpers import rel


def _x_K(prep) -> np.ndarray:
    _, x = prep.fw.compile(prep.forward_program())(prep.theta, prep.arrays)
    return prep.fw.to_numpy(x)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_softmax_kkt_block_inverse_is_the_softmax_jacobian(framework):
    """The report's eq. (5)–(10): the (z, z) block of −[∂F/∂x]⁻¹ ∂F/∂θ is diag(z) − zzᵀ."""
    n = 7
    prep = prepare(Point("softmax", "ift-direct", framework, n=n, K=4000))
    x = _x_K(prep)
    jac = dense_jacobian(prep, x)
    dF_dtheta = np.vstack([np.eye(n), np.zeros((n + 1, n))])  # eq. (6)
    block = -np.linalg.solve(jac, dF_dtheta)[:n]
    z = x[:n]
    assert np.abs(block - (np.diag(z) - np.outer(z, z))).max() < 1e-12
    assert np.abs(z - np.exp(prep.instance.theta) / np.exp(prep.instance.theta).sum()).max() \
        < 1e-13


def test_softmax_k_step_reference_is_the_closed_form():
    problem = Softmax()
    inst = problem.generate(5, 3, {"tau": 0.5, "eta": 0.4})
    c = 1 - (1 - 0.4 * 0.5) ** 7
    z = np.exp(c * inst.theta / 0.5)
    z /= z.sum()
    w = inst.arrays["w"]
    expected = (c / 0.5) * (np.diag(z) - np.outer(z, z)) @ w
    assert np.allclose(problem.reference_gradient(inst, 7, "k_step"), expected, atol=1e-15)
    unrolled = evaluate(Point("softmax", "unrolled", "jax", n=5, K=7, seed=3,
                              options={"tau": "0.5", "eta": "0.4"})).gradient
    assert rel(unrolled, expected) < 1e-12


def test_softmax_singular_kkt_jacobian_is_detected():
    """θ ~ N(0, 30²): some zᵢ < 1e-12 and ∂F/∂x is numerically singular; the IFT is flagged."""
    prep = prepare(Point("softmax", "ift-direct", "torch", n=8, K=4000, options={"scale": "30"}))
    x = _x_K(prep)
    assert x[:8].min() < 1e-12
    warnings = prep.problem.ift_warnings(prep.instance, x)
    assert warnings and "footnote 13" in warnings[0]
    assert np.linalg.cond(dense_jacobian(prep, x)) > 1e12
    healthy = prepare(Point("softmax", "ift-direct", "torch", n=8, K=4000))
    assert healthy.problem.ift_warnings(healthy.instance, _x_K(healthy)) == []


def test_softmax_singularity_reaches_the_record():
    from suite.measure import measure
    from suite.point import Settings

    record = measure(Point("softmax", "ift-direct", "jax", n=8, K=4000,
                           options={"scale": "30"}), Settings(repeats=1))
    assert record.status == "ok"
    assert any("singular" in w for w in record.warnings)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_sparsemax_ift_gives_the_active_set_jacobian(framework):
    n = 9
    prep = prepare(Point("sparsemax", "ift-direct", framework, n=n, K=120))
    x = _x_K(prep)
    theta = prep.instance.theta
    assert abs(x[-1] - sparsemax_threshold(theta)) < 1e-12
    s = (theta > x[-1]).astype(float)
    jac = dense_jacobian(prep, x)
    dF_dtheta = np.vstack([-np.diag(s), np.zeros((1, n))])
    dz = -np.linalg.solve(jac, dF_dtheta)[:n]
    assert np.abs(dz - (np.diag(s) - np.outer(s, s) / s.sum())).max() < 1e-12


def test_sparsemax_unrolled_gradient_never_converges():
    """Reverse mode differentiates the bracketing, not the threshold: its error against the
    sparsemax Jacobian plateaus however large K is, while the IFT's is exact."""
    problem = Sparsemax()
    inst = problem.generate(12, 0, {})
    converged = problem.reference_gradient(inst, 1, "converged")
    errors = [rel(evaluate(Point("sparsemax", "unrolled", "jax", n=12, K=K)).gradient, converged)
              for K in (20, 60, 200)]
    assert min(errors) > 0.01 and max(errors) - min(errors) < 1e-6 * max(errors)
    ift = evaluate(Point("sparsemax", "ift-gmres", "jax", n=12, K=60)).gradient
    assert rel(ift, converged) < 1e-12


def test_savi_encoder_gradient_vanishes_with_K_and_is_zero_by_the_ift():
    small = {"hidden": "4", "batch": "3", "wrt": "encoder"}
    norms = [np.linalg.norm(evaluate(Point("savi", "unrolled", "jax", n=2, K=K,
                                           options=small)).gradient) for K in (5, 50, 500)]
    assert norms[0] > norms[1] > norms[2]
    assert norms[2] < 1e-3 * norms[0]
    ift = evaluate(Point("savi", "ift-cg", "jax", n=2, K=500, options=small)).gradient
    assert np.linalg.norm(ift) == 0.0  # λ* does not depend on λ₀ = g_φ(x), nor ℓ on φ


def test_savi_ift_decoder_gradient_approaches_unrolled():
    small = {"hidden": "4", "batch": "3"}
    gaps = []
    for K in (5, 50, 1000):
        unrolled = evaluate(Point("savi", "unrolled", "jax", n=2, K=K, options=small)).gradient
        ift = evaluate(Point("savi", "ift-cg", "jax", n=2, K=K, options=small)).gradient
        gaps.append(rel(ift, unrolled))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-8


def test_savi_indefinite_hessian_is_reported():
    """At λ* the Hessian blocks are positive definite; at a point away from it they are not,
    and ift_warnings says so rather than let CG run on an indefinite system."""
    from problems.savi import SemiAmortisedVI

    problem = SemiAmortisedVI()
    inst = problem.generate(2, 0, {"hidden": 4, "batch": 3})
    x = problem.solve(inst)
    assert problem.ift_warnings(inst, x) == []
    away = x + np.random.default_rng(0).standard_normal(x.size)
    warnings = problem.ift_warnings(inst, away)
    assert warnings and "indefinite" in warnings[0]
