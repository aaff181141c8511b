"""Small helpers shared by tests (in-process evaluation and meters)."""

from __future__ import annotations

import numpy as np

from suite.measure import memray_peak_bytes
from suite.point import Point
from suite.program import prepare

#: options that keep each problem small enough for per-strategy tests (forward mode costs
#: dim θ sweeps: savi's decoder is large by default). qp runs ADMM here: its K-step map is
#: well conditioned at every K, while the interior point's is not once it has converged
#: (tests/test_qp.py covers the interior point).
SMALL = {"gd": {}, "softmax": {}, "sparsemax": {}, "savi": {"hidden": "4", "batch": "3"},
         "qp": {"batch": "2", "solver": "admm"}}


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def trace_bytes(backend: str, framework: str, K: int, n: int = 50, **options: str) -> int:
    prep = prepare(Point("gd", backend, framework, n=n, K=K, options=options))
    return prep.fw.trace_bytes(prep.gradient_program(), prep.theta, prep.arrays)


def peak_bytes(backend: str, framework: str, K: int, n: int = 50, **options: str) -> int:
    prep = prepare(Point("gd", backend, framework, n=n, K=K, options=options))
    fn = prep.fw.compile(prep.gradient_program())

    def call():
        out = fn(prep.theta, prep.arrays)
        prep.fw.synchronize(out)
        return out

    call()  # warm-up / compile
    return memray_peak_bytes(call)


def require_ray():
    """The ray module; a test without it is skipped with the reason, except where
    ``IFT_BENCH_REQUIRE_RAY=1`` (CI: ``make setup`` installs it) makes that a failure."""
    import os

    import pytest

    try:
        import ray
    except ImportError as exc:
        message = f"the ray extra is not installed ({exc}); pip install -e '.[ray]'"
        if os.environ.get("IFT_BENCH_REQUIRE_RAY") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return ray


def require_peer(backend: str) -> None:
    """For a peer row: its libraries import, else the test is skipped with the reason, except
    where ``IFT_BENCH_REQUIRE_PEERS=1`` (CI) makes that a failure. Our own rows: nothing."""
    import importlib
    import os

    import pytest

    import backends
    from backends.peers.base import REQUIRE_PEERS_ENV, PeerStrategy

    strategy = backends.registry()[backend]
    if not isinstance(strategy, PeerStrategy):
        return
    for module in strategy.modules:
        if os.environ.get(REQUIRE_PEERS_ENV) == "1":
            importlib.import_module(module)
        else:
            pytest.importorskip(module)
