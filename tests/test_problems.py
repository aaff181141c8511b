"""Every problem: its float64 references against central finite differences, its IFT strategies
against the converged reference, torch against JAX, and reverse mode's trace linear in K."""

from __future__ import annotations

import numpy as np
import pytest

import problems
from problems.base import numpy_namespace
from suite.point import Point, validate_point
from suite.program import evaluate

from . import support_matrix
from .conftest import FRAMEWORKS
from .helpers import SMALL, rel, trace_bytes

PROBLEMS = list(support_matrix.PROBLEMS)
SIZE = {"savi": 2, "imaml": 2}
#: K at which each problem's solver has converged to rounding (for the converged reference)
CONVERGED_K = {"gd": 4000, "softmax": 4000, "sparsemax": 120, "savi": 2000, "qp": 2000,
               "deq": 200, "imaml": 400}


def _instance(name: str, n: int):
    problem = problems.registry()[name]
    parsed = validate_point(Point(name, "unrolled", "torch", n=n, K=1,
                                  options=SMALL.get(name, {})))["problem"]
    return problem, problem.generate(n, 0, parsed)


def _outer(problem, inst, theta: np.ndarray, K: int) -> float:
    npx = numpy_namespace()
    d = {**inst.arrays, **inst.consts}
    state = problem.init(npx, d, theta)
    for _ in range(K):
        state = problem.step(npx, d, state, theta)
    return float(problem.loss(npx, d, problem.solution(npx, d, state, theta), theta))


def _finite_differences(problem, inst, K: int, h: float = 1e-6, coords: int = 16):
    p = inst.theta.size
    idx = np.random.default_rng(1).choice(p, size=min(p, coords), replace=False)
    out = np.empty(idx.size)
    for j, i in enumerate(idx):
        e = np.zeros(p)
        e[i] = h
        out[j] = (_outer(problem, inst, inst.theta + e, K)
                  - _outer(problem, inst, inst.theta - e, K)) / (2 * h)
    return idx, out


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("K", [3, 12])  # bisection brackets stay ≫ the FD step h
def test_k_step_reference_against_finite_differences(name, K):
    problem, inst = _instance(name, SIZE.get(name, 6))
    idx, fd = _finite_differences(problem, inst, K)
    ref = problem.reference_gradient(inst, K, "k_step")[idx]
    assert np.linalg.norm(ref - fd) <= 1e-7 * max(np.linalg.norm(fd), 1.0)


@pytest.mark.parametrize("name", PROBLEMS)
def test_converged_reference_against_finite_differences(name):
    problem, inst = _instance(name, SIZE.get(name, 6))
    idx, fd = _finite_differences(problem, inst, CONVERGED_K[name])
    ref = problem.reference_gradient(inst, 1, "converged")[idx]
    assert np.linalg.norm(ref - fd) <= 1e-7 * max(np.linalg.norm(fd), 1.0)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", PROBLEMS)
def test_unrolled_equals_the_k_step_reference(name, framework):
    """Reverse mode through K steps is the exact K-step derivative (the anchor of every exact
    strategy: tests/test_exact_strategies.py holds them to unrolled at 1e-10)."""
    n, K = SIZE.get(name, 6), 12
    problem, inst = _instance(name, n)
    ev = evaluate(Point(name, "unrolled", framework, n=n, K=K, options=SMALL.get(name, {})))
    assert rel(ev.gradient, problem.reference_gradient(inst, K, "k_step")) < 1e-8


# Case lists come from the pinned support matrix (tests/support_matrix.py), not from asking
# the code what it supports: a cell that stops being supported fails instead of vanishing.
IFT_EXACT = ["ift-direct", "ift-cg", "ift-gmres"]
IFT_CASES = [(p, b) for p in PROBLEMS for b in IFT_EXACT
             if support_matrix.runs(p, b, SMALL.get(p, {}))]


#: IFT at x_K ≈ x* against the converged reference: achieved ≤ 2.6e-14 for the dense and the
#: GMRES solves (qp ift-gmres JAX), ≤ 2.2e-11 for CG (savi torch; CG stops at relative
#: residual 1e-10, and savi's ∂F/∂x is the least well conditioned)
IFT_TOLERANCE = {"ift-direct": 1e-12, "ift-gmres": 1e-12, "ift-cg": 1e-9}
#: imaml's ∂F/∂x (one block of dim x = 145) is the only system here on which GMRES meets its
#: tolerance before its dimension's worth of steps: like CG, it stops at relative residual
#: 1e-10, short of exact (5.3e-11 achieved, both frameworks)
IFT_TOLERANCE_OF = {("imaml", "ift-gmres"): 1e-9}


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name, backend", IFT_CASES)
def test_ift_at_a_solution_equals_the_converged_reference(name, backend, framework):
    n = SIZE.get(name, 6)
    problem, inst = _instance(name, n)
    ev = evaluate(Point(name, backend, framework, n=n, K=CONVERGED_K[name],
                        options=SMALL.get(name, {})))
    error = rel(ev.gradient, problem.reference_gradient(inst, 1, "converged"))
    assert error < IFT_TOLERANCE_OF.get((name, backend), IFT_TOLERANCE[backend])


def test_every_problem_has_an_exact_ift_strategy():
    assert {p for p, _ in IFT_CASES} == set(PROBLEMS)


AGREE_CASES = [(p, b) for p in PROBLEMS for b in support_matrix.BACKENDS
               if b not in ("forward", "forward-batched")
               and support_matrix.runs(p, b, SMALL.get(p, {}))]


@pytest.mark.parametrize("name, backend", AGREE_CASES)
def test_torch_and_jax_agree(name, backend):
    n = SIZE.get(name, 5)
    point = dict(n=n, K=40, options=SMALL.get(name, {}))
    torch_grad = evaluate(Point(name, backend, "torch", **point)).gradient
    jax_grad = evaluate(Point(name, backend, "jax", **point)).gradient
    # the same formula in both frameworks: achieved ≤ 2.2e-14 (savi reversible); the Krylov
    # solvers stop at relative residual 1e-10 after iterations whose rounding differs,
    # achieved ≤ 1.1e-12 (savi ift-cg)
    tolerance = 1e-10 if backend in ("ift-cg", "ift-gmres") else 1e-12
    assert rel(torch_grad, jax_grad) < tolerance


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", PROBLEMS)
def test_unrolled_trace_grows_linearly_in_K(name, framework):
    from suite.program import prepare

    def trace(K):
        prep = prepare(Point(name, "unrolled", framework, n=SIZE.get(name, 20), K=K,
                             options=SMALL.get(name, {})))
        return prep.fw.trace_bytes(prep.gradient_program(), prep.theta, prep.arrays)

    # linear in K: the growth from 400 to 1600 steps is 4× the growth from 100 to 400
    # (increments, because sparsemax keeps one predicate byte per step beside a constant)
    t100, t400, t1600 = trace(100), trace(400), trace(1600)
    assert t400 > t100
    assert 3.6 <= (t1600 - t400) / (t400 - t100) <= 4.4


del trace_bytes  # the per-problem variant above replaces gd's helper here
