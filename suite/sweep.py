"""Run a sweep: every point of a config, isolated, appended to ``records.jsonl`` as it finishes.

Resumable (points whose key is already recorded are skipped), interruptible (Ctrl-C or SIGTERM
kills the running children and keeps every finished record), and economical: once a series
(same everything but K) hits ``oom`` or ``timeout`` at some K, its larger K are recorded as
``skipped`` with that reason instead of being burned again. A point past the memory cap
carries the peak it would have needed, predicted from its series' ok points at smaller K
(``suite.memory_need``).
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import backends
from suite import provenance
from suite.config import SweepConfig
from suite.env import environment
from suite.executors import Executor, make_executor
from suite.inputs import JOBS_MAX
from suite.memory_need import Measured, predict_need
from suite.plugin.errors import UsageError
from suite.point import Point
from suite.records import Record
from suite.rundir import RunDir, duplicated_points

CAP_STATUSES = ("oom", "timeout")


@dataclass
class SweepResult:
    run_dir: Path
    statuses: Counter = field(default_factory=Counter)
    interrupted: bool = False
    total: int = 0


def _warn(message: str) -> None:
    print(f"ift-bench: warning: {message}", file=sys.stderr)


def _series(point: Point) -> str:
    key = Point(point.problem, point.backend, point.framework, n=point.n, K=1,
                device=point.device, dtype=point.dtype, seed=point.seed, options=point.options)
    return key.key()


def run_sweep(config: SweepConfig, results_root: Path = Path("results"), *,
              jobs: int | None = 1,
              resume: Path | None = None, run_id: str | None = None,
              progress: bool = True, warn=_warn, executor: str | Executor = "local",
              executor_options: dict | None = None,
              share_timing_lock: bool = False,
              started: Callable[[Path], None] | None = None,
              allow_code_change: bool = False) -> SweepResult:
    """Measure every point of ``config`` not yet in the run's records.jsonl, on ``executor``
    (a name from ``suite.executors.EXECUTORS``, made with ``executor_options`` and the run's
    files, or an instance, which runs with the files it was made with), ``jobs`` points at a
    time (None: the executor's default). ``share_timing_lock``: take the run's timing lock
    (``RunDir.timing_lock_file``) even one point at a time, because another sweep on this
    machine times under it too (the gate's paired path). ``started`` is called with the run
    directory once it exists, before the first point.

    Every input is checked before anything is written; the run directory's writer lock
    (``suite.rundir``) is held throughout, so a second ``run --resume`` of it is refused. On
    resume a torn last line is first moved to a side file (``warn`` says where, with its size)
    and every unreadable line is reported with its number (its point is measured again; the
    line stays where it is); a problem whose code changed since the run began is refused
    unless ``allow_code_change``.
    """
    _check_jobs(jobs)
    points = config.points()
    if resume is not None:
        run = RunDir.for_resume(resume)
        earlier = run.read_meta() if run.has_meta() else None
    else:
        run, earlier = RunDir.create(Path(results_root), config.name, run_id), None
        if run_id is not None and run.name != run_id:  # never silently another name
            warn(f"--run-id {run_id!r} exists in {str(Path(results_root))!r}: this run is "
                 f"{run.name!r}")
    with run.writer("--resume" if resume is not None else "--run-id"):
        if isinstance(executor, str):
            try:  # a missing ray, a dead address: exit 2
                executor = make_executor(executor, run, jobs=jobs,
                                         share_timing_lock=share_timing_lock,
                                         **(executor_options or {}))
            except BaseException:
                if resume is None:
                    run.remove_if_unused()
                raise
        return _sweep(config, points, run, earlier, executor, jobs=jobs,
                      progress=progress, warn=warn, allow_code_change=allow_code_change,
                      started=started)


def _check_jobs(jobs: int | None) -> None:
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int)
                             or not 1 <= jobs <= JOBS_MAX):
        raise UsageError("--jobs", f"{jobs!r} is out of range",
                         f"an integer from 1 to {JOBS_MAX}")


def _sweep(config: SweepConfig, points: list[Point], run: RunDir, earlier: dict | None,
           executor: Executor, *, jobs: int | None, progress: bool, warn,
           allow_code_change: bool, started: Callable[[Path], None] | None) -> SweepResult:
    """The sweep proper, under the run's writer lock."""
    if jobs is None:
        jobs = executor.jobs_for(config.settings)
    previous = _read_previous(run, warn)
    code = _code_identity(config, earlier, previous, allow_code_change, warn)
    meta = _begin_meta(run, config, points, jobs, code, earlier, previous)

    done = {r.point_key for r in previous}
    todo = [p for p in points if p.key() not in done]
    result = SweepResult(run_dir=run.path, total=len(points))
    result.statuses.update(r.status for r in previous)
    # a point's scratch files live in the run (never in /tmp, where a SIGKILLed driver would
    # leave them); what a killed sweep left there is removed now, under the writer lock
    run.clear_scratch()
    if started is not None:
        started(run.path)
    bar = _progress(len(points), len(points) - len(todo), progress)
    loop = _Measuring(run, config, executor, result, previous, bar)
    try:
        if jobs == 1:
            for point in todo:
                loop.measure(point, 0)
        else:
            _run_parallel(todo, jobs, loop.measure, loop.interrupt)
    except KeyboardInterrupt:
        loop.interrupt()
        result.interrupted = True
    finally:
        executor.close()
        run.remove_scratch_if_empty()
        if bar is not None:
            bar.close()
        _finish_meta(run, meta, result)
    return result


class _Measuring:
    """The sweep's loop body, shared by its threads: measure a point (or skip it: its series
    hit a cap at a smaller K), append its record, count it; stop on an interrupt."""

    def __init__(self, run: RunDir, config: SweepConfig, executor: Executor,
                 result: SweepResult, previous: list[Record], bar) -> None:
        self.run, self.settings, self.executor = run, config.settings, executor
        self.config, self.grid_settings = config, config.grid_settings()
        self.result, self.bar = result, bar
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        #: series → (smallest K, status) of a cap (oom, timeout) it hit
        self.capped: dict[str, tuple[int, str]] = {}
        #: series → its ok points' K, trace and peak bytes (what a memory wall is predicted from)
        self.measured: dict[str, list[Measured]] = {}
        for r in previous:
            if r.status in CAP_STATUSES:
                _note_cap(self.capped, r)
            _note_measured(self.measured, r)

    def measure(self, point: Point, slot: int) -> None:
        if self.stopping.is_set():
            return
        settings = self.config.settings_for(point, self.grid_settings)
        reason = self.skip_reason(point)
        if reason is not None:
            self.record(Record.for_point(point, settings, status="skipped", error=reason))
            return
        if self.bar is not None:
            self.bar.set_description_str(point.label(), refresh=True)
        rec = self.executor.run(point, settings, slot=slot)
        if self.stopping.is_set():  # killed by the interrupt, not by its own fault: not a
            return                  # record; --resume measures it again
        self.record(rec)

    def skip_reason(self, point: Point) -> str | None:
        hit = self.capped.get(_series(point))
        if hit is not None and point.K > hit[0]:
            return f"skipped: this series hit {hit[1]} at K={hit[0]}; larger K would too"
        return None

    def record(self, rec: Record) -> None:
        rec.run_id = self.run.name
        with self.lock:
            series = _record_series(rec)
            _note_measured(self.measured, rec)
            if rec.status == "oom" or (rec.status == "skipped"
                                       and self.capped.get(series, (0, ""))[1] == "oom"):
                _predict_need(rec, self.measured.get(series, []))
            self.run.append(rec)
            statuses = self.result.statuses
            statuses[rec.status] += 1
            if rec.status in CAP_STATUSES:
                _note_cap(self.capped, rec)
            if self.bar is not None:
                self.bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in
                                                  sorted(statuses.items())), refresh=False)
                self.bar.update(1)

    def interrupt(self) -> None:
        self.stopping.set()
        self.executor.kill_all()


def _read_previous(run: RunDir, warn) -> list[Record]:
    """The run's records so far, after setting a torn last line aside; what cannot be read,
    and points recorded twice, are said with ``warn``."""
    records_path = run.records_file
    torn = run.set_aside_torn_tail()
    if torn is not None:
        warn(f"{records_path}: torn last line ({torn[1]} bytes) moved to {torn[0]}; "
             "its point is measured again")
    existing = run.read_records()
    for message in existing.problems(records_path):
        warn(message + "; its point is measured again")
    twice = duplicated_points(existing.records)
    if twice:  # written by two writers before the lock: report and compare refuse the run
        warn(f"{records_path} holds {len(twice)} point(s) more than once (e.g. "
             f"{next(iter(twice))}); report, compare and gate refuse it until one record of "
             "each is left")
    return existing.records


def _code_identity(config: SweepConfig, earlier: dict | None, previous: list[Record],
                   allow_code_change: bool, warn) -> dict:
    """The code this sweep measures with; on resume, a problem whose code changed since the
    run began is refused (or, ``allow_code_change``, said), and so is said a changed suite."""
    code = provenance.code_identity(config)
    if earlier is None:
        return code
    changed = provenance.changed_problems(earlier, previous, code)
    if changed and not allow_code_change:
        raise UsageError("--resume", provenance.describe_change(changed[0]),
                         "the code the run began with, or --allow-code-change to measure "
                         "the remaining points with the new code (the report keeps the "
                         "versions apart)")
    for change in changed:
        warn(provenance.describe_change(change) + "; measuring the remaining points with "
             "the new code (--allow-code-change)")
    suite_was = (earlier.get("code") or {}).get("suite")
    if suite_was and suite_was != code["suite"]:
        warn(f"the suite's code changed since the run began ({suite_was} → "
             f"{code['suite']})")
    return code


def _begin_meta(run: RunDir, config: SweepConfig, points: list[Point], jobs: int, code: dict,
                earlier: dict | None, previous: list[Record]) -> dict:
    """meta.json as the sweep begins (a resume keeps when and with what code the run began,
    and adds when and with what code it was resumed), written; returned for the end."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    meta = {"run_id": run.name, "config": config.to_json(), "environment": environment(),
            "started_at": now, "points": len(points), "jobs": jobs, "code": code}
    if earlier is not None:
        meta["started_at"] = earlier.get("started_at", now)
        resumed = earlier.get("resumed_at", [])
        meta["resumed_at"] = [*(resumed if isinstance(resumed, list) else []), now]
        meta["resumed_with_records"] = len(previous)
        # the code the run began with stays its identity; each resume adds what it ran
        meta["code"] = earlier.get("code") or code
        versions = earlier.get("code_resumed", [])
        meta["code_resumed"] = [*(versions if isinstance(versions, list) else []),
                                {"at": now, **code}]
    run.write_meta(meta)
    return meta


def _finish_meta(run: RunDir, meta: dict, result: SweepResult) -> None:
    meta["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["interrupted"] = result.interrupted
    meta["statuses"] = dict(result.statuses)
    run.write_meta(meta)


def _run_parallel(todo: list[Point], jobs: int, measure, interrupt) -> None:
    """``measure`` every point, ``jobs`` at a time, each in a slot of its own (its CPUs). On
    Ctrl-C, ``interrupt`` kills the points in flight before the threads are waited for: left
    alone they would run to the end, and a point killed later be recorded as a failure."""
    free_slots = list(range(jobs))
    pending = list(todo)
    running: dict[Future, int] = {}
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        while pending or running:
            while pending and free_slots:
                slot = free_slots.pop(0)
                running[pool.submit(measure, pending.pop(0), slot)] = slot
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                free_slots.append(running.pop(fut))
                fut.result()
    except KeyboardInterrupt:
        interrupt()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _record_series(rec: Record) -> str:
    return _series(Point(rec.problem, rec.backend, rec.framework, n=rec.n, K=rec.K,
                         device=rec.device, dtype=rec.dtype, seed=rec.seed, options=rec.options))


def _note_cap(capped: dict[str, tuple[int, str]], rec: Record) -> None:
    key = _record_series(rec)
    if key not in capped or rec.K < capped[key][0]:
        capped[key] = (rec.K, rec.status)


def _note_measured(measured: dict[str, list[Measured]], rec: Record) -> None:
    if rec.status == "ok" and rec.trace_bytes is not None and rec.peak_bytes is not None:
        measured.setdefault(_record_series(rec), []).append(
            Measured(rec.K, rec.trace_bytes, rec.peak_bytes))


def _predict_need(rec: Record, measured: list[Measured]) -> None:
    """Set the record's predicted need from its series (the strategy's exponent of memory in
    K: the upper end of its theory's band)."""
    strategy = backends.registry().get(rec.backend)
    if strategy is None:
        return
    need = predict_need(measured, rec.K, strategy.theory.memory_K[1])
    if need is not None:
        rec.predicted_need_bytes, rec.predicted_need_from_K = need.bytes, list(need.from_K)


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="point", dynamic_ncols=True,
                bar_format="{desc} {bar} {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")
