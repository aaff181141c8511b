"""The gd problem's float64 references against central finite differences (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from problems.base import numpy_namespace
from problems.gd import GradientDescentHyper

PROBLEM = GradientDescentHyper()


def _outer_k_step(inst, theta: np.ndarray, K: int) -> float:
    npx = numpy_namespace()
    d = {**inst.arrays, **inst.consts}
    w = PROBLEM.init(npx, d, theta)
    for _ in range(K):
        w = PROBLEM.step(npx, d, w, theta)
    return float(PROBLEM.loss(npx, d, w, theta))


def _outer_converged(inst, theta: np.ndarray) -> float:
    shifted = type(inst)(theta=theta, arrays=inst.arrays, consts=inst.consts)
    w = PROBLEM.solve(shifted)
    return float(PROBLEM.loss(numpy_namespace(), {**inst.arrays, **inst.consts}, w, theta))


def _central_differences(f, theta: np.ndarray, h: float = 1e-5) -> np.ndarray:
    grad = np.zeros_like(theta)
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h
        grad[j] = (f(theta + e) - f(theta - e)) / (2 * h)
    return grad


@pytest.mark.parametrize("K", [2, 7, 60])  # K=1: w₁ does not depend on θ (w₀ = 0)
def test_k_step_reference_matches_finite_differences(K):
    inst = PROBLEM.generate(6, seed=3, options={})
    ref = PROBLEM.reference_gradient(inst, K, "k_step")
    fd = _central_differences(lambda th: _outer_k_step(inst, th, K), inst.theta)
    assert np.linalg.norm(ref - fd) / np.linalg.norm(fd) < 1e-7


def test_converged_reference_matches_finite_differences():
    inst = PROBLEM.generate(6, seed=4, options={})
    ref = PROBLEM.reference_gradient(inst, 1, "converged")
    fd = _central_differences(lambda th: _outer_converged(inst, th), inst.theta)
    assert np.linalg.norm(ref - fd) / np.linalg.norm(fd) < 1e-7


def test_k_step_reference_converges_to_the_converged_one():
    """Gradient descent contracts, so the K-step gradient tends to the IFT gradient."""
    inst = PROBLEM.generate(20, seed=0, options={})
    conv = PROBLEM.reference_gradient(inst, 1, "converged")
    errors = [np.linalg.norm(PROBLEM.reference_gradient(inst, K, "k_step") - conv)
              / np.linalg.norm(conv) for K in (10, 100, 1000)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-10


def test_instance_is_deterministic_and_nonlinear():
    a = PROBLEM.generate(8, seed=11, options={})
    b = PROBLEM.generate(8, seed=11, options={})
    assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    assert np.array_equal(a.theta, b.theta)
    # the Hessian changes with w: the inner map is genuinely nonlinear (DESIGN.md, trap 1)
    w1 = np.zeros(8)
    w2 = PROBLEM.solve(a)
    assert np.abs(PROBLEM._hessian(a, w1) - PROBLEM._hessian(a, w2)).max() > 1e-3
