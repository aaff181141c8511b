"""Run a sweep: every point of a config, isolated, appended to ``records.jsonl`` as it finishes.

Resumable (points whose key is already recorded are skipped), interruptible (Ctrl-C or SIGTERM
kills the running children and keeps every finished record), and economical: once a series
(same everything but K) hits ``oom`` or ``timeout`` at some K, its larger K are recorded as
``skipped`` with that reason instead of being burned again.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from suite.config import SweepConfig
from suite.env import environment
from suite.errors import UsageError
from suite.point import Point
from suite.records import Record, append_record, read_records, write_json
from suite.runner import Isolator, failure_record

CAP_STATUSES = ("oom", "timeout")


@dataclass
class SweepResult:
    run_dir: Path
    statuses: Counter = field(default_factory=Counter)
    interrupted: bool = False
    total: int = 0


def new_run_dir(results_root: Path, config_name: str, run_id: str | None = None) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = run_id or f"{stamp}-{config_name}"
    run_dir, i = results_root / base, 1
    while run_dir.exists():
        run_dir, i = results_root / f"{base}-{i}", i + 1
    run_dir.mkdir(parents=True)
    return run_dir


def _series(point: Point) -> str:
    key = Point(point.problem, point.backend, point.framework, n=point.n, K=1,
                device=point.device, dtype=point.dtype, seed=point.seed, options=point.options)
    return key.key()


def run_sweep(config: SweepConfig, results_root: Path = Path("results"), *, jobs: int = 1,
              resume: Path | None = None, run_id: str | None = None,
              progress: bool = True) -> SweepResult:
    if not isinstance(jobs, int) or jobs < 1:
        raise UsageError("--jobs", f"{jobs!r} is not a positive integer", ">= 1")
    points = config.points()
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "records.jsonl").exists() and not (run_dir / "meta.json").exists():
            raise UsageError("--resume", f"{str(run_dir)!r} is not a run directory",
                             "a results/<run-id> directory with records.jsonl")
    else:
        run_dir = new_run_dir(Path(results_root), config.name, run_id)
    records_path = run_dir / "records.jsonl"
    previous = read_records(records_path)
    done = {r.point_key for r in previous}
    capped: dict[str, tuple[int, str]] = {}
    for r in previous:
        if r.status in CAP_STATUSES:
            _note_cap(capped, r)

    meta_path = run_dir / "meta.json"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    meta = {"run_id": run_dir.name, "config": config.to_json(), "environment": environment(),
            "started_at": now, "points": len(points), "jobs": jobs}
    if resume is not None and meta_path.exists():
        earlier = json.loads(meta_path.read_text())
        meta["started_at"] = earlier.get("started_at", now)
        meta["resumed_at"] = [*earlier.get("resumed_at", []), now]
        meta["resumed_with_records"] = len(previous)
    write_json(meta_path, meta)

    todo = [p for p in points if p.key() not in done]
    result = SweepResult(run_dir=run_dir, total=len(points))
    result.statuses.update(r.status for r in previous)
    lock = threading.Lock()
    # parallel points still never time at the same moment (see suite.measure.timing_lock)
    isolator = Isolator(timing_lock=run_dir / ".timing.lock" if jobs > 1 else None)
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

    def measure(point: Point, slot: int) -> None:
        reason = skip_reason(point)
        if reason is not None:
            record(failure_record(point, config.settings, "skipped", reason), point)
            return
        if bar is not None:
            bar.set_description_str(point.label(), refresh=True)
        record(isolator.run(point, config.settings, slot=slot), point)

    try:
        if jobs == 1:
            for point in todo:
                measure(point, 0)
        else:
            _run_parallel(todo, jobs, measure)
    except KeyboardInterrupt:
        isolator.kill_all()
        result.interrupted = True
    finally:
        if bar is not None:
            bar.close()
        meta["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        meta["interrupted"] = result.interrupted
        meta["statuses"] = dict(result.statuses)
        write_json(meta_path, meta)
    return result


def _run_parallel(todo: list[Point], jobs: int, measure) -> None:
    free_slots = list(range(jobs))
    pending = list(todo)
    running: dict[Future, int] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            while pending and free_slots:
                slot = free_slots.pop(0)
                running[pool.submit(measure, pending.pop(0), slot)] = slot
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                free_slots.append(running.pop(fut))
                fut.result()


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
