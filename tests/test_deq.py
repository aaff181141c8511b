"""The deep-equilibrium problem: contraction, references (finite differences, complex step, K → ∞),
every supported strategy against float64 in both frameworks and both solvers, Anderson's step
counts, and what reverse mode keeps per step.

The shared case lists (tests/test_problems.py, tests/test_exact_strategies.py) cover deq's
default solver through tests/support_matrix.py; this file adds Anderson and the biased
strategies against float64 formulas of their own.
"""

from __future__ import annotations

import numpy as np
import pytest

from problems.base import Bound, numpy_namespace
from problems.deq import DeepEquilibrium
from suite.plugin.errors import UsageError
from suite.point import Point, validate_point
from suite.program import evaluate, prepare

from . import support_matrix
from .conftest import FRAMEWORKS
from .helpers import rel

PROBLEM = DeepEquilibrium()
SOLVERS = ("picard", "anderson")
NPX = numpy_namespace()


def _instance(n: int, **options):
    return PROBLEM.generate(n, 0, {"method": "picard", "memory": 5, **options})


def _data(inst):
    return {**inst.arrays, **inst.consts}


def _outer(inst, theta: np.ndarray, K: int) -> float:
    d = _data(inst)
    state = PROBLEM.init(NPX, d, theta)
    for _ in range(K):
        state = PROBLEM.step(NPX, d, state, theta)
    return float(PROBLEM.loss(NPX, d, PROBLEM.solution(NPX, d, state, theta), theta))


def _central_differences(inst, K: int, h: float = 1e-6) -> np.ndarray:
    out = np.empty(inst.theta.size)
    for i in range(inst.theta.size):
        e = np.zeros_like(inst.theta)
        e[i] = h
        out[i] = (_outer(inst, inst.theta + e, K) - _outer(inst, inst.theta - e, K)) / (2 * h)
    return out


def _trajectory(inst, K: int) -> list[np.ndarray]:
    d = _data(inst)
    xs = [np.zeros(d["B"] * d["n"])]
    for _ in range(K):
        xs.append(PROBLEM.layer(NPX, d, xs[-1], inst.theta))
    return xs


# ---- the instance -------------------------------------------------------------------------
@pytest.mark.parametrize("n, spectral_norm", [(3, 0.9), (8, 0.9), (8, 0.5), (17, 0.99)])
def test_W_has_the_requested_spectral_norm_and_T_contracts(n, spectral_norm):
    inst = _instance(n, spectral_norm=spectral_norm)
    d = _data(inst)
    W, U, b = PROBLEM.split_theta(NPX, d, inst.theta)
    assert abs(np.linalg.norm(W, 2) - spectral_norm) <= 1e-12
    assert inst.theta.size == n * n + n * d["d"] + n  # θ = (W, U, b), nothing else
    np.testing.assert_array_equal(W, inst.named["W"])
    # ∂T/∂x_b = diag(1 − T(x)_b²) W at random states: every block's norm ≤ ‖W‖₂ < 1
    rng = np.random.default_rng(5)
    for _ in range(5):
        x = 3.0 * rng.standard_normal(d["B"] * n)
        S = 1.0 - PROBLEM.layer(NPX, d, x, inst.theta).reshape(d["B"], n) ** 2
        assert max(np.linalg.norm(s[:, None] * W, 2) for s in S) <= spectral_norm + 1e-12


def test_generation_is_deterministic_in_the_seed():
    a, b = PROBLEM.generate(6, 3, {}), PROBLEM.generate(6, 3, {})
    c = PROBLEM.generate(6, 4, {})
    np.testing.assert_array_equal(a.theta, b.theta)
    for key in a.arrays:
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key])
    assert not np.array_equal(a.theta, c.theta)


@pytest.mark.parametrize("options, field", [
    ({"spectral_norm": "1.0"}, "spectral_norm"), ({"spectral_norm": "0"}, "spectral_norm"),
    ({"method": "newton"}, "method"), ({"memory": "0"}, "memory"), ({"batch": "0"}, "batch")])
def test_bad_options_are_usage_errors_naming_the_option(options, field):
    with pytest.raises(UsageError) as exc:
        validate_point(Point("deq", "unrolled", "torch", n=4, K=3, options=options))
    assert field in str(exc.value) and "allowed" in str(exc.value)


# ---- references -------------------------------------------------------------------------
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("K", [1, 4, 15, 40])
def test_k_step_reference_against_central_differences(solver, K):
    inst = _instance(4, method=solver)
    fd = _central_differences(inst, K)
    ref = PROBLEM.reference_gradient(inst, K, "k_step")
    # achieved ≤ 1.1e-9 (the O(h²) truncation of the differences, h = 1e-6)
    assert rel(ref, fd) < 5e-9


@pytest.mark.parametrize("solver", SOLVERS)
def test_converged_reference_against_central_differences_of_the_solution_map(solver):
    inst = _instance(4, method=solver)
    assert rel(PROBLEM.reference_gradient(inst, 1, "converged"),
               _central_differences(inst, 200)) < 5e-9


@pytest.mark.parametrize("n", [3, 7])
@pytest.mark.parametrize("K", [2, 25])
def test_picard_adjoint_sweep_equals_the_complex_step_derivative(n, K):
    """Two independent float64 derivatives of the K-step Picard map: the hand-written adjoint
    sweep and the complex-step derivative of the same solver code (Anderson's reference)."""
    inst = _instance(n)
    assert rel(PROBLEM.reference_gradient(inst, K, "k_step"),
               PROBLEM._complex_step_k_step(inst, K)) < 1e-13


@pytest.mark.parametrize("solver", SOLVERS)
def test_k_step_reference_tends_to_the_converged_one(solver):
    inst = _instance(8, method=solver)
    converged = PROBLEM.reference_gradient(inst, 1, "converged")
    errors = [rel(PROBLEM.reference_gradient(inst, K, "k_step"), converged)
              for K in (5, 10, 20, 200, 1000)]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[1] > 1e-6  # K = 10 is short of the fixed point: measurably different
    # past convergence the K-step map's derivative is the IFT's, to rounding — for Anderson
    # too, whose mixing weights are decided by rounding there (their derivative multiplies
    # differences of coinciding images): achieved ≤ 7e-16
    assert errors[3] < 1e-14 and errors[4] < 1e-14


def test_converged_reference_solves_F_to_rounding():
    inst = _instance(8, spectral_norm=0.99)
    x = PROBLEM.solve(inst)
    F = PROBLEM.residual(NPX, _data(inst), x, inst.theta)
    assert np.linalg.norm(F) <= 1e-14 * np.sqrt(x.size)


# ---- Anderson against Picard: exact step counts -------------------------------------------
def _steps_to(bound: Bound, theta, tol: float, to_numpy) -> int:
    """Smallest k with ‖F(θ, x_k)‖ ≤ tol · ‖F(θ, x₀)‖."""
    state = bound.init(theta)
    start = np.linalg.norm(to_numpy(bound.residual(bound.solution(state, theta), theta)))
    for k in range(10_000):
        F = to_numpy(bound.residual(bound.solution(state, theta), theta))
        if np.linalg.norm(F) <= tol * start:
            return k
        state = bound.step(state, theta)
    raise AssertionError("did not converge")


def _counts(framework: str | None, n: int, spectral_norm: float) -> dict[str, int]:
    out = {}
    for solver in SOLVERS:
        options = {"method": solver, "spectral_norm": str(spectral_norm)}
        if framework is None:
            inst = _instance(n, method=solver, spectral_norm=spectral_norm)
            bound = Bound(PROBLEM, NPX, inst.arrays, inst.consts)
            out[solver] = _steps_to(bound, inst.theta, 1e-10, np.asarray)
            continue
        prep = prepare(Point("deq", "unrolled", framework, n=n, K=1, options=options))
        bound = Bound(PROBLEM, prep.fw.xp, prep.arrays, prep.instance.consts)
        out[solver] = _steps_to(bound, prep.theta, 1e-10, prep.fw.to_numpy)
    return out


@pytest.mark.parametrize("n, spectral_norm, expected", [
    (8, 0.9, {"picard": 31, "anderson": 18}), (16, 0.99, {"picard": 37, "anderson": 25})])
def test_anderson_reaches_1e_minus_10_in_fewer_steps_than_picard(n, spectral_norm, expected):
    """Exact step counts to ‖F‖ ≤ 1e-10·‖F(x₀)‖ (seed 0), the same in numpy, torch and JAX."""
    counts = {fw: _counts(fw, n, spectral_norm) for fw in (None, *FRAMEWORKS)}
    assert counts[None] == counts["torch"] == counts["jax"] == expected
    assert expected["anderson"] <= 0.7 * expected["picard"]


# ---- strategies against float64, both frameworks, both solvers ----------------------------
#: each supported strategy from the pinned matrix, at a K where its reference is meaningful:
#: the exact ones at K = 12 (before convergence, where the K-step map differs from the
#: solution map by ≈ 1e-5), the IFT ones at K = 200 (x_K = x* to rounding)
OURS = [b for b in support_matrix.BACKENDS if b not in support_matrix.PEERS]
STRATEGIES = [b for b in OURS if support_matrix.runs("deq", b)]
EXACT = {"unrolled", "forward", "forward-batched", "checkpoint-sqrt", "checkpoint-binomial"}
N = 3  # dim θ = 9 + 12 + 3 = 24 forward sweeps


def test_the_matrix_gives_deq_every_strategy_but_cg_and_reversible():
    assert set(OURS) - set(STRATEGIES) == {"ift-cg", "reversible"}


def _truncated_reference(inst, K: int, k: int) -> np.ndarray:
    """Picard's adjoint sweep over the last k of K steps only (θ's earlier influence cut)."""
    d, theta = _data(inst), inst.theta
    B, n = d["B"], d["n"]
    W = PROBLEM.split_theta(NPX, d, theta)[0]
    xs = _trajectory(inst, K)
    adj = PROBLEM._loss_grad(d, xs[-1])
    grad = np.zeros_like(theta)
    for j in range(K - 1, K - 1 - k, -1):
        zeta = (1.0 - xs[j + 1].reshape(B, n) ** 2) * adj
        grad += PROBLEM._theta_grad(d, zeta, xs[j].reshape(B, n))
        adj = zeta @ W
    return grad


def _neumann_reference(inst, x: np.ndarray, k: int) -> np.ndarray:
    """(∂T/∂θ)ᵀ(s ⊙ λ_k) at x with λ_k = Σ_{i≤k} (Jᵀ)^i ∇ₓℓ, J_b = diag(s_b)W, s = 1 − T(x)²:
    the IFT with α = 1 and k Neumann terms (k = 0: Jacobian-free backprop)."""
    d = _data(inst)
    W = PROBLEM.split_theta(NPX, d, inst.theta)[0]
    S = 1.0 - PROBLEM.layer(NPX, d, x, inst.theta).reshape(d["B"], d["n"]) ** 2
    term = total = PROBLEM._loss_grad(d, x)
    for _ in range(k):
        term = (S * term) @ W  # rows: J_bᵀ a_b = Wᵀ(s_b ⊙ a_b)
        total = total + term
    return PROBLEM._theta_grad(d, S * total, x.reshape(d["B"], d["n"]))


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("backend", STRATEGIES)
def test_every_strategy_against_its_float64_reference(backend, solver, framework):
    K = 200 if backend.startswith("ift-") else 12
    inst = _instance(N, method=solver)
    ev = evaluate(Point("deq", backend, framework, n=N, K=K, options={"method": solver}))
    if backend in EXACT:
        # achieved ≤ 1.6e-14 (Anderson, JAX forward-batched)
        assert rel(ev.gradient, PROBLEM.reference_gradient(inst, K, "k_step")) < 1e-12
    elif backend == "truncated":  # default k = 10 of K = 12; Picard and Anderson alike
        if solver == "picard":
            assert rel(ev.gradient, _truncated_reference(inst, K, 10)) < 1e-12
        assert rel(ev.gradient, PROBLEM.reference_gradient(inst, K, "k_step")) > 1e-7
    elif backend in ("ift-jfb", "ift-neumann"):  # biased: against their float64 formulas
        k = 0 if backend == "ift-jfb" else 50
        assert rel(ev.gradient, _neumann_reference(inst, PROBLEM.solve(inst), k)) < 1e-12
        bias = rel(ev.gradient, PROBLEM.reference_gradient(inst, K, "converged"))
        # JFB's bias, the price of its one VJP ((I − J)⁻¹ ≠ I); 50 Neumann terms leave
        # ρ(J)^51 ≈ 5e-9 at n = 3
        assert bias > 0.05 if k == 0 else 1e-12 < bias < 1e-7
    else:
        # direct: ≤ 3e-16; GMRES (per batch block, n = 3 Arnoldi steps): ≤ 4e-16, held to its
        # stopping rule, relative residual 1e-10
        tolerance = 1e-10 if backend == "ift-gmres" else 1e-12
        assert rel(ev.gradient, PROBLEM.reference_gradient(inst, K, "converged")) < tolerance


@pytest.mark.parametrize("backend", ["unrolled", "checkpoint-binomial", "ift-gmres", "ift-jfb"])
@pytest.mark.parametrize("K", [9, 300])
def test_anderson_gradients_agree_between_torch_and_jax(backend, K):
    point = dict(n=5, K=K, options={"method": "anderson", "memory": "3"})
    torch_grad = evaluate(Point("deq", backend, "torch", **point)).gradient
    jax_grad = evaluate(Point("deq", backend, "jax", **point)).gradient
    # achieved ≤ 1.5e-14 before convergence (the least-squares solves round differently)
    assert rel(torch_grad, jax_grad) < 1e-12


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_neumann_with_alpha_one_is_the_adjoint_fixed_point_iteration(framework):
    """α = 1 is deq's default: k Neumann terms are k steps of λ ← Jᵀλ + ∇ₓℓ, whose error
    falls like ρ(J)^{k+1}; the counts are exact."""
    inst = _instance(N)
    converged = PROBLEM.reference_gradient(inst, 1, "converged")
    errors = []
    for k in (2, 8, 32):
        ev = evaluate(Point("deq", "ift-neumann", framework, n=N, K=200,
                            options={"k": str(k)}), count=True)
        assert ev.counts["hvp_evals"] == k and ev.counts["step_evals"] == 200
        errors.append(rel(ev.gradient, converged))
    assert errors[0] > 10 * errors[1] > 100 * errors[2]


# ---- what reverse mode keeps --------------------------------------------------------------
def _trace(framework: str, K: int, **options: str) -> int:
    prep = prepare(Point("deq", "unrolled", framework, n=16, K=K, options=options))
    return prep.fw.trace_bytes(prep.gradient_program(), prep.theta, prep.arrays)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_unrolled_keeps_a_state_per_step_and_anderson_keeps_its_history(framework):
    """tanh makes T nonlinear: reverse mode keeps one to a few states (B·n float64) per step —
    no linear-map trap. Anderson's step builds a new m-slot history of iterates and of images
    (2m states) that its least-squares solve and its mixing read: it keeps at least that."""
    state_bytes = 8 * 16 * 8  # B = 8, n = 16
    picard = [_trace(framework, K) for K in (50, 200)]
    anderson = [_trace(framework, K, method="anderson", memory="5") for K in (50, 200)]
    per_step_picard = (picard[1] - picard[0]) / 150
    per_step_anderson = (anderson[1] - anderson[0]) / 150
    # achieved at n = 8: torch 1 state per step (tanh's output), JAX 3; Anderson 13.4 and 20.8
    assert state_bytes <= per_step_picard <= 4 * state_bytes
    assert per_step_anderson >= 2 * 5 * state_bytes


# ---- the declared block structure -----------------------------------------------------------
def test_block_b_of_F_reads_block_b_of_x_only():
    """The declaration the IFT family relies on (``blocks`` = B): ∂F/∂x is block-diagonal."""
    inst = _instance(5)
    d = _data(inst)
    B, n = d["B"], d["n"]
    assert PROBLEM.blocks(inst.consts) == B
    rng = np.random.default_rng(2)
    x = rng.standard_normal(B * n)
    V = PROBLEM.to_blocks(NPX, inst.consts, np.stack([x, 2 * x]))
    assert V.shape == (2, B, n)
    np.testing.assert_array_equal(PROBLEM.from_blocks(NPX, inst.consts, V)[1], 2 * x)
    F = PROBLEM.residual(NPX, d, x, inst.theta)
    for b in range(B):
        bumped = PROBLEM.to_blocks(NPX, inst.consts, x).copy()
        bumped[b] += rng.standard_normal(n)
        moved = PROBLEM.residual(NPX, d, PROBLEM.from_blocks(NPX, inst.consts, bumped),
                                 inst.theta) != F
        changed = np.flatnonzero(PROBLEM.to_blocks(NPX, inst.consts, moved).any(axis=1))
        assert changed.tolist() == [b]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ift_direct_builds_the_batch_blocks_with_n_jvps(framework):
    """B blocks of n × n instead of one (B·n)² Jacobian: n forward-mode products in all."""
    ev = evaluate(Point("deq", "ift-direct", framework, n=N, K=30), count=True)
    assert ev.counts["jvp_evals"] == N and ev.counts["step_evals"] == 30


def test_anderson_k_step_reference_is_refused_with_its_reason_above_the_direction_limit():
    """Anderson's k-step reference is one complex-step solve per θ entry; above
    COMPLEX_STEP_MAX_DIRECTIONS it is not computed (the converged one still is), so a scale
    point is measured with the reason instead of running out of memory."""
    from problems.deq import COMPLEX_STEP_MAX_DIRECTIONS
    from suite.plugin.errors import ReferenceUnavailable

    small, large = _instance(8, method="anderson"), _instance(70, method="anderson")
    assert small.theta.size <= COMPLEX_STEP_MAX_DIRECTIONS < large.theta.size
    assert PROBLEM.reference_gradient(small, 10, "k_step").shape == small.theta.shape
    with pytest.raises(ReferenceUnavailable, match=f"{large.theta.size} of them"):
        PROBLEM.reference_gradient(large, 10, "k_step")
    converged = PROBLEM.reference_gradient(large, 10, "converged")
    assert converged.shape == large.theta.shape and np.isfinite(converged).all()
