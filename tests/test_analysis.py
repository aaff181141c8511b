"""Analysis on a results frame built by hand: exponents, crossovers and Pareto fronts equal
values computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports import cells, fit_summary
from suite import analysis
from suite.records import RECORD_FIELDS, Record

KS = [10, 100, 1000, 10000]


def _row(backend: str, K: int, *, peak: float, time: float, error: float = 1e-16,
         n: int = 10, framework: str = "torch", trace: float | None = None) -> dict:
    rec = Record(problem="gd", backend=backend, framework=framework, device="cpu",
                 dtype="float64", n=n, K=K, seed=0, options={"momentum": 0.9},
                 peak_bytes=int(peak), trace_bytes=int(trace if trace is not None else peak),
                 time_s=time, grad_rel_error=error, grad_error_converged=error,
                 grad_error_k_step=1e-16, dim_x=n)
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
    # exactly linear: no bend, so no point lies in a constant-overhead regime; the oom is dropped
    assert row["x_min"] == 10 and row["x_max"] == 10000 and row["verdict"] == "agrees"
    assert row["used"] == "10, 100, 1000, 10000"
    assert _slope(table, "ift-cg", "peak_bytes", n=10)["slope"] == pytest.approx(0.0, abs=1e-12)
    sqrt_mem = _slope(table, "checkpoint-sqrt", "peak_bytes", n=10)
    assert sqrt_mem["slope"] == pytest.approx(0.5, abs=1e-4) and sqrt_mem["agrees"]  # int bytes
    sqrt_time = _slope(table, "checkpoint-sqrt", "time_s", n=10)
    assert sqrt_time["slope"] == pytest.approx(0.5)
    assert sqrt_time["agrees"] is not None and not sqrt_time["agrees"]
    assert sqrt_time["verdict"] == "disagrees"


def test_fit_window_drops_the_constant_overhead_regime_and_refuses_too_few_points(frame):
    """ift-cg's time 0.05 + 1e-5 K: log–log slopes 0.008 (10→100), 0.07 (100→1000), 0.40
    (1000→10000) — bent throughout, so K = 10 and 100 are dropped and two points remain: the
    slope is given but no verdict."""
    table = analysis.scaling_exponents(frame, "K")
    row = _slope(table, "ift-cg", "time_s", n=10)
    K = np.array([1000, 10000.0])
    expected = np.polyfit(np.log(K), np.log(0.05 + 1e-5 * K), 1)[0]
    assert row["slope"] == pytest.approx(expected)
    assert row["used"] == "1000, 10000" and row["dropped"] == "10, 100"
    assert row["verdict"] == "too few points" and not row["fitted"]
    # y = 1 + x: slopes 0.96 and 1.0 over 10, 100, 1000 — a straight enough line, kept whole
    x = np.array([10, 100, 1000.0])
    assert analysis.fit_window(x, 1 + x) == 0
    # y = 100 + x bends (0.4 then 0.95): K = 10 is in the overhead regime
    assert analysis.fit_window(x, 100 + x) == 1


def test_exponent_in_n(frame):
    table = analysis.scaling_exponents(frame, "n")
    row = _slope(table, "ift-direct", "peak_bytes", K=1000)
    assert row["slope"] == pytest.approx(2.0) and row["agrees"]
    assert row["theory_lo"] == row["theory_hi"] == 2
    # n = 10, 20, 40 spans a factor 4, not a decade: the band check stays (the gate reads it)
    # but the report gives no verdict
    assert row["verdict"] == "too few points"


def test_crossovers(frame):
    table = analysis.crossovers(frame[frame["n"] == 10])
    cg = table[table["backend"] == "ift-cg"].iloc[0]
    # time: 1e-4 K > 0.05 + 1e-5 K ⇔ K > 555.6 → slower at 100, faster from 1000 on
    assert cg["crossover_time_K"] == 1000
    assert cg["time_verdict"] == "faster from K = 1000 (slower at 100)"
    # memory: 1000 K > 50 000 ⇔ K > 50 → first grid K is 100
    assert cg["crossover_memory_K"] == 100
    assert cg["n_squared"] == 100
    assert cg["n_squared_verdict"].startswith("–")  # the n² claim is about the dense solve
    direct = table[table["backend"] == "ift-direct"].iloc[0]
    assert direct["crossover_time_K"] == 10000 and direct["crossover_memory_K"] == 100
    # slower at every K ≤ n² = 100, faster at 10000 > n²: the data confirm the claim
    assert direct["n_squared_verdict"].startswith("confirms")
    jfb = table[table["backend"] == "ift-jfb"].iloc[0]
    # 0.2 s against 1e-4 K: faster only at K = 10000
    assert jfb["crossover_time_K"] == 10000
    assert set(table["backend"]) == {"ift-cg", "ift-jfb", "ift-direct"}


def test_crossover_needs_a_bracket_and_the_n_squared_verdict(frame):
    # ift-direct faster than unrolled already at K = 10 ≤ n² = 100: contradicts the claim
    rows = [_row("unrolled", K, peak=1000 * K, time=1e-2 * K) for K in (10, 100)]
    rows += [_row("ift-direct", K, peak=500, time=1e-2) for K in (10, 100)]
    one = [_row("unrolled", 1000, peak=1e6, time=1.0, n=30),
           _row("ift-direct", 1000, peak=1e3, time=0.1, n=30)]
    data = pd.DataFrame(rows + one, columns=list(RECORD_FIELDS))
    table = analysis.crossovers(data).set_index("n")
    assert table.loc[10, "crossover_time_K"] is None
    assert table.loc[10, "time_verdict"] == "faster at every K (≥ 10)"
    assert table.loc[10, "n_squared_verdict"] == "contradicts: faster at K = 10 ≤ n²"
    # faster at small K only (a constant that unrolled's growth overtakes the other way round)
    assert analysis._crossing([10, 100], [True, False]) == (None, "mixed: faster at K = 10")
    assert analysis._crossing([10, 100, 1000], [False, True, True], "smaller", "larger") == \
        (100, "smaller from K = 100 (larger at 10)")
    # a single K is no crossover, whatever it shows
    assert table.loc[30, "crossover_time_K"] is None
    assert table.loc[30, "time_verdict"] == "faster at K = 1000 (one K: no crossover)"


def test_pareto_front(frame):
    table = analysis.pareto_front(frame[frame["n"] == 10])
    assert set(table["K"]) == {10000}
    front = dict(zip(table["backend"], table["pareto"], strict=True))
    # ift-direct (6e4 B, 0.3 s, 1e-10) is dominated by ift-cg (5e4 B, 0.15 s, 1e-10)
    assert front == {"unrolled": True, "ift-cg": True, "ift-jfb": True, "ift-direct": False,
                     "checkpoint-sqrt": True}


def test_summary(frame):
    table = fit_summary.summary(frame)
    # the n sweep's points (one K each) have no K exponent and no summary row
    assert set(table["n"]) == {10}
    unrolled = table[table["backend"] == "unrolled"].iloc[0]
    assert unrolled["peak_exponent"] == pytest.approx(1.0)
    assert unrolled["trace_exponent"] == pytest.approx(1.0)
    assert unrolled["time_exponent"] == pytest.approx(1.0)
    assert unrolled["max_K"] == 10000 and unrolled["notes"] == []
    assert unrolled["verdict"] == "agrees: trace, peak, time"
    jfb = table[table["backend"] == "ift-jfb"].iloc[0]
    assert jfb["error_converged_at_max_K"] == pytest.approx(0.5)
    assert jfb["error_k_step_at_max_K"] == pytest.approx(1e-16)
    cg = table[table["backend"] == "ift-cg"].iloc[0]
    assert "no verdict" in cg["verdict"] and "time (K = 1000, 10000)" in cg["verdict"]
    # every disagreement carries a note: checkpoint-sqrt's √K time
    sqrt = table[table["backend"] == "checkpoint-sqrt"].iloc[0]
    assert sqrt["time_verdict"] == "disagrees" and len(sqrt["notes"]) == 1
    for _, row in table.iterrows():
        disagreeing = [m for m in ("trace", "peak", "time") if row[f"{m}_verdict"] ==
                       "disagrees"]
        assert bool(disagreeing) == bool(row["notes"])


def test_notes_are_keyed_most_specific_first():
    assert "predicate" in fit_summary.exponent_note("sparsemax", "unrolled", "jax", "trace_bytes")
    assert "predicate" not in fit_summary.exponent_note("sparsemax", "ift-direct", "jax",
                                                     "trace_bytes")
    assert fit_summary.exponent_note("gd", "ift-cg", "torch", "peak_bytes") == \
        fit_summary.GENERIC_NOTE.format(tol=analysis.EXPONENT_TOLERANCE)
    assert cells.format_exponent(-0.001) == "0.00"
    assert cells.format_exponent(0.294) == "0.29"


def test_tape_cost_is_the_slope_in_K_over_the_state(frame):
    table = analysis.tape_cost(frame)
    # reverse-mode series only (memory grows with K in theory): no IFT, no n-sweep single points
    assert set(table["backend"]) == {"unrolled", "checkpoint-sqrt"}
    unrolled = table[table["backend"] == "unrolled"].iloc[0]
    # peak = trace = 1000 B per step; state = dim x (10) × 8 B
    assert unrolled["state_bytes"] == 80
    assert unrolled["peak_bytes_per_step"] == pytest.approx(1000)
    assert unrolled["trace_bytes_factor"] == pytest.approx(12.5)
    sqrt = table[table["backend"] == "checkpoint-sqrt"].iloc[0]
    K = np.array(KS, float)
    assert sqrt["peak_bytes_per_step"] == pytest.approx(
        np.polyfit(K, np.floor(3000 * np.sqrt(K)), 1)[0])


def test_zero_trace_everywhere_is_flat_not_missing():
    rows = [_row("ift-cg", K, peak=5e4, time=0.1, trace=0) for K in KS]
    table = analysis.scaling_exponents(pd.DataFrame(rows, columns=list(RECORD_FIELDS)), "K")
    row = _slope(table, "ift-cg", "trace_bytes", n=10)
    assert row["slope"] == 0 and row["all_zero"] and row["verdict"] == "agrees"
