"""The promises the harness makes about failures, each produced for real: `point`'s exit status,
a framework running out of memory under the cap, a worker killed by SIGKILL, a timeout ending
its series, the warnings a record carries, and parallel points never timing at once."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time

import pytest

from backends.exact_arithmetic import InformationBuffer
from suite.cli import main
from suite.config import build_config
from suite.executors.local import LAUNCHERS, LocalExecutor, run_isolated
from suite.measure import measure
from suite.point import Point, Settings
from suite.records import read_records
from suite.sweep import run_sweep
from suite.timing import TIMING_LOG_ENV

from .support_matrix import FRAMEWORKS

CAP = 2**30  # what the measurement may add to the address space of the loaded framework


# ---- exit status, OOM, SIGKILL, timeout (isolated workers) --------------------------------
@pytest.mark.slow
def test_point_that_does_not_finish_ok_exits_1(monkeypatch, capsys):
    monkeypatch.setenv("IFT_BENCH_FAULT", "hang")
    rc = main(["point", "--problem", "gd", "--backend", "unrolled", "--framework", "torch",
               "--n", "5", "--K", "3", "--repeats", "1", "--timeout", "2", "--json"])
    record = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert record["status"] == "timeout" and "no result within 2 s" in record["error"]


@pytest.mark.slow
def test_jax_itself_running_out_of_memory_is_an_oom_record(capsys):
    """No fault injection: JAX loads, then its reverse-mode scan asks XLA for the K × state
    residual stack, 4 GB for K = 10⁶ at n = 100, beyond the 1 GiB the cap lets the
    measurement add."""
    rc = main(["point", "--problem", "gd", "--backend", "unrolled", "--framework", "jax",
               "--n", "100", "--K", "1000000", "--repeats", "1", "--memory-cap", str(CAP),
               "--timeout", "240", "--json"])
    record = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert record["status"] == "oom", record["error"]
    # XLA's allocator refused (not the framework's own libraries while loading)
    assert "RESOURCE_EXHAUSTED" in record["error"] and "MemoryError" not in record["error"]
    assert record["memory_cap_bytes"] == CAP


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_small_cap_caps_the_measurement_not_the_framework_import(framework):
    """A 300 MiB cap once failed torch's own import (``libtorch_cpu.so: failed to map
    segment``); the cap now starts after the framework is loaded, so a small point measures
    under it (and test_jax_itself_running_out_of_memory shows the cap still stops the work)."""
    settings = Settings(repeats=1, memory_cap_bytes=300 * 2**20)
    record = run_isolated(Point("gd", "unrolled", framework, n=10, K=10), settings)
    assert record.status == "ok", record.error
    assert record.memory_cap_bytes == 300 * 2**20 and record.step_evals == 10


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_worker_killed_by_sigkill_is_recorded_as_oom(monkeypatch, launcher):
    """SIGKILL that the harness did not send is what the kernel's OOM killer sends."""
    monkeypatch.setenv("IFT_BENCH_FAULT", "hang")
    isolator, out = LocalExecutor(launcher=launcher), {}
    runner = threading.Thread(target=lambda: out.setdefault("record", isolator.run(
        Point("gd", "unrolled", "torch", n=5, K=3), Settings(repeats=1, timeout_s=120))))
    runner.start()
    deadline = time.monotonic() + 60
    while not isolator._active and time.monotonic() < deadline:
        time.sleep(0.05)
    (worker,) = isolator._active
    time.sleep(0.5)  # let it reach the hang
    os.kill(worker.pid, signal.SIGKILL)
    runner.join(timeout=60)
    isolator.close()
    record = out["record"]
    assert record.status == "oom"
    assert "killed by signal SIGKILL" in record.error


@pytest.mark.slow
def test_a_timeout_marks_the_rest_of_its_series_skipped(monkeypatch, tmp_path):
    monkeypatch.setenv("IFT_BENCH_FAULT", "1=hang")
    config = build_config({"name": "timeouts", "problems": ["gd"],
                           "backends": ["unrolled", "ift-cg"], "frameworks": ["torch"],
                           "repeats": 1, "timeout_s": 2, "grid": [{"n": [5], "K": [1, 2, 3]}]},
                          name="timeouts")
    result = run_sweep(config, tmp_path, progress=False)
    records = read_records(result.run_dir / "records.jsonl")
    statuses = {(r.backend, r.K): r.status for r in records}
    assert statuses == {(b, K): ("timeout" if K == 1 else "skipped")
                        for b in ("unrolled", "ift-cg") for K in (1, 2, 3)}
    for r in records:
        if r.status == "skipped":
            assert "timeout at K=1" in r.error
    assert result.statuses == {"timeout": 2, "skipped": 4}


# ---- the warnings a record carries (measured in-process) ------------------------------------
def test_ift_away_from_a_solution_is_warned_about():
    # ‖F(θ, x_K)‖/‖F(θ, x_0)‖ = 8e-2 at K = 10, 4e-11 at K = 1000 (the threshold is 1e-6)
    far = measure(Point("gd", "ift-direct", "torch", n=6, K=10), Settings(repeats=1))
    near = measure(Point("gd", "ift-direct", "torch", n=6, K=1000), Settings(repeats=1))
    assert far.status == near.status == "ok"
    assert any(w.startswith("IFT applied away from a solution") for w in far.warnings)
    assert not any("away from a solution" in w for w in near.warnings)


def test_a_linear_solver_stopped_at_maxiter_is_warned_about():
    record = measure(Point("gd", "ift-cg", "torch", n=8, K=50, options={"maxiter": "1"}),
                     Settings(repeats=1))
    assert record.solver_converged is False and record.solver_iters == 1
    assert "linear solver stopped at maxiter=1 without reaching tol=1e-10" in record.warnings


def test_a_failed_reversible_reconstruction_is_warned_about(monkeypatch):
    """A healthy buffer is sized so that it cannot overflow, so the reconstruction of a real
    point cannot fail; a buffer two limbs long (of the 6 that K = 200 steps at γ = 1/2, one
    bit each, need; 61 bits a limb) loses the carries of its top limb, and the record must
    say so."""
    sized = InformationBuffer.for_run.__func__

    def too_small(cls, gamma, multiplications):
        return dataclasses.replace(sized(cls, gamma, multiplications), limbs=2)

    assert InformationBuffer.for_run(0.5, 200).limbs == 6
    monkeypatch.setattr(InformationBuffer, "for_run", classmethod(too_small))
    record = measure(Point("gd", "reversible", "torch", n=6, K=200,
                           options={"momentum": "0.5"}), Settings(repeats=1))
    assert record.status == "ok"
    assert ("reversible: the backward pass did not reconstruct x₀ bit for bit"
            in record.warnings)
    assert "reversible: the information buffer overflowed its capacity" in record.warnings


def test_a_healthy_reversible_point_has_no_warning():
    record = measure(Point("gd", "reversible", "torch", n=6, K=200,
                           options={"momentum": "0.5"}), Settings(repeats=1))
    assert record.diagnostics["reconstruction_exact"] is True and record.warnings == []


# ---- parallel sweeps ----------------------------------------------------------------------
@pytest.mark.slow
def test_parallel_points_never_time_at_the_same_moment(monkeypatch, tmp_path):
    """jobs = 2: two workers run side by side, and the timing lock keeps their timed sections
    (the repeats, and the paired ratio) from overlapping; each section logs its interval."""
    log = tmp_path / "timed.log"
    monkeypatch.setenv(TIMING_LOG_ENV, str(log))
    config = build_config({"name": "parallel", "problems": ["gd"],
                           "backends": ["unrolled", "ift-cg"], "frameworks": ["torch"],
                           "repeats": 10, "timeout_s": 120,
                           "grid": [{"n": [10], "K": [20]}]}, name="parallel")
    result = run_sweep(config, tmp_path, jobs=2, progress=False)
    assert result.statuses == {"ok": 2}
    sections = sorted(tuple(float(t) for t in line.split()[1:]) + (line.split()[0],)
                      for line in log.read_text().splitlines())
    assert len(sections) == 2 and len({pid for *_, pid in sections}) == 2
    for (_, end, _), (start, _, _) in zip(sections, sections[1:], strict=False):
        assert end <= start, "two timed sections overlapped"


@pytest.mark.slow
def test_a_sweep_without_jobs_keeps_one_point_per_cpu_set_and_still_takes_turns(
        monkeypatch, tmp_path):
    """jobs=None (the CLI's default): as many points in flight as this process has CPUs over
    --threads (meta.json says how many), and with more than one the timing lock still keeps
    their timed sections apart."""
    log = tmp_path / "timed.log"
    monkeypatch.setenv(TIMING_LOG_ENV, str(log))
    config = build_config({"name": "default-jobs", "problems": ["gd"],
                           "backends": ["unrolled", "ift-cg", "truncated"],
                           "frameworks": ["torch"], "repeats": 10, "timeout_s": 120,
                           "grid": [{"n": [10], "K": [20]}]}, name="default-jobs")
    result = run_sweep(config, tmp_path, jobs=None, progress=False)
    assert result.statuses == {"ok": 3}
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["jobs"] == max(1, len(os.sched_getaffinity(0)) // config.settings.threads)
    sections = sorted(tuple(float(t) for t in line.split()[1:3])
                      for line in log.read_text().splitlines())
    assert len(sections) == 3
    for (_, end), (start, _) in zip(sections, sections[1:], strict=False):
        assert end <= start, "two timed sections overlapped"
