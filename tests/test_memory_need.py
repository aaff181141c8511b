"""The memory wall as data: a point past the cap carries the peak it would have needed,
predicted from its series' peak bytes per step (suite.memory_need)."""

from __future__ import annotations

import pytest

from reports.record_tables import memory_wall
from reports.units import format_bytes
from suite.config import build_config
from suite.memory_need import Measured, predict_need
from suite.records import read_records
from suite.rundir import RunDir
from suite.sweep import run_sweep


def _series(law, Ks, offset=1000):
    return [Measured(K, int(round(law(K))), int(round(law(K))) + offset) for K in Ks]


def test_a_linear_trace_is_extrapolated_from_the_largest_measured_peak():
    measured = _series(lambda K: 4096 + 800 * K, (30, 100))
    need = predict_need(measured, 300, exponent=1.0)
    # peak(100) + 800 B per step for the 200 steps beyond it
    assert need.bytes == (4096 + 800 * 100 + 1000) + 800 * 200
    assert need.from_K == (30, 100)


def test_a_sqrt_trace_grows_like_sqrt_K():
    measured = _series(lambda K: 512 + 64 * K ** 0.5, (16, 64, 256))
    need = predict_need(measured, 4096, exponent=0.5)
    assert need.bytes == pytest.approx(512 + 64 * 256 ** 0.5 + 1000 + 64 * (64 - 16), abs=1)


@pytest.mark.parametrize("measured, exponent", [
    (_series(lambda K: 800 * K, (30,)), 1.0),             # one K: no slope
    (_series(lambda K: 800 * K, (30, 100)), 0.0),         # theory: flat in K
    (_series(lambda K: 5000.0, (30, 100)), 1.0),          # measured: flat
])
def test_nothing_is_predicted_without_a_measured_growth(measured, exponent):
    assert predict_need(measured, 300, exponent) is None


def test_points_at_or_above_K_are_not_used():
    measured = _series(lambda K: 800 * K, (30, 100)) + [Measured(300, 1, 1)]
    assert predict_need(measured, 300, 1.0).from_K == (30, 100)


@pytest.mark.slow
def test_an_oom_point_and_the_skipped_rest_of_its_series_carry_the_predicted_need(
        monkeypatch, tmp_path):
    monkeypatch.setenv("IFT_BENCH_FAULT", "40=oom")
    config = build_config({"name": "wall", "problems": ["gd"], "backends": ["unrolled"],
                           "frameworks": ["torch"], "repeats": 1,
                           "grid": [{"n": [8], "K": [10, 20, 40, 80]}]}, name="wall")
    result = run_sweep(config, tmp_path, progress=False)
    by_K = {r.K: r for r in read_records(result.run_dir / "records.jsonl")}
    assert [by_K[K].status for K in (10, 20, 40, 80)] == ["ok", "ok", "oom", "skipped"]
    ten, twenty = by_K[10], by_K[20]
    per_step = (twenty.peak_bytes - ten.peak_bytes) / 10
    assert per_step > 0
    for K in (40, 80):
        assert by_K[K].predicted_need_from_K == [10, 20]
        assert by_K[K].predicted_need_bytes == round(twenty.peak_bytes + per_step * (K - 20))
    assert by_K[10].predicted_need_bytes is None
    # the report's memory-wall lines: one per point past the cap, with the predicted need
    lines = memory_wall(RunDir(result.run_dir).frame())
    assert lines == [f"unrolled (torch) at gd n = 8, K = {K} needs ≈ "
                     f"{format_bytes(by_K[K].predicted_need_bytes)} (predicted from K ≤ 20), "
                     "no cap set" for K in (40, 80)]
    # … and the need is what the points measure where they fit: the same series without the
    # injected failure, at K = 40 and 80 (within 10 %)
    monkeypatch.delenv("IFT_BENCH_FAULT")
    fits = build_config({"name": "fits", "problems": ["gd"], "backends": ["unrolled"],
                         "frameworks": ["torch"], "repeats": 1,
                         "grid": [{"n": [8], "K": [40, 80]}]}, name="fits")
    measured = {r.K: r.peak_bytes for r in read_records(
        run_sweep(fits, tmp_path, progress=False).run_dir / "records.jsonl")}
    for K in (40, 80):
        assert by_K[K].predicted_need_bytes == pytest.approx(measured[K], rel=0.10)


def _row(K, status, trace=None, peak=None, need=None, need_from=None):
    return {"problem": "imaml", "backend": "unrolled", "framework": "jax", "n": 64, "K": K,
            "dtype": "float64", "device": "cpu", "seed": 0, "options": {}, "status": status,
            "trace_bytes": trace, "peak_bytes": peak, "predicted_need_bytes": need,
            "predicted_need_from_K": need_from, "memory_cap_bytes": 2**30}


def test_the_report_predicts_again_from_points_that_finished_after_the_wall():
    """The sweep hit the wall at K = 300 while K = 100 was still running (two points in flight),
    so the record's need came from K ≤ 30; the report's line uses the whole series."""
    import pandas as pd

    law = lambda K: 4096 + 800 * K  # noqa: E731
    ok = [_row(K, "ok", law(K), law(K) + 500) for K in (10, 30, 100)]
    early = 150_000  # what the sweep predicted from the points finished by then
    frame = pd.DataFrame(ok + [_row(300, "oom", need=early, need_from=[10, 30])])
    revised = law(100) + 500 + 800 * 200
    assert format_bytes(revised) != format_bytes(early)
    assert memory_wall(frame) == [f"unrolled (jax) at imaml n = 64, K = 300 needs ≈ "
                                  f"{format_bytes(revised)} (predicted from K ≤ 100), cap 1 GiB"]
    # a run that no longer holds the series' ok points keeps the record's own prediction
    alone = pd.DataFrame([_row(300, "oom", need=early, need_from=[10, 30])])
    assert memory_wall(alone)[0].endswith(f"needs ≈ {format_bytes(early)} (predicted from "
                                          "K ≤ 30), cap 1 GiB")


def test_a_reference_that_runs_out_of_memory_costs_its_error_not_the_point(monkeypatch):
    """At scale the converged reference may need more than the cap the point ran under; the
    measurement finished, so the point stays ok without that error column, and says why."""
    from suite import references
    from suite.measure import measure
    from suite.point import Point, Settings

    real = references.reference_gradient

    def converged_needs_too_much(problem, instance, K, kind):
        if kind == "converged":
            raise MemoryError("Unable to allocate 33.0 GiB")
        return real(problem, instance, K, kind)

    monkeypatch.setattr(references, "reference_gradient", converged_needs_too_much)
    rec = measure(Point("gd", "unrolled", "torch", n=8, K=20), Settings(repeats=1))
    assert rec.status == "ok" and rec.grad_error_converged is None
    assert rec.grad_error_k_step is not None and rec.grad_error_k_step < 1e-12
    assert any(w.startswith("no converged reference: it ran out of memory") for w in rec.warnings)
