"""The JAX peer rows (jaxopt, optimistix): same gradient as the strategy of ours each
corresponds to, the same x_K, exact step counts beside ours, and a missing library that makes
its rows unsupported without touching the others (or fails in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

import backends
from backends.base import solve_forward
from backends.peers import base as peers_base
from suite.cli import main
from suite.plugin.errors import UnsupportedError
from suite.point import Point, validate_point
from suite.program import evaluate, prepare

from . import support_matrix as matrix
from .helpers import SMALL

ROOT = Path(__file__).resolve().parents[1]
JAX_PEERS = [name for name, (fw, _, _) in matrix.PEERS.items() if fw == "jax"]
#: n = 20, K = 2000, float64: gd is at machine precision (the K-step gradient equals the
#: converged one), so IFT rows and K-step rows are all comparable with their counterparts
GD = dict(n=20, K=2000)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@cache
def _gradient(problem: str, backend: str, n: int, K: int, options: tuple = ()) -> np.ndarray:
    return evaluate(Point(problem, backend, "jax", n=n, K=K, options=dict(options))).gradient


def test_the_jax_peer_rows_are_registered_with_their_counterparts():
    registry = backends.registry()
    assert JAX_PEERS == ["jaxopt-cg", "jaxopt-gmres", "jaxopt-lu", "optimistix-cg",
                         "optimistix-checkpoint", "optimistix-gmres", "optimistix-lu"]
    for name in JAX_PEERS:
        _, ours, converged_only = matrix.PEERS[name]
        assert registry[name].corresponds_to == ours
        assert registry[name].converged_only is converged_only
        # judged against the same reference, fitted against the same law
        assert registry[name].reference == registry[ours].reference
        assert registry[name].theory == registry[ours].theory


@pytest.mark.parametrize("peer", JAX_PEERS)
def test_peer_gradient_equals_ours_on_gd(peer):
    """Achieved: 0 (jaxopt-cg, checkpoint: the same arithmetic), ≤ 9e-16 (GMRES, LU), 6e-13
    (optimistix-cg: lineax's elementwise stopping rule stops at another iterate than ours)."""
    ours = matrix.PEERS[peer][1]
    assert matrix.runs_in("gd", peer, "jax")
    assert rel(_gradient("gd", peer, **GD), _gradient("gd", ours, **GD)) < 1e-8


# optimistix-cg is refused with momentum (see the next test)
@pytest.mark.parametrize("peer", [p for p in JAX_PEERS if p != "optimistix-cg"])
def test_peer_gradient_equals_ours_with_momentum(peer):
    """With momentum the state is (w, v): optimistix iterates and differentiates the pair (its
    IFT system is 2n, ours n), jaxopt and checkpointing as ours; the gradients agree."""
    ours = matrix.PEERS[peer][1]
    opts = (("momentum", "0.9"),)
    assert rel(_gradient("gd", peer, 20, 1000, opts), _gradient("gd", ours, 20, 1000, opts)) \
        < 1e-8


def test_optimistix_cg_is_refused_with_momentum_and_runs_without():
    with pytest.raises(UnsupportedError) as exc:
        validate_point(Point("gd", "optimistix-cg", "jax", n=4, K=3,
                             options={"momentum": "0.9"}))
    assert exc.value.detail == matrix.NEEDS_OPTIONS[("savi", "optimistix-cg")][0].replace(
        "savi", "gd")
    validate_point(Point("savi", "optimistix-cg", "jax", n=4, K=3, options={"momentum": "0"}))


@pytest.mark.parametrize("options", [{}, {"momentum": "0.9"}])
def test_optimistix_fixed_point_runs_exactly_K_steps_to_our_x_K(options):
    """FixedPointIteration(rtol=0, atol=0) never meets its stopping test, so it stops at
    max_steps = K; the state (w, or (w, v) with momentum) is ours to rounding."""
    import jax
    import optimistix as optx

    from problems.base import Bound

    K = 500
    prep = prepare(Point("gd", "optimistix-lu", "jax", n=20, K=K, options=options))
    P = Bound(prep.problem, prep.fw.xp, prep.arrays, prep.instance.consts)
    theta = prep.theta
    sol = optx.fixed_point(lambda s, t: P.step(s, t), optx.FixedPointIteration(0.0, 0.0),
                           P.init(theta), theta, max_steps=K, throw=False)
    assert int(sol.stats["num_steps"]) == K
    assert sol.result == optx.RESULTS.nonlinear_max_steps_reached
    ours = prep.fw.iterate(lambda s: P.step(s, theta), P.init(theta), K)
    for theirs_leaf, ours_leaf in zip(jax.tree_util.tree_leaves(sol.value),
                                      jax.tree_util.tree_leaves(ours), strict=True):
        np.testing.assert_allclose(np.asarray(theirs_leaf), np.asarray(ours_leaf),
                                   rtol=0, atol=1e-12)
    x = np.asarray(P.solution(sol.value, theta))
    np.testing.assert_allclose(x, np.asarray(solve_forward(prep.fw, P, theta, K)),
                               rtol=0, atol=1e-12)
    # the row reports the same count as a diagnostic
    ev = evaluate(Point("gd", "optimistix-lu", "jax", n=20, K=K, options=options))
    assert ev.aux["peer_steps"] == K


@pytest.mark.parametrize("K, snapshots", [(100, 4), (100, None), (1000, None)])
def test_checkpoint_step_evals_beside_revolve(K, snapshots):
    """Both schedules differentiate each of the K steps once; offline Revolve (ours, K known)
    is optimal for s slots, so optimistix's online checkpointing (K unknown to it) recomputes at
    least as much. Achieved (n = 10): K = 100, s = 4: 474 vs 503; s = 7: 355 vs 429;
    K = 1000, s = 10: 4636 vs 6469."""
    opts = {} if snapshots is None else {"snapshots": snapshots}
    point = dict(n=10, K=K, options=opts)
    ours = evaluate(Point("gd", "checkpoint-binomial", "jax", **point), count=True)
    theirs = evaluate(Point("gd", "optimistix-checkpoint", "jax", **point), count=True)
    assert theirs.prepared.options["snapshots"] == ours.prepared.options["snapshots"]
    assert theirs.counts["vjp_evals"] == K  # one VJP per step (ours adds loss and s₀)
    assert ours.counts["vjp_evals"] == K + 2
    assert theirs.counts["step_evals"] >= ours.counts["step_evals"] > 2 * K
    np.testing.assert_allclose(theirs.gradient, ours.gradient, rtol=1e-12, atol=0)


@pytest.mark.parametrize("K", [50, 300])
def test_jaxopt_rows_count_the_forward_steps_and_the_solver_products(K):
    """The counting pass sees our forward's K steps inside custom_root and each product the
    linear solve asks of the matvec handed to it. jax's CG spends one product on b − A·0
    before its first iteration and then stops where ours does (same algorithm, same test):
    one product more than our CG's. solve_lu's products are one vmapped jacfwd: not counted."""
    point = dict(n=10, K=K)
    theirs = evaluate(Point("gd", "jaxopt-cg", "jax", **point), count=True).counts
    ours = evaluate(Point("gd", "ift-cg", "jax", **point), count=True).counts
    assert theirs["step_evals"] == ours["step_evals"] == K
    assert theirs["hvp_evals"] == ours["hvp_evals"] + 1 == ours["solver_iters"] + 1
    assert theirs["vjp_evals"] == 0  # jaxopt's own VJPs of ℓ and F are not ours to count
    lu = evaluate(Point("gd", "jaxopt-lu", "jax", **point), count=True).counts
    assert lu["step_evals"] == K and lu["hvp_evals"] == 0
    assert backends.registry()["jaxopt-lu"].counts == ("step_evals",)


# ---- a missing library --------------------------------------------------------------------
@pytest.fixture
def jaxopt_missing(monkeypatch):
    """jaxopt made unimportable: ``import jaxopt`` raises ImportError as if not installed."""
    peers_base.import_error.cache_clear()
    for name in [m for m in sys.modules if m == "jaxopt" or m.startswith("jaxopt.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "jaxopt", None)
    monkeypatch.delenv(peers_base.REQUIRE_PEERS_ENV, raising=False)
    yield
    peers_base.import_error.cache_clear()


def test_missing_library_makes_its_rows_unsupported_and_nothing_else(jaxopt_missing, capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    jaxopt_rows = [r for r in rows if r["backend"].startswith("jaxopt-")
                   and r["framework"] == "jax" and r["problem"] == "gd"]
    assert len(jaxopt_rows) == 3
    for row in jaxopt_rows:
        assert not row["supported"]
        assert row["reason"] == ("jaxopt is not importable (ModuleNotFoundError: import of "
                                 "jaxopt halted; None in sys.modules)")
    # every other row is as pinned
    others = [r for r in rows if not r["backend"].startswith("jaxopt-")]
    assert others == [r for r in matrix.expected_list_rows()
                      if not r["backend"].startswith("jaxopt-")]
    with pytest.raises(UnsupportedError) as exc:
        validate_point(Point("gd", "jaxopt-lu", "jax", n=4, K=3))
    assert exc.value.detail.startswith("jaxopt is not importable")
    # and the other peers still measure
    ev = evaluate(Point("gd", "optimistix-lu", "jax", n=5, K=20))
    assert np.all(np.isfinite(ev.gradient))


def test_missing_library_becomes_an_unsupported_record(jaxopt_missing):
    from suite.executors.local import run_isolated
    from suite.point import Settings

    record = run_isolated(Point("gd", "jaxopt-cg", "jax", n=4, K=3), Settings(repeats=1))
    assert record.status == "unsupported"
    assert "jaxopt is not importable" in record.error


def test_missing_library_fails_in_ci(jaxopt_missing, monkeypatch):
    monkeypatch.setenv(peers_base.REQUIRE_PEERS_ENV, "1")
    with pytest.raises(RuntimeError, match="IFT_BENCH_REQUIRE_PEERS=1 but jaxopt"):
        main(["list", "--json"])


# ---- a tape the meter cannot see ----------------------------------------------------------
class _UnmeteredPeer(backends.registry()["jaxopt-lu"].__class__):
    """jaxopt-lu declaring its tape unmeasurable: the mechanism the torch peers rely on."""

    name = "unmetered-peer"

    def trace_unmeasurable(self, framework):
        return "the library keeps its factors where the meter cannot see them"


def test_an_unmeasurable_trace_is_recorded_as_null_with_its_reason(monkeypatch):
    from suite.measure import measure
    from suite.point import Settings

    monkeypatch.setitem(backends.registry(), "unmetered-peer", _UnmeteredPeer())
    record = measure(Point("gd", "unmetered-peer", "jax", n=5, K=20), Settings(repeats=1))
    assert record.status == "ok"
    assert record.trace_bytes is None
    assert record.trace_note == "the library keeps its factors where the meter cannot see them"
    assert record.peer.startswith("jaxopt ")
    assert record.peak_bytes > 0
    assert record.reference == "converged"  # judged as ift-direct is
    assert np.isfinite(record.grad_rel_error)


@pytest.mark.slow
def test_point_cli_records_peer_and_meters():
    out = subprocess.run(
        [sys.executable, "-m", "suite", "point", "--problem", "gd", "--backend", "jaxopt-cg",
         "--framework", "jax", "--n", "20", "--K", "100", "--repeats", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    assert "no longer maintained" not in out.stderr + out.stdout  # jaxopt's import warning
    record = json.loads(out.stdout)
    assert record["status"] == "ok"
    import importlib.metadata

    assert record["peer"] == f"jaxopt {importlib.metadata.version('jaxopt')}"
    assert record["peak_bytes"] > 0 and record["trace_bytes"] > 0
    assert record["trace_note"] is None
    assert record["step_evals"] == 100
    ours = evaluate(Point("gd", "ift-cg", "jax", n=20, K=100))
    assert record["grad_rel_error"] == pytest.approx(
        rel(ours.gradient, ours.prepared.problem.reference_gradient(
            ours.prepared.instance, 100, "converged")), rel=1e-6)


# ---- every problem ------------------------------------------------------------------------
#: K at which each problem's solver has converged at the sizes below, so that the IFT on
#: optimistix's T(s) − s and on our F describe the same point
CONVERGED = {"deq": (6, 200), "qp": (4, 200), "savi": (4, 300), "softmax": (6, 3000),
             "sparsemax": (6, 100)}
OTHER_CASES = [(p, peer) for p in matrix.PROBLEMS if p in CONVERGED for peer in JAX_PEERS
               if matrix.runs_in(p, peer, "jax", SMALL.get(p, {}))]


def test_every_problem_has_jax_peer_cases():
    assert {p for p, _ in OTHER_CASES} == set(CONVERGED)
    # refused where the fixed-point IFT does not hold; qp runs them on ADMM
    assert ("sparsemax", "optimistix-lu") not in OTHER_CASES
    assert ("qp", "optimistix-lu") in OTHER_CASES and SMALL["qp"]["solver"] == "admm"
    with pytest.raises(UnsupportedError) as exc:  # the interior point is refused
        validate_point(Point("qp", "optimistix-gmres", "jax", n=4, K=3,
                             options={"solver": "ipm"}))
    assert exc.value.detail == matrix.NEEDS_OPTIONS[("qp", "optimistix-gmres")][0]


@pytest.mark.parametrize("problem, peer", OTHER_CASES)
def test_peer_gradient_equals_ours_on_every_problem(problem, peer):
    """Achieved ≤ 1.5e-11 (jaxopt-gmres on savi; the rest ≤ 6e-14)."""
    n, K = CONVERGED[problem]
    opts = tuple(sorted(SMALL.get(problem, {}).items()))
    ours = matrix.PEERS[peer][1]
    assert rel(_gradient(problem, peer, n, K, opts), _gradient(problem, ours, n, K, opts)) < 1e-8
