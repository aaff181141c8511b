"""Where points run: one module per executor, each an :class:`Executor`.

An executor takes a point and its settings and returns exactly one record, whatever happens
to the process that measured it: :meth:`Executor.run` validates the point and records an
unsupported one; the executor's own :meth:`Executor._run` measures the rest. It is made with
what it may use of the run directory (``suite.rundir.RunDir``: the timing lock, the cache and
scratch directories, a log file). The sweep (``suite.sweep``) decides what to run, skips and
appends. ``local`` runs each point in a fresh process on this machine; ``ray`` runs the same
isolated worker as a Ray task on a cluster's nodes. Adding an executor is adding a module here
(a subclass that implements ``_run`` and ``kill_all``) and a line to :data:`EXECUTORS`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from suite.inputs import JOBS_MAX
from suite.plugin.errors import UnsupportedError
from suite.point import Point, Settings, validate_point
from suite.records import Record

if TYPE_CHECKING:
    from suite.rundir import RunDir

#: executor name → "module:Class" (imported on use, so a missing optional package such as ray
#: only matters to the executor that needs it)
EXECUTORS = {"local": "suite.executors.local:LocalExecutor",
             "ray": "suite.executors.ray:RayExecutor"}


class Executor(ABC):
    """Where points run. :meth:`run` is the template every executor shares — the settings and
    the point validated (once, here: the driver's boundary), an unsupported combination
    recorded as such — and :meth:`_run` is the executor's own part: measure a valid point."""

    name: ClassVar[str]

    def __init__(self, *, jobs: int | None = None, timing_lock: Path | None = None,
                 share_timing_lock: bool = False, cache_dir: Path | None = None,
                 scratch_dir: Path | None = None, log_file: Path | None = None) -> None:
        #: points kept in flight at once (None: :meth:`default_jobs`)
        self.jobs = jobs
        #: a file whose lock serialises the timed sections of points measured side by side on
        #: one machine (the run's; see suite.timing): taken when more than one point is in
        #: flight, or always with ``share_timing_lock`` (another sweep times under it too)
        self.timing_lock = timing_lock
        self.share_timing_lock = share_timing_lock
        #: a directory where the points of one run share float64 references by instance and
        #: compiled programs (suite.run_cache)
        self.cache_dir = cache_dir
        #: where a point's scratch files go (inside the run directory); None: the system's
        #: temp directory, where what a killed driver left is removed at next start
        self.scratch_dir = scratch_dir
        #: where the executor's own messages go (a Ray cluster's), None: nowhere
        self.log_file = log_file
        self._default_jobs: dict[int, int] = {}

    def run(self, point: Point, settings: Settings, *, dump_dir: Path | None = None,
            slot: int = 0) -> Record:
        """Measure ``point`` isolated; every outcome (unsupported, crash, timeout, OOM) is a
        record. Bad input raises.

        ``slot`` (0 … jobs − 1) tells concurrent calls apart (CPU pinning)."""
        settings.validate()
        try:
            validate_point(point)
        except UnsupportedError as exc:
            return Record.for_point(point, settings, status="unsupported", error=exc.detail)
        return self._run(point, settings, dump_dir=dump_dir, slot=slot)

    def _run(self, point: Point, settings: Settings, *, dump_dir: Path | None,
             slot: int) -> Record:
        """Measure ``point``, valid and supported, in isolation: the executor's own part."""
        raise NotImplementedError(f"{type(self).__name__} measures nothing")

    @abstractmethod
    def kill_all(self) -> None:
        """Stop every point in flight (Ctrl-C): their calls return or raise promptly."""

    def close(self) -> None:  # noqa: B027 — most executors hold nothing to release
        """Release what the executor holds (servers, cluster connections)."""

    def default_jobs(self, settings: Settings) -> int:
        """How many points to keep in flight when the user did not say."""
        return 1

    def jobs_for(self, settings: Settings) -> int:
        """How many points this executor keeps in flight: ``jobs``, else its default."""
        if self.jobs is not None:
            return self.jobs
        if settings.threads not in self._default_jobs:
            self._default_jobs[settings.threads] = min(JOBS_MAX, self.default_jobs(settings))
        return self._default_jobs[settings.threads]

    def timing_lock_for(self, settings: Settings) -> Path | None:
        """The timing lock a point's timed sections take, None when it times alone."""
        if self.timing_lock is None:
            return None
        if self.share_timing_lock or self.jobs_for(settings) > 1:
            return self.timing_lock
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_executor(name: str, run: RunDir | None = None, **kwargs: Any) -> Executor:
    """The executor ``name``, made with ``kwargs`` and, given a run, the run's files it may
    use: its timing lock, cache, scratch directory and a log of its own."""
    from suite.plugin.errors import UsageError

    if name not in EXECUTORS:
        raise UsageError("--executor", f"unknown {name!r}", EXECUTORS)
    if run is not None:
        kwargs = {"timing_lock": run.timing_lock_file, "cache_dir": run.cache_dir,
                  "scratch_dir": run.scratch_dir, "log_file": run.executor_log(name), **kwargs}
    module_name, cls_name = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)(**kwargs)


def failure_record(point: Point, settings: Settings, status: str, error: str | None,
                   wall_s: float | None = None) -> Record:
    """Kept for the tests that build records with it: :meth:`Record.for_point`."""
    return Record.for_point(point, settings, status=status, error=error, wall_s=wall_s)
