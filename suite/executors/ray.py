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

import contextlib
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

from suite.executors import Executor
from suite.plugin.errors import UsageError
from suite.point import Point, Settings
from suite.records import Record

#: times a point is tried when its node is lost under it
ATTEMPTS = 2
ADDRESS_ALLOWED = ("auto, or HOST:PORT of a running head node, or nothing for a local "
                   "cluster")
#: the connect timeout's default for ``--address`` (``--connect-timeout``)
CONNECT_TIMEOUT_S = 30.0


#: in a Ray worker process: one local executor (and so one warm fork server) per run and
#: lock setting, reused by every task of that run the worker takes on; the server dies with
#: the worker process
_NODE_EXECUTORS: dict[tuple[str | None, bool], Any] = {}


def _measure_on_node(point_json: dict, settings_json: dict, run_name: str | None,
                     timing_lock: bool, dump_dir: str | None) -> dict:
    """Runs inside a Ray worker: one point through the local executor on this node (forked
    from the worker's fork server), with the node's timing lock and reference cache for this
    run (files in the node's temp dir). The node validates the point again although the
    driver did (``RayExecutor.run``): what is supported is the node's to say (a peer library
    missing there makes the point ``unsupported`` on it, not an error of its worker)."""
    from suite.executors.local import LocalExecutor

    key = (run_name, timing_lock)
    if key not in _NODE_EXECUTORS:
        node_tmp = Path(tempfile.gettempdir())
        _NODE_EXECUTORS[key] = LocalExecutor(
            timing_lock=node_tmp / f"ift-bench-timing-{run_name}.lock"
            if run_name and timing_lock else None,
            share_timing_lock=True,  # the driver decided whether this run's points take it
            cache_dir=node_tmp / f"ift-bench-references-{run_name}" if run_name else None)
    record = _NODE_EXECUTORS[key].run(Point.from_json(point_json), Settings(**settings_json),
                                      dump_dir=Path(dump_dir) if dump_dir else None)
    return record.to_json()


class RayExecutor(Executor):
    """Points as Ray tasks on an existing cluster (``address``) or a local one started here."""

    name: ClassVar[str] = "ray"

    def __init__(self, address: str | None = None, init_options: dict[str, Any] | None = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S, **run_files: Any) -> None:
        """``run_files``: what :class:`~suite.executors.Executor` takes (jobs, timing lock,
        cache directory, the log file Ray's own messages go to)."""
        super().__init__(**run_files)
        try:
            import ray
        except ImportError:
            raise UsageError("--executor", "ray is not installed",
                             "local, or install the extra: pip install -e '.[ray]'") from None
        self._ray = ray
        # self.log_file: where Ray's own messages go (its C++ warnings while it connects), not
        # the terminal
        self._started_here = not ray.is_initialized()
        if self._started_here:
            if address is not None:
                _probe(address, connect_timeout_s, self.log_file)
            try:
                with _stderr_to(self.log_file):
                    ray.init(address=address, include_dashboard=False, log_to_driver=False,
                             configure_logging=False, **(init_options or {}))
            except (ConnectionError, ValueError) as exc:
                raise UsageError("--address", f"cannot reach a Ray cluster at {address!r} "
                                 f"({exc})", ADDRESS_ALLOWED) from None
        self._remote = ray.remote(max_retries=0)(_measure_on_node)
        self._in_flight: set[Any] = set()
        self._lock = threading.Lock()
        self._cancelled = False

    def _run_name(self) -> str | None:
        # names the node-local lock and cache of this run (the run's id: the directory its
        # cache lies in): the name travels, each node makes its own files
        return self.cache_dir.parent.name if self.cache_dir is not None else None

    def default_jobs(self, settings: Settings) -> int:
        cpus = int(self._ray.cluster_resources().get("CPU", 1))
        return max(1, cpus // settings.threads)

    def _run(self, point: Point, settings: Settings, *, dump_dir: Path | None,
             slot: int) -> Record:
        ray = self._ray
        lost: list[str] = []
        while len(lost) < ATTEMPTS:
            with self._lock:
                if self._cancelled:
                    raise KeyboardInterrupt
                ref = self._remote.options(num_cpus=settings.threads).remote(
                    point.to_json(), dict(settings.__dict__), self._run_name(),
                    self.timing_lock_for(settings) is not None,
                    str(dump_dir) if dump_dir else None)
                self._in_flight.add(ref)
            try:
                return Record.from_json(ray.get(ref))
            except KeyboardInterrupt:  # Ctrl-C while this thread waits: the task goes too
                ray.cancel(ref, force=True)
                raise
            except ray.exceptions.TaskCancelledError:
                raise KeyboardInterrupt from None
            except ray.exceptions.RayTaskError as exc:  # the task itself raised: a record too
                return Record.for_point(point, settings, status="error",
                                        error=f"the Ray task raised {str(exc)[-2000:]}")
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError) as exc:
                if self._cancelled:
                    raise KeyboardInterrupt from None
                lost.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}"[:300])
            finally:
                with self._lock:
                    self._in_flight.discard(ref)
        return Record.for_point(point, settings, status="error",
                                error=f"the Ray node measuring this point was lost {ATTEMPTS} "
                                f"times (each try's reason: {' | '.join(lost)})")

    def kill_all(self) -> None:
        with self._lock:
            self._cancelled = True
            refs = list(self._in_flight)
        for ref in refs:
            self._ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            with _stderr_to(self.log_file):
                self._ray.shutdown()

_PROBE = """
import sys
import ray
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False,
         configure_logging=False)
ray.shutdown()
"""


def _probe(address: str, timeout_s: float, log_path: Path | None) -> None:
    """Connect to ``address`` once in a child process, so that a cluster that never answers
    (Ray retries a dead address for minutes) costs ``timeout_s`` and one line, and a signal
    ends the wait at once; Ray's messages go to ``log_path``."""
    import os
    import signal
    import subprocess
    import sys
    import time

    log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen([sys.executable, "-c", _PROBE, address], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True)
    finally:
        if log is not subprocess.DEVNULL:
            log.close()
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:  # a timeout, or SIGINT/SIGTERM raised KeyboardInterrupt here
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            timed_out = True
        else:
            timed_out = False
    said = log_path is not None and log_path.exists() and log_path.stat().st_size > 0
    where = f"; Ray's messages: {log_path}" if said else ""
    if timed_out:
        raise UsageError("--address", f"no Ray cluster answered at {address!r} within "
                         f"{timeout_s:g} s (--connect-timeout){where}", ADDRESS_ALLOWED)
    if proc.returncode != 0:
        raise UsageError("--address", f"cannot reach a Ray cluster at {address!r}"
                         f"{_last_error(log_path)}{where}", ADDRESS_ALLOWED)


def _last_error(log_path: Path | None) -> str:
    """`` (the exception's last line)`` from the probe's log, or nothing."""
    if log_path is None:
        return ""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if "Error" in line.split(":", 1)[0]]
    return f" ({' '.join(errors[-1].split())[:300]})" if errors else ""


@contextlib.contextmanager
def _stderr_to(path: Path | None):
    """File descriptor 2 goes to ``path`` for the body: Ray's C++ core writes its warnings
    there directly, past Python's ``sys.stderr``."""
    import os
    import sys

    if path is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)
