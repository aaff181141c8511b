"""The run directory's owner and the executor template: the layout spelled once, executors made
with the run's files, an unsupported point recorded by the template, failures classified once."""

from __future__ import annotations

import signal

import pytest

from suite.executors import Executor, make_executor
from suite.plugin.errors import UnsupportedError, UsageError
from suite.point import Point, Settings
from suite.rundir import RunDir
from suite.worker import failure_status


def test_the_layout_is_spelled_by_run_dir(tmp_path):
    run = RunDir.create(tmp_path, "cfg", "r")
    assert run.path == tmp_path / "r" and run.name == "r"
    assert [p.name for p in (run.records_file, run.meta_file, run.writer_lock_file,
                             run.timing_lock_file, run.cache_dir, run.scratch_dir,
                             run.gate_file, run.report_file, run.decision_file,
                             run.base_commit_file, run.base_log_file, run.base_tree,
                             run.executor_log("ray"))] == [
        "records.jsonl", "meta.json", ".writer.lock", ".timing.lock", ".references", ".points",
        "gate.json", "report.html", "decision.csv", "base.commit", "base.log", ".base-src",
        "ray.log"]
    assert run.base_run == RunDir(tmp_path / "r" / "base")
    assert RunDir.create(tmp_path, "cfg", "r").name == "r-1"  # never another run's directory
    with pytest.raises(UsageError, match="is not a run directory"):
        RunDir.for_resume(run.path)  # neither records nor meta yet
    run.write_meta({"run_id": "r"})
    assert RunDir.for_resume(run.path).read_meta() == {"run_id": "r"}
    with pytest.raises(UsageError, match="has no records.jsonl"):
        RunDir.existing("RUN", run.path)


def test_executors_are_made_with_the_runs_files(tmp_path):
    run = RunDir.create(tmp_path, "cfg", "r")
    settings = Settings(repeats=1)
    alone = make_executor("local", run, jobs=1)
    assert (alone.cache_dir, alone.scratch_dir) == (run.cache_dir, run.scratch_dir)
    assert alone.timing_lock_for(settings) is None  # one point at a time times alone
    assert make_executor("local", run, jobs=2).timing_lock_for(settings) == run.timing_lock_file
    shared = make_executor("local", run, jobs=1, share_timing_lock=True)
    assert shared.timing_lock_for(settings) == run.timing_lock_file
    assert make_executor("local").timing_lock_for(settings) is None  # no run: no run files


class _Counting(Executor):
    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.measured: list[Point] = []

    def _run(self, point, settings, *, dump_dir, slot):
        self.measured.append(point)
        raise AssertionError("an unsupported point reached the executor's own part")

    def kill_all(self) -> None:
        pass


def test_the_template_records_an_unsupported_point_with_the_reason():
    from suite.point import validate_point

    point = Point("gd", "jaxopt-cg", "torch", n=4, K=3)
    with pytest.raises(UnsupportedError) as raised:
        validate_point(point)
    executor = _Counting()
    record = executor.run(point, Settings(repeats=1))
    assert record.status == "unsupported" and record.error == raised.value.detail
    assert record.point_key == point.key() and not executor.measured
    with pytest.raises(UsageError):  # bad input raises, as before
        executor.run(Point("gd", "no-such-backend", "torch", n=4, K=3), Settings(repeats=1))


def test_failures_are_classified_in_one_place():
    assert failure_status("Traceback …\nMemoryError") == "oom"
    assert failure_status("XlaRuntimeError: RESOURCE_EXHAUSTED: …") == "oom"
    assert failure_status("", -signal.SIGKILL) == "oom"  # the kernel's OOM killer
    assert failure_status("ValueError: bad", 1) == "error"
    assert failure_status("", -signal.SIGABRT) == "error"
