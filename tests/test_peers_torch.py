"""The torch peer rows (torchopt-cg, torchopt-unrolled, qpth) against the strategies of ours they
correspond to: same x_K, same gradient, same exact counts where both define them, and records
whose unmeterable trace is null with a reason rather than a crash or an undercount."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.base import solve_forward
from backends.ift import dense_jacobian
from backends.peers.base import REQUIRE_PEERS_ENV
from problems.base import Bound
from suite.point import Point, Settings
from suite.program import evaluate, prepare

from .helpers import SMALL, rel, trace_bytes

ROOT = Path(__file__).resolve().parents[1]


def _library(module: str) -> None:
    """Skip when a peer library is missing, unless CI requires every peer (then fail)."""
    if os.environ.get(REQUIRE_PEERS_ENV) == "1":
        importlib.import_module(module)
    else:
        pytest.importorskip(module)


@pytest.fixture(autouse=True)
def _peers(request):
    _library("qpth.qp" if "qpth" in request.node.name else "torchopt")


def _pair(problem: str, ours: str, peer: str, n: int, K: int, **options: str):
    return (evaluate(Point(problem, ours, "torch", n=n, K=K, options=options), count=True),
            evaluate(Point(problem, peer, "torch", n=n, K=K, options=options), count=True))


# ---- torchopt-cg ↔ ift-cg ------------------------------------------------------------------

@pytest.mark.parametrize("momentum", ["0", "0.5"])
def test_torchopt_cg_equals_ift_cg_on_gd(momentum):
    """custom_root + solve_cg at our tolerance around our forward: the same gradient, the same
    CG iterations (one algorithm, one stopping rule), one extra product for its r₀ = b − A·0."""
    ours, peer = _pair("gd", "ift-cg", "torchopt-cg", 20, 2000, momentum=momentum)
    assert rel(peer.gradient, ours.gradient) < 1e-8
    assert peer.aux["solver_iters"] == ours.aux["solver_iters"] == ours.counts["solver_iters"]
    assert peer.counts["solver_iters"] == peer.aux["solver_iters"]
    assert peer.counts["hvp_evals"] == ours.counts["hvp_evals"] + 1
    assert peer.counts["step_evals"] == ours.counts["step_evals"] == 2000
    # K = 2000 is converged (≈ 1e-9 at K = 1000): both equal the float64 IFT reference
    prep = peer.prepared
    reference = prep.problem.reference_gradient(prep.instance, 2000, "converged")
    assert rel(peer.gradient, reference) < 1e-8


def test_torchopt_cg_equals_ift_cg_on_savi():
    """torchopt's CG runs on the whole system to ‖r‖ ≤ 1e-10‖b‖; ours on each of savi's B
    diagonal blocks (one per data point) to ‖rᵢ‖ ≤ 1e-10‖bᵢ‖, which implies the former. So each
    adjoint is within κ(∂F/∂x)·1e-10 of the exact one (relative), and they differ by at most
    twice that. The gradients agree to 1e-8 as on gd. (Iteration counts differ by design: a
    block of size 2d needs at most 2d CG steps, the whole system more.)"""
    K, options = 1000, SMALL["savi"]
    ours, peer = _pair("savi", "ift-cg", "torchopt-cg", 2, K, **options)
    prep = ours.prepared
    P = Bound(prep.problem, prep.fw.xp, prep.arrays, prep.instance.consts)
    x_K = prep.fw.to_numpy(solve_forward(prep.fw, P, prep.theta, K))
    kappa = float(np.linalg.cond(dense_jacobian(prep, x_K)))
    assert rel(peer.aux["adjoint"], ours.aux["adjoint"]) < 2 * kappa * 1e-10
    assert rel(peer.gradient, ours.gradient) < 1e-8
    assert peer.aux["solver_iters"] == peer.counts["solver_iters"] == peer.counts["hvp_evals"] - 1


def test_torchopt_default_solver_costs_accuracy():
    """What torchopt's defaults would cost on gd (n = 50, converged x): custom_root's default
    normal-equation CG at rtol 1e-5 is ≥ 1e-6 off the float64 IFT gradient, our setting
    (plain CG, rtol 1e-10) ≤ 1e-9. Measured: 5.5e-5 against 4e-11."""
    import torch
    from torchopt.diff.implicit import custom_root
    from torchopt.linear_solve import solve_cg

    K = 3000
    prep = prepare(Point("gd", "torchopt-cg", "torch", n=50, K=K))
    fw = prep.fw
    P = Bound(prep.problem, fw.xp, prep.arrays, prep.instance.consts)
    x = solve_forward(fw, P, prep.theta, K)
    reference = prep.problem.reference_gradient(prep.instance, K, "converged")
    errors = {}
    for label, kw in (("default", {}), ("ours", {"solve": solve_cg(rtol=1e-10, maxiter=1000)})):
        @custom_root(lambda x_, th: P.residual(x_, th), argnums=1, **kw)
        def solver(init, th):
            return x

        with pytest.warns(FutureWarning, match="functorch.vjp"):  # torchopt 0.7.3's old alias
            _, grad = fw.value_and_grad(lambda th: P.loss(solver(None, th), th), prep.theta)
        assert isinstance(grad, torch.Tensor)
        errors[label] = rel(fw.to_numpy(grad), reference)
    assert errors["default"] > 1e-6
    assert errors["ours"] < 1e-9


def test_torchopt_cg_trace_meter_is_refused_by_torch_func():
    """The reason torchopt-cg records no trace_bytes, reproduced: under the saved-tensor hooks
    the backward's torch.func.vjp raises."""
    prep = prepare(Point("gd", "torchopt-cg", "torch", n=8, K=20))
    with pytest.raises(RuntimeError, match="saved tensor hooks"):
        prep.fw.trace_bytes(prep.gradient_program(), prep.theta, prep.arrays)
    assert "saved-tensor hooks" in prep.strategy.trace_unmeasurable("torch")


# ---- torchopt-unrolled ↔ unrolled ----------------------------------------------------------

def _x_K(problem: str, n: int, K: int, options: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    from backends.peers.torchopt import sgd_forward

    prep = prepare(Point(problem, "torchopt-unrolled", "torch", n=n, K=K, options=options))
    P = Bound(prep.problem, prep.fw.xp, prep.arrays, prep.instance.consts)
    ours = solve_forward(prep.fw, P, prep.theta, K)
    theirs = sgd_forward(prep.fw, P, prep.theta, K)
    return prep.fw.to_numpy(ours), prep.fw.to_numpy(theirs)


def test_torchopt_sgd_reaches_our_x_K():
    """γ = 0: w − η∇f both ways, bit for bit. γ > 0: torchopt's w − η(γm + g) and our
    w + (γv − η g) differ only in rounding (v = −ηm), a few ulps per contracting step."""
    ours, theirs = _x_K("gd", 20, 2000, {})
    assert np.array_equal(ours, theirs)
    ours, theirs = _x_K("gd", 20, 2000, {"momentum": "0.5"})
    assert rel(theirs, ours) < 1e-12
    ours, theirs = _x_K("savi", 2, 1000, SMALL["savi"])  # heavy ball, γ = 0.9
    assert rel(theirs, ours) < 1e-12


@pytest.mark.parametrize("problem,n,K,options", [
    ("gd", 20, 2000, {}),
    ("gd", 20, 2000, {"momentum": "0.5"}),
    ("savi", 2, 1000, SMALL["savi"]),
])
def test_torchopt_unrolled_equals_unrolled(problem, n, K, options):
    """Reverse mode through the same K steps: the same gradient (1e-8; the recurrences differ
    only in rounding), equal to the exact K-step float64 reference, with the same counts."""
    ours, peer = _pair(problem, "unrolled", "torchopt-unrolled", n, K, **options)
    assert rel(peer.gradient, ours.gradient) < 1e-8
    prep = peer.prepared
    assert rel(peer.gradient, prep.problem.reference_gradient(prep.instance, K, "k_step")) < 1e-8
    assert peer.counts["step_evals"] == ours.counts["step_evals"] == K
    assert peer.counts["vjp_evals"] == ours.counts["vjp_evals"] == K


@pytest.mark.parametrize("momentum", ["0", "0.5"])
def test_torchopt_unrolled_trace_equals_ours(momentum):
    """Plain autograd, so the saved-tensor meter sees it: torchopt's update and apply_updates
    save nothing beyond what ∇f saves (scalings by Python numbers, adds), byte for byte ours,
    and both grow linearly in K."""
    peer = {K: trace_bytes("torchopt-unrolled", "torch", K, momentum=momentum)
            for K in (50, 100, 150)}
    for K, value in peer.items():
        assert value == trace_bytes("unrolled", "torch", K, momentum=momentum), K
    assert peer[150] - peer[100] == peer[100] - peer[50] > 0


# ---- qpth ↔ ift-direct ---------------------------------------------------------------------

@pytest.mark.parametrize("params", ["qhb", "all"])
def test_qpth_equals_our_converged_qp_gradient(params):
    """qpth's own interior point and KKT backward against our float64 converged reference and
    our ift-direct after 30 interior-point steps: 1e-6 (qpth clamps λ and slacks at 1e-8 in its
    backward, which costs 1e-8 to 4e-7 on these instances; see the next test)."""
    n, B, options = 8, 3, {"batch": "3", "params": params}
    peer = evaluate(Point("qp", "qpth", "torch", n=n, K=30, seed=4, options=options))
    ours = evaluate(Point("qp", "ift-direct", "torch", n=n, K=30, seed=4, options=options))
    prep = peer.prepared
    reference = prep.problem.reference_gradient(prep.instance, 30, "converged")
    assert rel(peer.gradient, reference) < 1e-6
    assert rel(peer.gradient, ours.gradient) < 1e-6
    assert peer.gradient.shape == prep.instance.theta.shape == (
        B * (2 * n + n // 4) + (B * (n * n + n * n + (n // 4) * n) if params == "all" else 0),)


def test_qpth_accuracy_floor_is_its_backward_clamp(monkeypatch):
    """qpth's backward uses max(λ, 1e-8)/max(slack, 1e-8): with the clamp removed (torch.clamp
    made the identity for one call) its gradient meets the float64 reference to 1e-10, so the
    1e-8-level gap of the row is that clamp, not its interior point."""
    import torch

    point = Point("qp", "qpth", "torch", n=8, K=30, seed=4, options={"batch": "3"})
    clamped = evaluate(point)
    prep = clamped.prepared
    reference = prep.problem.reference_gradient(prep.instance, 30, "converged")
    monkeypatch.setattr(torch, "clamp", lambda x, min=None, max=None: x)
    unclamped = evaluate(point)
    monkeypatch.undo()
    assert rel(unclamped.gradient, reference) < 1e-10 < 1e-9 < rel(clamped.gradient, reference)


def test_qpth_symmetric_Q_convention_and_iteration_count(capsys):
    """params=all: qpth's own ∂ℓ/∂Q is the symmetric part of the row's Q block (built as
    (∂ℓ/∂q) zᵀ in our convention); ipm_iterations equals the passes qpth itself prints with
    verbose=1."""
    import torch
    from qpth.qp import QPFunction, QPSolvers

    options = {"batch": "2", "params": "all"}
    peer = evaluate(Point("qp", "qpth", "torch", n=6, K=30, seed=4, options=options))
    prep = peer.prepared
    d = {**prep.instance.arrays, **prep.instance.consts}
    data = {k: torch.tensor(v, requires_grad=True)
            for k, v in prep.problem.split_theta(np, d, prep.instance.theta).items()}
    capsys.readouterr()
    z = QPFunction(eps=1e-12, verbose=1, maxIter=50, solver=QPSolvers.PDIPM_BATCHED)(
        *(data[k] for k in ("Q", "q", "G", "h", "A", "b")))
    passes = sum(line.startswith("iter:") for line in capsys.readouterr().out.splitlines())
    assert peer.aux["ipm_iterations"] == passes > 0
    (torch.tensor(d["w"]) * z).sum().backward()
    blocks = prep.problem.split_theta(np, d, peer.gradient)
    dQ = blocks["Q"]
    assert rel(0.5 * (dQ + dQ.transpose(0, 2, 1)), data["Q"].grad.numpy()) < 1e-12
    for name in ("q", "h", "b", "G", "A"):
        assert rel(blocks[name], data[name].grad.numpy()) < 1e-12, name


def test_qpth_trace_meter_would_undercount():
    """The reason qpth records no trace_bytes, in numbers: its LU factor of Q alone is
    B·n²·8 bytes kept for the backward, more than the saved-tensor meter sees in all."""
    B, n = 4, 20
    prep = prepare(Point("qp", "qpth", "torch", n=n, K=30, options={"batch": str(B)}))
    metered = prep.fw.trace_bytes(prep.gradient_program(), prep.theta, prep.arrays)
    assert metered < B * n * n * 8
    assert "ctx" in prep.strategy.trace_unmeasurable("torch")


# ---- end to end ----------------------------------------------------------------------------

def test_torchopt_cg_point_from_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "suite", "point", "--problem", "gd", "--backend", "torchopt-cg",
         "--framework", "torch", "--n", "20", "--K", "100", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    record = json.loads(out.stdout)
    record = record[0] if isinstance(record, list) else record
    assert record["status"] == "ok"
    assert record["peer"] == "torchopt 0.7.3"
    assert record["trace_bytes"] is None and "torch.func" in record["trace_note"]
    assert record["peak_bytes"] > 0
    assert record["step_evals"] == 100 and record["solver_iters"] + 1 == record["hvp_evals"]


@pytest.mark.parametrize("point,peer,trace_measured", [
    (Point("gd", "torchopt-unrolled", "torch", n=20, K=100), "torchopt 0.7.3", True),
    (Point("qp", "qpth", "torch", n=8, K=30, options={"batch": "2"}), "qpth 0.0.18", False),
])
def test_peer_records(point, peer, trace_measured):
    from suite.measure import measure

    record = measure(point, Settings(repeats=1))
    assert record.status == "ok" and record.peer == peer and record.peak_bytes > 0
    if trace_measured:
        assert record.trace_note is None
        assert record.trace_bytes == trace_bytes("unrolled", "torch", point.K, n=point.n)
    else:
        assert record.trace_bytes is None and record.trace_note
        assert record.diagnostics["ipm_iterations"] > 0
        # qpth never sees our forward: its time and residual are not recorded as its own
        assert record.forward_time_s is None and record.inner_residual is None
    assert record.grad_rel_error < 1e-6
