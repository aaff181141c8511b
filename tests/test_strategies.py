"""Every strategy × framework on gd: gradients against float64 references, torch vs JAX,
and the exact operation counts of the counting pass."""

from __future__ import annotations

import numpy as np
import pytest

from problems.gd import GradientDescentHyper
from suite.point import Point
from suite.program import evaluate

from .conftest import FRAMEWORKS

PROBLEM = GradientDescentHyper()
N = 12


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def instance():
    return PROBLEM.generate(N, seed=0, options={})


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("K", [5, 150])
def test_unrolled_equals_k_step_reference(framework, K, instance):
    ev = evaluate(Point("gd", "unrolled", framework, n=N, K=K))
    assert _rel(ev.gradient, PROBLEM.reference_gradient(instance, K, "k_step")) < 1e-10


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("backend", ["ift-direct", "ift-cg"])
def test_ift_equals_converged_reference_at_a_solution(framework, backend, instance):
    ev = evaluate(Point("gd", backend, framework, n=N, K=1500))
    # achieved ≤ 8.2e-15 (torch ift-cg): x_1500 is w* to rounding
    assert _rel(ev.gradient, PROBLEM.reference_gradient(instance, 1, "converged")) < 1e-12


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ift_away_from_a_solution_is_measurably_wrong(framework, instance):
    """At K=10 the iterate is far from w*: the IFT gradient must show a real error."""
    ev = evaluate(Point("gd", "ift-direct", framework, n=N, K=10))
    assert _rel(ev.gradient, PROBLEM.reference_gradient(instance, 1, "converged")) > 1e-3


@pytest.mark.parametrize("backend", ["unrolled", "ift-direct", "ift-cg"])
@pytest.mark.parametrize("K", [20, 400])
def test_torch_and_jax_agree(backend, K):
    torch_grad = evaluate(Point("gd", backend, "torch", n=N, K=K)).gradient
    jax_grad = evaluate(Point("gd", backend, "jax", n=N, K=K)).gradient
    assert _rel(torch_grad, jax_grad) < 1e-10


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_float32_is_close_but_not_float64_exact(framework, instance):
    ev = evaluate(Point("gd", "unrolled", framework, n=N, K=50, dtype="float32"))
    err = _rel(ev.gradient, PROBLEM.reference_gradient(instance, 50, "k_step"))
    assert 1e-9 < err < 1e-3


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_counts_unrolled(framework):
    counts = evaluate(Point("gd", "unrolled", framework, n=N, K=37), count=True).counts
    assert counts == {"step_evals": 37, "vjp_evals": 37, "jvp_evals": 0, "hvp_evals": 0,
                      "solver_iters": 0}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_counts_ift_direct(framework):
    counts = evaluate(Point("gd", "ift-direct", framework, n=N, K=37), count=True).counts
    # K forward steps, n JVPs to build ∂F/∂x, one VJP of ℓ and one of F w.r.t. θ
    assert counts == {"step_evals": 37, "vjp_evals": 2, "jvp_evals": N, "hvp_evals": 0,
                      "solver_iters": 0}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_counts_ift_cg_match_the_solver(framework):
    ev = evaluate(Point("gd", "ift-cg", framework, n=N, K=300), count=True)
    iters = ev.counts["solver_iters"]
    assert iters == ev.aux["solver_iters"]
    assert ev.counts["hvp_evals"] == iters  # one product per CG iteration, none for r₀ = b
    assert 1 <= iters <= N + 5  # CG on an N×N SPD system: about N steps at most
    assert ev.counts["step_evals"] == 300 and ev.counts["vjp_evals"] == 2
    assert ev.aux["solver_converged"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_cg_maxiter_is_reported_as_not_converged(framework):
    ev = evaluate(Point("gd", "ift-cg", framework, n=N, K=300,
                        options={"maxiter": "2", "tol": "1e-14"}), count=True)
    assert ev.aux["solver_iters"] == 2 and ev.counts["hvp_evals"] == 2
    assert not ev.aux["solver_converged"]
