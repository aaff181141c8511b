"""Side by side: our ``ift-direct`` on the batched OptNet QP against qpth's ``QPFunction``.

Both solve the same instance (``problems.qp``, θ = (q, h, b); Q, G, A fixed) by a batched
primal–dual interior point with the same budget of K iterations (``POINTS``), and return
dℓ/dθ for ℓ = Σ w·z* — ours by the IFT on the per-instance KKT blocks (one batched LU), qpth
by its own KKT backward. Every test checks the two gradients agree
(they differentiate the same solution map); none asserts a time.

``make bench-pytest`` times them (pytest-benchmark). For the issue's side-by-side table — time
and memray peak of ours (torch and JAX) and qpth's, interleaved in one process so that load
affects them alike — run ``.venv/bin/python -m tests.benchmarks.test_qp_vs_qpth``.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import pytest

from problems.qp import QuadraticProgram
from suite.point import Point
from suite.program import prepare

#: (n, batch) → the iteration budget K of both solvers: 10, qpth's count on these instances,
#: except at n = 50, batch 64, where 10 leave some instances unconverged (gradient error 1e-3
#: against the converged reference for both) and 14 reach it (7.6e-9)
POINTS = {(10, 4): 10, (10, 64): 10, (50, 4): 10, (50, 64): 14}
#: ours against qpth at the same K: achieved ≤ 1.7e-7 on these points (qpth stops at its own
#: tolerance; the IFT is exact only at a solution)
AGREEMENT = 1e-6
PROBLEM = QuadraticProgram()


def ours(framework: str, n: int, batch: int, jacobian: str = "closed-form"):
    """(call, gradient→numpy): one full gradient, forward solve included, warmed up."""
    prep = prepare(Point("qp", "ift-direct", framework, n=n, K=POINTS[n, batch],
                         options={"batch": str(batch), "jacobian": jacobian}))
    fw, fn = prep.fw, prep.fw.compile(prep.gradient_program())

    def call():
        out = fn(prep.theta, prep.arrays)
        fw.synchronize(out)
        return out

    call()
    return call, lambda out: fw.to_numpy(out[0])


def qpth(n: int, batch: int):
    """(call, gradient→numpy) of qpth's QPFunction forward + backward on the same instance,
    the gradient concatenated in our θ order (q, h, b)."""
    import torch
    from qpth.qp import QPFunction, QPSolvers

    inst = PROBLEM.generate(n, 0, {"batch": batch})
    d = {**inst.arrays, **inst.consts}
    data = {k: torch.tensor(np.asarray(v))
            for k, v in PROBLEM.split_theta(np, d, inst.theta).items()}
    w = torch.tensor(d["w"])

    def call():
        q, h, b = (data[k].clone().requires_grad_(True) for k in ("q", "h", "b"))
        layer = QPFunction(verbose=-1, eps=1e-12, maxIter=POINTS[n, batch],
                           solver=QPSolvers.PDIPM_BATCHED)
        z = layer(data["Q"], q, data["G"], h, data["A"], b)
        (w * z).sum().backward()
        return q.grad, h.grad, b.grad

    call()
    return call, lambda out: np.concatenate([g.numpy().ravel() for g in out])


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("n, batch", list(POINTS))
def test_ours_torch(benchmark, n, batch):
    call, grad = ours("torch", n, batch)
    out = benchmark(call)
    q_call, q_grad = qpth(n, batch)
    assert _rel(grad(out), q_grad(q_call())) < AGREEMENT


@pytest.mark.parametrize("n, batch", list(POINTS))
def test_qpth(benchmark, n, batch):
    call, grad = qpth(n, batch)
    out = benchmark(call)
    ours_call, ours_grad = ours("torch", n, batch)
    assert _rel(grad(out), ours_grad(ours_call())) < AGREEMENT


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_forward_mode_and_closed_form_jacobians_agree(framework):
    """The KKT blocks in closed form and by forward mode give the same gradient."""
    a_call, a_grad = ours(framework, 10, 4, "closed-form")
    b_call, b_grad = ours(framework, 10, 4, "forward-mode")
    assert _rel(a_grad(a_call()), b_grad(b_call())) < 1e-12


def side_by_side(repeats: int = 15) -> list[dict]:
    """Median time (interleaved repeats) and memray peak of every contender at every point."""
    import torch

    from suite.measure import memray_peak_bytes

    torch.set_num_threads(1)
    rows = []
    for n, batch in POINTS:
        contenders = {"qpth": qpth(n, batch), "ours torch": ours("torch", n, batch),
                      "ours torch fwd-mode": ours("torch", n, batch, "forward-mode"),
                      "ours jax": ours("jax", n, batch)}
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(repeats):
            for name, (call, _) in contenders.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        reference = contenders["qpth"][1](contenders["qpth"][0]())
        for name, (call, grad) in contenders.items():
            rows.append({"n": n, "batch": batch, "K": POINTS[n, batch], "who": name,
                         "time_ms": 1e3 * statistics.median(times[name]),
                         "peak_MB": memray_peak_bytes(call) / 1e6,
                         "rel_to_qpth": _rel(grad(call()), reference)})
    return rows


if __name__ == "__main__":
    table = side_by_side(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
    qpth_rows = {(r["n"], r["batch"]): r for r in table if r["who"] == "qpth"}
    print(f"{'n':>3} {'B':>3} {'K':>3} {'who':<20} {'time ms':>9} {'×qpth':>6} {'peak MB':>8} "
          f"{'×qpth':>6} {'grad vs qpth':>12}")
    for r in table:
        q = qpth_rows[(r["n"], r["batch"])]
        print(f"{r['n']:>3} {r['batch']:>3} {r['K']:>3} {r['who']:<20} {r['time_ms']:9.2f} "
              f"{r['time_ms'] / q['time_ms']:6.2f} {r['peak_MB']:8.2f} "
              f"{r['peak_MB'] / q['peak_MB']:6.2f} {r['rel_to_qpth']:12.1e}")
