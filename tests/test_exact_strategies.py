"""Exact strategies give unrolled's gradient (1e-10, float64) on every problem they support,
in both frameworks, and the counting pass proves their schedules."""

from __future__ import annotations

import numpy as np
import pytest

from backends.binomial_schedule import minimal_advances
from suite.plugin.errors import UnsupportedError
from suite.point import Point, validate_point
from suite.program import evaluate

from . import support_matrix
from .conftest import FRAMEWORKS
from .helpers import SMALL, rel

EXACT = ["forward", "forward-batched", "checkpoint-sqrt", "checkpoint-binomial", "reversible"]
# gd is checked with and without momentum (reversible needs it); savi always has momentum;
# imaml with momentum only (its plain descent is the k_step reference's, tests/test_imaml.py)
OPTION_SETS = {"gd": [{}, {"momentum": "0.9"}], "imaml": [{"momentum": "0.9"}]}
#: K per problem: the smallest K whose gradient is not identically zero (gd starts from
#: w₀ = 0, so w₁, and with momentum v₁, does not depend on θ: every K = 1 gradient is 0), one
#: K past every schedule's trivial cases, and a larger one; savi, the costliest (forward mode
#: costs dim θ sweeps), keeps two, and imaml (75 sweeps here) one: the others cover K = 1
K_VALUES = {"gd": (2, 9, 64), "savi": (1, 24), "imaml": (24,)}
#: n per problem: imaml's dim θ = 70n + 5 (at n = 1, 75)
SIZES = {"savi": 3, "imaml": 1}

# The cases come from the pinned support matrix (tests/support_matrix.py), not from asking the
# code what it supports: a cell that stops being supported fails here instead of vanishing.
CASES = [(prob, back, fw, {**SMALL.get(prob, {}), **opts})
         for prob in support_matrix.PROBLEMS for back in EXACT for fw in FRAMEWORKS
         for opts in OPTION_SETS.get(prob, [{}])
         if support_matrix.runs(prob, back, {**SMALL.get(prob, {}), **opts})]


def test_every_exact_strategy_is_exercised_on_every_problem_it_supports():
    assert {back for _, back, _, _ in CASES} == set(EXACT)
    assert {prob for prob, _, _, _ in CASES} == set(support_matrix.PROBLEMS)


@pytest.mark.parametrize("problem, backend, framework, options, K", [
    (*case, K) for case in CASES for K in K_VALUES.get(case[0], (1, 9, 64))])
def test_exact_strategy_equals_unrolled(problem, backend, framework, options, K):
    n = SIZES.get(problem, 9)
    point = Point(problem, backend, framework, n=n, K=K, options=options)
    reference = evaluate(Point(problem, "unrolled", framework, n=n, K=K, options=options))
    # a zero reference would make the comparison vacuous
    assert np.linalg.norm(reference.gradient) > 1e-8
    assert rel(evaluate(point).gradient, reference.gradient) < 1e-10


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("K, s, expected", [(100, 5, 316), (1000, 10, 3636), (1000, 44, 1954),
                                            (37, 1, 666), (64, 3, None), (1000, 2, None)])
def test_binomial_step_evals_equal_the_revolve_bound(framework, K, s, expected):
    if expected is not None:
        assert minimal_advances(K, s) == expected
    counts = evaluate(Point("gd", "checkpoint-binomial", framework, n=3, K=K,
                            options={"snapshots": str(s)}), count=True).counts
    assert counts["step_evals"] == K + minimal_advances(K, s)
    assert counts["vjp_evals"] == K + 2  # K taped steps, plus ℓ and s₀ once each


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("K, segments", [(100, None), (97, None), (50, 7)])
def test_checkpoint_sqrt_recomputes_every_step_once(framework, K, segments):
    options = {} if segments is None else {"segments": str(segments)}
    counts = evaluate(Point("gd", "checkpoint-sqrt", framework, n=3, K=K, options=options),
                      count=True).counts
    assert counts["step_evals"] == 2 * K and counts["vjp_evals"] == K


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_forward_counts(framework):
    n, K = 6, 25
    seq = evaluate(Point("gd", "forward", framework, n=n, K=K), count=True).counts
    batched = evaluate(Point("gd", "forward-batched", framework, n=n, K=K), count=True).counts
    assert seq["jvp_evals"] == n * K and seq["step_evals"] == n * K  # one sweep per direction
    assert batched["jvp_evals"] == n * K and batched["step_evals"] == K  # one sweep in all
    assert seq["vjp_evals"] == batched["vjp_evals"] == 0


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("k", [1, 5, 30])
def test_truncated_counts_and_bias(framework, k):
    K = 30
    ev = evaluate(Point("gd", "truncated", framework, n=8, K=K, options={"k": str(k)}),
                  count=True)
    assert ev.counts["step_evals"] == K and ev.counts["vjp_evals"] == k
    full = evaluate(Point("gd", "unrolled", framework, n=8, K=K)).gradient
    error = rel(ev.gradient, full)
    if k == K:
        assert error < 1e-12
    else:
        assert error > 1e-3  # dropping the early steps biases the gradient


def test_truncated_bias_shrinks_as_k_grows():
    K = 400
    full = evaluate(Point("gd", "unrolled", "jax", n=10, K=K)).gradient
    errors = [rel(evaluate(Point("gd", "truncated", "jax", n=10, K=K,
                                 options={"k": str(k)})).gradient, full) for k in (5, 50, 200)]
    assert errors[0] > errors[1] > errors[2]


def test_reversible_without_momentum_is_unsupported_with_a_reason():
    with pytest.raises(UnsupportedError, match="momentum"):
        validate_point(Point("gd", "reversible", "torch", n=4, K=3))


def test_truncated_k_is_clipped_to_K():
    ev = evaluate(Point("gd", "truncated", "torch", n=4, K=3, options={"k": "10"}), count=True)
    assert ev.prepared.options["k"] == 3 and ev.counts["vjp_evals"] == 3


def test_gradients_are_finite_in_float32():
    for backend in EXACT:
        options = {"momentum": "0.9"} if backend == "reversible" else {}
        ev = evaluate(Point("gd", backend, "jax", n=6, K=40, dtype="float32", options=options))
        assert np.all(np.isfinite(ev.gradient))
