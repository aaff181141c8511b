"""The Ray executor: each point a Ray task that runs the local executor's isolated worker on
whichever node Ray schedules it.

The measurement protocol is unchanged — on its node the task runs the local executor: a fresh
process per point, forked from a fork server that the Ray worker keeps for the run, with the
same timeout, memory cap, CPU pinning and thread counts — so a record measured through Ray is
the record the local executor would write there.
Each task reserves ``threads`` CPUs; the timed sections of the tasks on one node take turns
under one lock file per node and run (so at most one point times at a time on a node, while
their untimed meters may overlap). Records come back to the driver, which appends them as they
finish (``suite.sweep``), so an interrupted sweep keeps every finished point and ``--resume``
works whichever executor ran it. Each record names its ``node``.

A node lost while it measures a point (the task's worker process or the node dies) costs one
retry; a second loss records the point as ``error`` with the reason. Ctrl-C cancels every
task in flight.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

from suite.errors import UnsupportedError, UsageError
from suite.executors import Executor, failure_record
from suite.point import Point, Settings, validate_point
from suite.records import Record

#: times a point is tried when its node is lost under it
ATTEMPTS = 2


#: in a Ray worker process: one local executor (and so one warm fork server) per run and
#: lock setting, reused by every task of that run the worker takes on; the server dies with
#: the worker process
_NODE_EXECUTORS: dict[tuple[str | None, bool], Any] = {}


def _measure_on_node(point_json: dict, settings_json: dict, run_name: str | None,
                     timing_lock: bool, dump_dir: str | None) -> dict:
    """Runs inside a Ray worker: one point through the local executor on this node (forked
    from the worker's fork server), with the node's timing lock and reference cache for this
    run (files in the node's temp dir)."""
    from suite.executors.local import LocalExecutor

    key = (run_name, timing_lock)
    if key not in _NODE_EXECUTORS:
        node_tmp = Path(tempfile.gettempdir())
        _NODE_EXECUTORS[key] = LocalExecutor(
            timing_lock=node_tmp / f"ift-bench-timing-{run_name}.lock"
            if run_name and timing_lock else None,
            reference_cache=node_tmp / f"ift-bench-references-{run_name}" if run_name else None)
    record = _NODE_EXECUTORS[key].run(Point.from_json(point_json), Settings(**settings_json),
                                      dump_dir=Path(dump_dir) if dump_dir else None)
    return record.to_json()


class RayExecutor(Executor):
    """Points as Ray tasks on an existing cluster (``address``) or a local one started here."""

    name: ClassVar[str] = "ray"

    def __init__(self, timing_lock: Path | None = None, address: str | None = None,
                 init_options: dict[str, Any] | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError("--executor", "ray is not installed",
                             "local, or install the extra: pip install -e '.[ray]'") from None
        self._ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False, **(init_options or {}))
            except (ConnectionError, ValueError) as exc:
                raise UsageError("--address", f"cannot reach a Ray cluster at {address!r} "
                                 f"({exc})", "auto, or HOST:PORT of a running head node, "
                                 "or nothing for a local cluster") from None
        self.timing_lock = timing_lock
        self._remote = ray.remote(max_retries=0)(_measure_on_node)
        self._in_flight: set[Any] = set()
        self._lock = threading.Lock()
        self._cancelled = False

    def _run_name(self) -> str | None:
        # names the node-local lock and cache of this run: the name travels, each node makes
        # its own files
        return self.reference_cache.parent.name if self.reference_cache is not None else None

    def default_jobs(self, settings: Settings) -> int:
        cpus = int(self._ray.cluster_resources().get("CPU", 1))
        return max(1, cpus // settings.threads)

    def run(self, point: Point, settings: Settings, *, dump_dir: Path | None = None,
            slot: int = 0) -> Record:
        ray = self._ray
        settings.validate()
        try:
            validate_point(point)
        except UnsupportedError as exc:
            return failure_record(point, settings, "unsupported", str(exc).split(": ", 1)[-1])
        lost: list[str] = []
        while len(lost) < ATTEMPTS:
            with self._lock:
                if self._cancelled:
                    raise KeyboardInterrupt
                ref = self._remote.options(num_cpus=settings.threads).remote(
                    point.to_json(), dict(settings.__dict__), self._run_name(),
                    self.timing_lock is not None, str(dump_dir) if dump_dir else None)
                self._in_flight.add(ref)
            try:
                return Record.from_json(ray.get(ref))
            except KeyboardInterrupt:  # Ctrl-C while this thread waits: the task goes too
                ray.cancel(ref, force=True)
                raise
            except ray.exceptions.TaskCancelledError:
                raise KeyboardInterrupt from None
            except ray.exceptions.RayTaskError as exc:  # the task itself raised: a record too
                return failure_record(point, settings, "error",
                                      f"the Ray task raised {str(exc)[-2000:]}")
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError) as exc:
                if self._cancelled:
                    raise KeyboardInterrupt from None
                lost.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}"[:300])
            finally:
                with self._lock:
                    self._in_flight.discard(ref)
        return failure_record(point, settings, "error",
                              f"the Ray node measuring this point was lost {ATTEMPTS} times "
                              f"(each try's reason: {' | '.join(lost)})")

    def kill_all(self) -> None:
        with self._lock:
            self._cancelled = True
            refs = list(self._in_flight)
        for ref in refs:
            self._ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()
