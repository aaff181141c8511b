"""Isolation: a crash, a timeout and an over-cap allocation each become a record with the
right status, and a sweep goes on past them."""

from __future__ import annotations

import pytest

from suite.config import build_config
from suite.executors.local import run_isolated
from suite.point import Point, Settings
from suite.records import read_records
from suite.sweep import run_sweep

pytestmark = pytest.mark.slow

CAP = 4 * 2**30  # what a measurement may add to the address space of the loaded framework


def test_a_healthy_point_is_ok_and_complete():
    rec = run_isolated(Point("gd", "ift-cg", "torch", n=10, K=50), Settings(repeats=2))
    assert rec.status == "ok", rec.error
    for field in ("time_s", "time_min_s", "forward_time_s", "peak_bytes", "trace_bytes",
                  "rss_peak_bytes", "grad_rel_error", "grad_norm", "inner_residual",
                  "step_evals", "vjp_evals", "hvp_evals", "solver_iters", "threads"):
        assert getattr(rec, field) is not None, field
    assert rec.time_min_s <= rec.time_s
    assert rec.step_evals == 50 and rec.hvp_evals == rec.solver_iters
    assert rec.jvp_evals is None  # does not apply to CG
    assert rec.compile_s is None  # eager torch compiles nothing
    assert rec.threads == 1 and rec.repeats == 2


def test_crash_becomes_an_error_record_with_the_stderr_tail(monkeypatch):
    monkeypatch.setenv("IFT_BENCH_FAULT", "crash")
    rec = run_isolated(Point("gd", "unrolled", "torch", n=5, K=3), Settings(repeats=1))
    assert rec.status == "error"
    assert "SIGABRT" in rec.error


def test_hang_becomes_a_timeout_record(monkeypatch):
    monkeypatch.setenv("IFT_BENCH_FAULT", "hang")
    rec = run_isolated(Point("gd", "unrolled", "torch", n=5, K=3),
                       Settings(repeats=1, timeout_s=4))
    assert rec.status == "timeout"
    assert rec.wall_s < 30


def test_allocation_over_the_cap_becomes_an_oom_record(monkeypatch):
    monkeypatch.setenv("IFT_BENCH_FAULT", "oom")
    monkeypatch.setenv("IFT_BENCH_FAULT_BYTES", str(2 * CAP))
    rec = run_isolated(Point("gd", "unrolled", "jax", n=5, K=3),
                       Settings(repeats=1, memory_cap_bytes=CAP))
    assert rec.status == "oom", rec.error
    assert "MemoryError" in rec.error


def test_a_sweep_records_every_failure_and_goes_on(monkeypatch, tmp_path):
    monkeypatch.setenv("IFT_BENCH_FAULT", "2=crash,3=exit,4=oom")
    monkeypatch.setenv("IFT_BENCH_FAULT_BYTES", str(2 * CAP))
    config = build_config({"name": "faults", "problems": ["gd"], "backends": ["unrolled"],
                           "frameworks": ["torch"], "repeats": 1, "timeout_s": 60,
                           "memory_cap": CAP, "grid": [{"n": [5], "K": [1, 2, 3, 4, 5, 6]}]},
                          name="faults")
    result = run_sweep(config, tmp_path, progress=False)
    by_K = {r.K: r for r in read_records(result.run_dir / "records.jsonl")}
    # K=4 ran out of memory, so K ≥ 5 of the same series are skipped rather than burned again
    assert {K: r.status for K, r in by_K.items()} == {
        1: "ok", 2: "error", 3: "error", 4: "oom", 5: "skipped", 6: "skipped"}
    assert "oom at K=4" in by_K[5].error
    assert result.statuses == {"ok": 1, "error": 2, "oom": 1, "skipped": 2}


def test_a_worker_that_dies_without_a_record_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("IFT_BENCH_FAULT", "exit")
    rec = run_isolated(Point("gd", "unrolled", "torch", n=5, K=3), Settings(repeats=1))
    assert rec.status == "error"
    assert "exited with status 3" in rec.error
