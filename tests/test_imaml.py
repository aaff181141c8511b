"""The imaml problem: its hand-written second derivatives and float64 references against finite
differences, λ's positive definiteness, torch and JAX through the suite against the references,
and forward mode refused above its dim θ threshold."""

from __future__ import annotations

import numpy as np
import pytest

from problems.base import numpy_namespace
from problems.imaml import DENSE_MAX_DIM, FORWARD_MAX_DIM, ImplicitMAML, dim_theta
from suite.plugin.errors import UnsupportedError
from suite.point import Point, validate_point
from suite.program import evaluate

from .conftest import FRAMEWORKS
from .helpers import rel

PROBLEM = ImplicitMAML()


def _instance(n: int, **options):
    return PROBLEM.generate(n, 0, {"lam": 2.0, "momentum": 0.0, **options})


def _data(inst):
    return {**inst.arrays, **inst.consts}


def _outer_k_step(inst, theta: np.ndarray, K: int) -> float:
    npx = numpy_namespace()
    d = _data(inst)
    state = PROBLEM.init(npx, d, theta)
    for _ in range(K):
        state = PROBLEM.step(npx, d, state, theta)
    return float(PROBLEM.loss(npx, d, PROBLEM.solution(npx, d, state, theta), theta))


def _central_differences(f, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    out = np.empty_like(x)
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        out[j] = (f(x + e) - f(x - e)) / (2 * h)
    return out


def test_hessian_vector_product_against_finite_differences_of_the_gradient():
    inst = _instance(4)
    d = _data(inst)
    rng = np.random.default_rng(5)
    w = inst.theta + 0.3 * rng.standard_normal(inst.theta.size)  # away from θ: b₁, b₂ ≠ 0
    V = rng.standard_normal((3, w.size))
    X, Y = d["X_s"], d["Y_s"]
    h = 1e-5
    for v, hv in zip(V, PROBLEM.cross_entropy_hvp(d, w, V, X, Y), strict=True):
        fd = (PROBLEM.cross_entropy_grad(np, d, w + h * v, X, Y)
              - PROBLEM.cross_entropy_grad(np, d, w - h * v, X, Y)) / (2 * h)
        assert rel(hv, fd) < 1e-6  # achieved ≈ 2e-9
        assert np.array_equal(hv, PROBLEM.cross_entropy_hvp(d, w, v, X, Y))  # one = batched
    # and the hand-written gradient against differences of the loss, on 40 coordinates
    idx = rng.choice(w.size, 40, replace=False)
    grad = PROBLEM.cross_entropy_grad(np, d, w, X, Y)[idx]
    fd = [(PROBLEM.cross_entropy(np, d, w + h * e, X, Y)
           - PROBLEM.cross_entropy(np, d, w - h * e, X, Y)) / (2 * h)
          for e in np.eye(w.size)[idx]]
    assert rel(grad, np.array(fd)) < 1e-8


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_k_step_reference_against_finite_differences(momentum):
    """Every coordinate of θ (dim θ = 285 at n = 4): through the loss at w_K, the K steps'
    ηλ(θ − w) terms and w₀ = θ."""
    K = 5
    inst = _instance(4, momentum=momentum)
    ref = PROBLEM.reference_gradient(inst, K, "k_step")
    fd = _central_differences(lambda th: _outer_k_step(inst, th, K), inst.theta)
    assert rel(ref, fd) < 1e-7  # achieved ≈ 3e-10


@pytest.mark.parametrize("n", [4, 24])  # dense solves at dim w = 285, CG at 1685
def test_converged_reference_is_the_large_K_limit(n):
    inst = _instance(n)
    assert (dim_theta(n, 5) > DENSE_MAX_DIM) == (n == 24)
    d = _data(inst)
    w = PROBLEM.solve(inst)
    assert np.linalg.norm(PROBLEM.residual(np, d, w, inst.theta)) <= 1e-12
    converged = PROBLEM.reference_gradient(inst, 1, "converged")
    errors = [rel(PROBLEM.reference_gradient(inst, K, "k_step"), converged) for K in (30, 600)]
    assert errors[0] > 1e-4  # K = 30 is short of w*: the references differ there
    assert errors[1] < 1e-11  # achieved 7e-15 (n = 4), 1e-14 (n = 24)


def test_lambda_makes_the_jacobian_positive_definite_and_eta_a_safe_step():
    """At the default λ = 2, ∂F/∂w = ∇²L_S + λI is positive definite at w* although ∇²L_S is
    not (the tanh network's negative curvature), and η λ_max(∂F/∂w) < 1 there."""
    inst = _instance(4)
    d = _data(inst)
    w = PROBLEM.solve(inst)
    eigenvalues = np.linalg.eigvalsh(PROBLEM.jacobian(d, w))
    assert eigenvalues[0] - d["lam"] < -0.5  # ∇²L_S(w*) is indefinite (−0.78 here)
    assert eigenvalues[0] > 1.0  # 1.22
    assert d["lr"] * eigenvalues[-1] < 0.75  # 0.60
    assert PROBLEM.ift_warnings(inst, w) == []
    # a λ too small for the negative curvature at θ: the IFT records say so
    weak = _instance(4, lam=0.5)
    warnings = PROBLEM.ift_warnings(weak, weak.theta)
    assert len(warnings) == 1 and "eigenvalue -2.98e-01 ≤ 0" in warnings[0]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_frameworks_through_the_suite_equal_the_references(framework):
    n = 4
    inst = _instance(n)
    unrolled = evaluate(Point("imaml", "unrolled", framework, n=n, K=12)).gradient
    assert rel(unrolled, PROBLEM.reference_gradient(inst, 12, "k_step")) < 1e-12  # 5e-16
    momentum = evaluate(Point("imaml", "unrolled", framework, n=n, K=12,
                              options={"momentum": "0.9"})).gradient
    ref = PROBLEM.reference_gradient(_instance(n, momentum=0.9), 12, "k_step")
    assert rel(momentum, ref) < 1e-12  # 6e-16
    cg = evaluate(Point("imaml", "ift-cg", framework, n=n, K=400)).gradient
    assert rel(cg, PROBLEM.reference_gradient(inst, 1, "converged")) < 1e-9  # 5e-11


@pytest.mark.parametrize("backend", sorted(FORWARD_MAX_DIM))
def test_forward_mode_is_refused_above_its_dim_theta(backend):
    limit = FORWARD_MAX_DIM[backend]
    largest = (limit - 5) // 70  # dim θ = 70n + 5 with 5 classes
    assert (limit, largest) == (20000, 285)
    assert dim_theta(largest, 5) == 19955 and dim_theta(largest + 1, 5) == 20025
    validate_point(Point("imaml", backend, "jax", n=largest, K=3))
    with pytest.raises(UnsupportedError) as exc:
        validate_point(Point("imaml", backend, "torch", n=largest + 1, K=3))
    assert exc.value.detail.startswith(f"{backend} at imaml n = {largest + 1} has dim θ = "
                                       f"{dim_theta(largest + 1, 5)} > {limit}: it needs ")
    assert f"n ≤ {largest} (classes = 5)" in exc.value.detail
    # the threshold is on dim θ: fewer classes allow a wider network
    validate_point(Point("imaml", backend, "torch", n=largest + 1, K=3,
                         options={"classes": "2"}))
    # reverse mode is not refused at any size
    validate_point(Point("imaml", "unrolled", "torch", n=4 * largest, K=3))
