"""Where points run: one module per executor, each an :class:`Executor`.

An executor takes a validated point and its settings and returns exactly one record, whatever
happens to the process that measured it; the sweep (``suite.sweep``) decides what to run, skips
and appends. ``local`` runs each point in a fresh process on this machine; ``ray`` runs the same
isolated worker as a Ray task on a cluster's nodes. Adding an executor is adding a module here
and a line to :data:`EXECUTORS`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from suite.point import Point, Settings
from suite.records import Record

#: executor name → "module:Class" (imported on use, so a missing optional package such as ray
#: only matters to the executor that needs it)
EXECUTORS = {"local": "suite.executors.local:LocalExecutor",
             "ray": "suite.executors.ray:RayExecutor"}


class Executor(ABC):
    name: ClassVar[str]
    #: a file whose lock serialises the timed sections of points measured side by side on one
    #: machine (set by the sweep: one per run; see suite.timing)
    timing_lock: Path | None = None
    #: a directory where the points of one run share float64 references by instance (set by
    #: the sweep; see suite.references)
    reference_cache: Path | None = None
    #: where a point's scratch files go (set by the sweep: inside the run directory); None:
    #: the system's temp directory, where what a killed driver left is removed at next start
    scratch_dir: Path | None = None

    @abstractmethod
    def run(self, point: Point, settings: Settings, *, dump_dir: Path | None = None,
            slot: int = 0) -> Record:
        """Measure ``point`` isolated; every outcome (crash, timeout, OOM) is a record.

        ``slot`` (0 … jobs − 1) tells concurrent calls apart (CPU pinning)."""

    @abstractmethod
    def kill_all(self) -> None:
        """Stop every point in flight (Ctrl-C): their calls return or raise promptly."""

    def close(self) -> None:  # noqa: B027 — most executors hold nothing to release
        """Release what the executor holds (servers, cluster connections)."""

    def default_jobs(self, settings: Settings) -> int:
        """How many points to keep in flight when the user did not say."""
        return 1

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_executor(name: str, **kwargs: Any) -> Executor:
    """The executor ``name``, made with ``kwargs`` (every executor takes ``run_dir``: where
    its own files, such as a cluster's log, may go)."""
    from suite.plugin.errors import UsageError

    if name not in EXECUTORS:
        raise UsageError("--executor", f"unknown {name!r}", EXECUTORS)
    module_name, cls_name = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)(**kwargs)


def failure_record(point: Point, settings: Settings, status: str, error: str,
                   wall_s: float | None = None, node: str | None = None) -> Record:
    """The record of a point that produced none of its own (unsupported, skipped, killed)."""
    return Record.for_point(point, settings, status=status, error=error, wall_s=wall_s,
                            **({"node": node} if node else {}))
