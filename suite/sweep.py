"""Run a sweep: every point of a config, isolated, appended to ``records.jsonl`` as it finishes.

Resumable (points whose key is already recorded are skipped), interruptible (Ctrl-C or SIGTERM
kills the running children and keeps every finished record), and economical: once a series
(same everything but K) hits ``oom`` or ``timeout`` at some K, its larger K are recorded as
``skipped`` with that reason instead of being burned again.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from suite import provenance, rundir
from suite.config import SweepConfig
from suite.env import environment
from suite.executors import Executor, failure_record, make_executor
from suite.inputs import (
    JOBS_MAX,
    NAME_ALLOWED,
    appendable_file,
    inside,
    safe_component,
    writable_directory,
)
from suite.plugin.errors import UsageError
from suite.point import Point
from suite.records import Record, append_record, move_torn_tail, read_records_checked, write_json

CAP_STATUSES = ("oom", "timeout")
#: per-point scratch directories, inside the run directory
SCRATCH_NAME = ".points"


@dataclass
class SweepResult:
    run_dir: Path
    statuses: Counter = field(default_factory=Counter)
    interrupted: bool = False
    total: int = 0


#: the lock file a run's timed sections take turns under (suite.timing)
TIMING_LOCK_FILE = ".timing.lock"


def new_run_dir(results_root: Path, config_name: str, run_id: str | None = None) -> Path:
    """A fresh directory ``results_root/<run-id>``; the id is one safe path component, so the
    run can never be written outside ``results_root``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = (safe_component("--run-id", run_id) if run_id is not None
            else f"{stamp}-{safe_component('config name', config_name)}")
    results_root = writable_directory("--results", Path(results_root))
    run_dir, i = results_root / base, 1
    while run_dir.exists():
        run_dir, i = results_root / f"{base}-{i}", i + 1
    if not inside(results_root, run_dir):  # unreachable with a safe component; kept as a guard
        raise UsageError("--run-id", f"{base!r} leaves {str(results_root)!r}", NAME_ALLOWED)
    try:
        run_dir.mkdir()
    except OSError as exc:
        raise UsageError("--results", f"cannot create {str(run_dir)!r}: {exc.strerror or exc}",
                         "a directory we can write") from None
    return run_dir


def open_run_dir(run_dir: Path) -> Path:
    """An existing run directory to resume: a directory we can write, records.jsonl (if any)
    a regular file we can append to, meta.json (if any) a file we can replace."""
    run_dir = Path(run_dir)
    if run_dir.name == "records.jsonl" and run_dir.is_file():
        raise UsageError("--resume", f"{str(run_dir)!r} is a records file, not a run "
                         "directory", f"its directory: {str(run_dir.parent)!r}")
    if not run_dir.is_dir():
        raise UsageError("--resume", f"{str(run_dir)!r} is not a directory",
                         "a results/<run-id> directory with records.jsonl")
    if not (run_dir / "records.jsonl").exists() and not (run_dir / "meta.json").exists():
        raise UsageError("--resume", f"{str(run_dir)!r} is not a run directory",
                         "a results/<run-id> directory with records.jsonl")
    writable_directory("--resume", run_dir, create=False)
    appendable_file("--resume", run_dir / "records.jsonl")
    if (run_dir / "meta.json").exists() and not (run_dir / "meta.json").is_file():
        raise UsageError("--resume", f"{str(run_dir / 'meta.json')!r} is not a file",
                         "a run directory written by ift-bench run")
    return run_dir


def read_meta(run_dir: Path, field: str = "--resume") -> dict:
    """A run's meta.json as a JSON object; a damaged one is a UsageError naming it."""
    path = Path(run_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(field, f"{str(path)!r} is not UTF-8",
                         "the meta.json a run writes") from None
    except json.JSONDecodeError as exc:
        raise UsageError(field, f"{str(path)!r} is not valid JSON ({exc.msg} at line "
                         f"{exc.lineno})", "the meta.json a run writes") from None
    except OSError as exc:
        raise UsageError(field, f"cannot read {str(path)!r}: {exc.strerror or exc}",
                         "the meta.json a run writes") from None
    if not isinstance(meta, dict):
        raise UsageError(field, f"{str(path)!r} is a JSON {type(meta).__name__}, "
                         "not an object", "the meta.json a run writes")
    return meta


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
    (a name from ``suite.executors.EXECUTORS``, made with ``executor_options``, or an instance),
    ``jobs`` points at a time (None: the executor's default). ``share_timing_lock``: take the
    run's timing lock (``RUN_DIR/.timing.lock``) even one point at a time, because another
    sweep on this machine times under it too (the gate's paired path). ``started`` is called
    with the run directory once it exists, before the first point.

    Every input is checked before anything is written; the run directory's writer lock
    (``suite.rundir``) is held throughout, so a second ``run --resume`` of it is refused. On
    resume a torn last line is first moved to a side file (``warn`` says where, with its size)
    and every unreadable line is reported with its number (its point is measured again; the
    line stays where it is); a problem whose code changed since the run began is refused
    unless ``allow_code_change``.
    """
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int)
                             or not 1 <= jobs <= JOBS_MAX):
        raise UsageError("--jobs", f"{jobs!r} is out of range",
                         f"an integer from 1 to {JOBS_MAX}")
    points = config.points()
    if resume is not None:
        run_dir = open_run_dir(resume)
        earlier = read_meta(run_dir) if (run_dir / "meta.json").exists() else None
        created = False
    else:
        run_dir, earlier = new_run_dir(Path(results_root), config.name, run_id), None
        created = True
        if run_id is not None and run_dir.name != run_id:  # never silently another name
            warn(f"--run-id {run_id!r} exists in {str(Path(results_root))!r}: this run is "
                 f"{run_dir.name!r}")
    with rundir.writer(run_dir, "--resume" if resume is not None else "--run-id"):
        try:
            if isinstance(executor, str):  # a missing ray, a dead address: exit 2
                executor = make_executor(executor, run_dir=run_dir,
                                         **(executor_options or {}))
        except BaseException:
            if created:
                _remove_if_unused(run_dir)
            raise
        return _sweep(config, points, run_dir, earlier, executor, jobs=jobs,
                      progress=progress, warn=warn, allow_code_change=allow_code_change,
                      share_timing_lock=share_timing_lock, started=started)


def _remove_if_unused(run_dir: Path) -> None:
    """Remove a run directory this sweep created before measuring anything; one that holds
    something worth reading (Ray's log of a failed connection) stays."""
    for path in run_dir.iterdir():
        if path.name != rundir.LOCK_NAME and (path.is_dir() or path.stat().st_size > 0):
            return
    for path in run_dir.iterdir():
        path.unlink()
    run_dir.rmdir()


def _sweep(config: SweepConfig, points: list[Point], run_dir: Path, earlier: dict | None,
           executor: Executor, *, jobs: int | None, progress: bool, warn,
           allow_code_change: bool, share_timing_lock: bool,
           started: Callable[[Path], None] | None) -> SweepResult:
    """The sweep proper, under the run's writer lock."""
    if jobs is None:
        jobs = min(JOBS_MAX, executor.default_jobs(config.settings))
    records_path = run_dir / "records.jsonl"
    torn = move_torn_tail(records_path)
    if torn is not None:
        warn(f"{records_path}: torn last line ({torn[1]} bytes) moved to {torn[0]}; "
             "its point is measured again")
    existing = read_records_checked(records_path)
    for message in existing.problems(records_path):
        warn(message + "; its point is measured again")
    previous = existing.records
    twice = rundir.duplicated_points(previous)
    if twice:  # written by two writers before the lock: report and compare refuse the run
        warn(f"{records_path} holds {len(twice)} point(s) more than once (e.g. "
             f"{next(iter(twice))}); report, compare and gate refuse it until one record of "
             "each is left")
    code = provenance.code_identity(config)
    if earlier is not None:
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
    done = {r.point_key for r in previous}
    capped: dict[str, tuple[int, str]] = {}
    for r in previous:
        if r.status in CAP_STATUSES:
            _note_cap(capped, r)

    meta_path = run_dir / "meta.json"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    meta = {"run_id": run_dir.name, "config": config.to_json(), "environment": environment(),
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
    write_json(meta_path, meta)

    todo = [p for p in points if p.key() not in done]
    result = SweepResult(run_dir=run_dir, total=len(points))
    result.statuses.update(r.status for r in previous)
    lock = threading.Lock()
    # parallel points still never time at the same moment (see suite.timing)
    executor.timing_lock = (run_dir / TIMING_LOCK_FILE if jobs > 1 or share_timing_lock
                            else None)
    executor.reference_cache = run_dir / ".references"
    # a point's scratch files live in the run (never in /tmp, where a SIGKILLed driver would
    # leave them); what a killed sweep left there is removed now, under the writer lock
    executor.scratch_dir = run_dir / SCRATCH_NAME
    shutil.rmtree(executor.scratch_dir, ignore_errors=True)
    if started is not None:
        started(run_dir)
    bar = _progress(len(points), len(points) - len(todo), progress)

    def record(rec: Record, point: Point) -> None:
        rec.run_id = run_dir.name
        with lock:
            append_record(records_path, rec)
            result.statuses[rec.status] += 1
            if rec.status in CAP_STATUSES:
                _note_cap(capped, rec)
            if bar is not None:
                bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in
                                             sorted(result.statuses.items())), refresh=False)
                bar.update(1)

    def skip_reason(point: Point) -> str | None:
        hit = capped.get(_series(point))
        if hit is not None and point.K > hit[0]:
            return f"skipped: this series hit {hit[1]} at K={hit[0]}; larger K would too"
        return None

    stopping = threading.Event()

    def measure(point: Point, slot: int) -> None:
        if stopping.is_set():
            return
        reason = skip_reason(point)
        if reason is not None:
            record(failure_record(point, config.settings, "skipped", reason), point)
            return
        if bar is not None:
            bar.set_description_str(point.label(), refresh=True)
        rec = executor.run(point, config.settings, slot=slot)
        if stopping.is_set():  # killed by the interrupt, not by its own fault: not a record;
            return             # --resume measures it again
        record(rec, point)

    def interrupt() -> None:
        stopping.set()
        executor.kill_all()

    try:
        if jobs == 1:
            for point in todo:
                measure(point, 0)
        else:
            _run_parallel(todo, jobs, measure, interrupt)
    except KeyboardInterrupt:
        interrupt()
        result.interrupted = True
    finally:
        executor.close()
        with contextlib.suppress(OSError):  # empty once every point has ended
            executor.scratch_dir.rmdir()
        if bar is not None:
            bar.close()
        meta["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        meta["interrupted"] = result.interrupted
        meta["statuses"] = dict(result.statuses)
        write_json(meta_path, meta)
    return result


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


def _note_cap(capped: dict[str, tuple[int, str]], rec: Record) -> None:
    point = Point(rec.problem, rec.backend, rec.framework, n=rec.n, K=rec.K, device=rec.device,
                  dtype=rec.dtype, seed=rec.seed, options=rec.options)
    key = _series(point)
    if key not in capped or rec.K < capped[key][0]:
        capped[key] = (rec.K, rec.status)


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="point", dynamic_ncols=True,
                bar_format="{desc} {bar} {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")
