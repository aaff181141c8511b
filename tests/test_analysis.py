"""Analysis on a results frame built by hand: exponents, crossovers and Pareto fronts equal
values computed by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from suite import analysis
from suite.records import RECORD_FIELDS, Record

KS = [10, 100, 1000, 10000]


def _row(backend: str, K: int, *, peak: float, time: float, error: float = 1e-16,
         n: int = 10, framework: str = "torch", trace: float | None = None) -> dict:
    rec = Record(problem="gd", backend=backend, framework=framework, device="cpu",
                 dtype="float64", n=n, K=K, seed=0, options={"momentum": 0.9},
                 peak_bytes=int(peak), trace_bytes=int(trace if trace is not None else peak),
                 time_s=time, grad_rel_error=error, grad_error_converged=error)
    return rec.to_json()


@pytest.fixture
def frame() -> pd.DataFrame:
    rows = []
    for K in KS:
        rows.append(_row("unrolled", K, peak=1000 * K, time=1e-4 * K))
        rows.append(_row("ift-cg", K, peak=50_000, time=0.05 + 1e-5 * K, error=1e-10))
        rows.append(_row("ift-jfb", K, peak=40_000, time=0.2, error=0.5))
        rows.append(_row("ift-direct", K, peak=60_000, time=0.3, error=1e-10))
        # time grows like √K: disagrees with the Θ(K) of theory
        rows.append(_row("checkpoint-sqrt", K, peak=3000 * K ** 0.5, time=2e-2 * K ** 0.5))
    for n in (10, 20, 40):  # an n sweep at K = 1000 for ift-direct: peak ∝ n²
        rows.append(_row("ift-direct", 1000, peak=600 * n * n, time=0.3, n=n, error=1e-10))
    rows.append({**_row("unrolled", 10**5, peak=0, time=0), "status": "oom"})  # ignored
    out = pd.DataFrame(rows, columns=list(RECORD_FIELDS))
    out["options_str"] = "momentum=0.9"
    return out


def _slope(table: pd.DataFrame, backend: str, metric: str, **fixed) -> pd.Series:
    sel = (table["backend"] == backend) & (table["metric"] == metric)
    for k, v in fixed.items():
        sel &= table[k] == v
    rows = table[sel]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_exponents_in_K_equal_the_constructed_slopes(frame):
    table = analysis.scaling_exponents(frame, "K")
    row = _slope(table, "unrolled", "peak_bytes", n=10)
    assert row["slope"] == pytest.approx(1.0) and row["agrees"]
    assert row["x_min"] == 100 and row["x_max"] == 10000  # the 3 largest K; the oom is dropped
    assert _slope(table, "ift-cg", "peak_bytes", n=10)["slope"] == pytest.approx(0.0, abs=1e-12)
    sqrt_mem = _slope(table, "checkpoint-sqrt", "peak_bytes", n=10)
    assert sqrt_mem["slope"] == pytest.approx(0.5) and sqrt_mem["agrees"]
    sqrt_time = _slope(table, "checkpoint-sqrt", "time_s", n=10)
    assert sqrt_time["slope"] == pytest.approx(0.5)
    assert sqrt_time["agrees"] is not None and not sqrt_time["agrees"]
    # ift-cg's time 0.05 + 1e-5 K over K = 100…10000: the least-squares slope by hand
    import numpy as np

    K = np.array([100, 1000, 10000.0])
    expected = np.polyfit(np.log(K), np.log(0.05 + 1e-5 * K), 1)[0]
    assert _slope(table, "ift-cg", "time_s", n=10)["slope"] == pytest.approx(expected)


def test_exponent_in_n(frame):
    table = analysis.scaling_exponents(frame, "n")
    row = _slope(table, "ift-direct", "peak_bytes", K=1000)
    assert row["slope"] == pytest.approx(2.0) and row["agrees"]
    assert row["theory_lo"] == row["theory_hi"] == 2


def test_crossovers(frame):
    table = analysis.crossovers(frame[frame["n"] == 10])
    cg = table[table["backend"] == "ift-cg"].iloc[0]
    # time: 1e-4 K > 0.05 + 1e-5 K ⇔ K > 555.6 → first grid K is 1000
    assert cg["crossover_time_K"] == 1000
    # memory: 1000 K > 50 000 ⇔ K > 50 → first grid K is 100
    assert cg["crossover_memory_K"] == 100
    assert cg["n_squared"] == 100
    direct = table[table["backend"] == "ift-direct"].iloc[0]
    assert direct["crossover_time_K"] == 10000 and direct["crossover_memory_K"] == 100
    assert set(table["backend"]) == {"ift-cg", "ift-jfb", "ift-direct"}


def test_pareto_front(frame):
    table = analysis.pareto_front(frame[frame["n"] == 10])
    assert set(table["K"]) == {10000}
    front = dict(zip(table["backend"], table["pareto"], strict=True))
    # ift-direct (6e4 B, 0.3 s, 1e-10) is dominated by ift-cg (5e4 B, 0.15 s, 1e-10)
    assert front == {"unrolled": True, "ift-cg": True, "ift-jfb": True, "ift-direct": False,
                     "checkpoint-sqrt": True}


def test_summary(frame):
    table = analysis.summary(frame)
    unrolled = table[table["backend"] == "unrolled"].iloc[0]
    assert unrolled["memory_exponent"] == pytest.approx(1.0)
    assert unrolled["time_exponent"] == pytest.approx(1.0)
    assert unrolled["max_K"] == 10000 and unrolled["agrees"]
    jfb = table[table["backend"] == "ift-jfb"].iloc[0]
    assert jfb["error_at_max_K"] == pytest.approx(0.5)
