"""The local executor: each point in a fresh process on this machine, with a timeout and an
optional memory cap.

The child is forked from a warm fork server (``launcher="fork"``, the default for sweeps:
torch, JAX and the suite imported once; see :mod:`suite.executors.forkserver`) or started as
a new interpreter (``launcher="spawn"``). Either way it runs in its own session (so a
terminal's Ctrl-C reaches only the sweep, which then kills the child's whole process group), a
timeout kills the group, and a child that dies without writing its record is classified from
its exit status and stderr. Every outcome is a :class:`~suite.records.Record`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from problems._vetting import VETTED_ENV
from suite import run_cache
from suite.executors import Executor
from suite.point import Point, Settings
from suite.records import Record
from suite.timing import TIMING_LOCK_ENV, cpu_affinity_for
from suite.worker import failure_status

STDERR_TAIL = 3000
LAUNCHERS = ("fork", "spawn")


def child_env(threads: int, timing_lock: Path | None = None,
              cache_dir: Path | None = None) -> dict[str, str]:
    """Environment that fixes every thread pool of the child before it imports anything."""
    env = dict(os.environ)
    if timing_lock is not None:
        env[TIMING_LOCK_ENV] = str(timing_lock)
    if cache_dir is not None:
        env[run_cache.CACHE_ENV] = str(cache_dir)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
        env[var] = str(threads)
    xla = [f for f in env.get("XLA_FLAGS", "").split() if "multi_thread_eigen" not in f]
    xla.append(f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}")
    env["XLA_FLAGS"] = " ".join(xla)
    env.setdefault("JAX_PLATFORMS", "")
    env["PYTHONUNBUFFERED"] = "1"
    # the problem was vetted by the command that started this process (problems._vetting),
    # and what the child prints goes to its own files
    env[VETTED_ENV] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = env.get("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


class LocalExecutor(Executor):
    """Points in child processes of this machine; remembers the live ones so that an
    interrupt can kill them all (threads of a parallel sweep share one executor)."""

    name: ClassVar[str] = "local"

    def __init__(self, launcher: str = "fork", **run_files: Any) -> None:
        """``run_files``: what :class:`~suite.executors.Executor` takes (jobs, timing lock,
        cache and scratch directories)."""
        if launcher not in LAUNCHERS:
            from suite.plugin.errors import UsageError

            raise UsageError("launcher", f"unknown {launcher!r}", LAUNCHERS)
        super().__init__(**run_files)
        self._active: set[Any] = set()
        self._lock = threading.Lock()
        self.launcher = launcher
        self._server: Any = None
        self._server_threads: int | None = None

    def default_jobs(self, settings: Settings) -> int:
        """One point per ``threads`` CPUs this process may use. Timed sections still never
        overlap (the timing lock); only a neighbour's untimed work runs beside them. On this
        2-core VM the 178 points of the earlier default, jobs 2 against jobs 1: median
        time_s ratio 0.91-1.06 per framework and time band, inside the spread of two jobs-1
        runs (1.07-1.17), and every deterministic meter identical."""
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
        return max(1, cpus // settings.threads)

    def kill_all(self) -> None:
        with self._lock:
            active = list(self._active)
        for proc in active:
            _kill_group(proc)

    def close(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.close()

    def _start(self, settings: Settings, spec: Path, out: Path, stdout: Path,
               stderr: Path) -> Any:
        env = child_env(settings.threads, self.timing_lock_for(settings), self.cache_dir)
        if self.launcher == "spawn":
            with open(stdout, "wb") as out_fh, open(stderr, "wb") as err_fh:
                return subprocess.Popen(
                    [sys.executable, "-m", "suite.worker", str(spec), str(out)],
                    stdout=out_fh, stderr=err_fh, env=env, start_new_session=True)
        from suite.executors.forkserver import ForkServerClient

        with self._lock:
            # thread pools are fixed at import, so the server is per thread count
            if self._server is not None and self._server_threads != settings.threads:
                self._server.close()
                self._server = None
            if self._server is None:
                self._server = ForkServerClient(env)
                self._server_threads = settings.threads
            server = self._server
        return server.start(spec, out, stdout, stderr)

    def _run(self, point: Point, settings: Settings, *, dump_dir: Path | None,
             slot: int) -> Record:
        """Measure ``point`` in a fresh process."""
        with _scratch(self.scratch_dir) as tmp:
            tmp_path = Path(tmp)
            spec = {"point": point.to_json(), "settings": settings.__dict__,
                    "dump_dir": str(dump_dir) if dump_dir else None,
                    "cpus": cpu_affinity_for(settings.threads, slot)}
            spec["launched_at"] = time.time()  # the record's "start" phase counts from here
            (tmp_path / "spec.json").write_text(json.dumps(spec))
            out_path, err_path = tmp_path / "record.json", tmp_path / "stderr.txt"
            start = time.monotonic()
            proc = self._start(settings, tmp_path / "spec.json", out_path,
                               tmp_path / "stdout.txt", err_path)
            with self._lock:
                self._active.add(proc)
            timed_out = False
            try:
                proc.wait(timeout=settings.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                if proc.poll() is None:  # timeout, or the sweep is being interrupted
                    _kill_group(proc)
                with self._lock:
                    self._active.discard(proc)
            wall = time.monotonic() - start
            stderr_tail = err_path.read_text(errors="replace")[-STDERR_TAIL:] \
                if err_path.exists() else ""

            if timed_out:
                return Record.for_point(
                    point, settings, status="timeout",
                    error=f"no result within {settings.timeout_s:g} s; process killed",
                    wall_s=wall)
            if out_path.exists():
                record = Record.from_json(json.loads(out_path.read_text()))
                if record.status != "ok":
                    record.wall_s = wall
                return record
            return _classify_death(point, settings, proc.returncode, stderr_tail, wall)


#: scratch directories outside a run: the system temp dir, the owner's pid in the name
SCRATCH_PREFIX = "ift-bench-point-"


def _scratch(where: Path | None):
    """A temporary directory for one point: under ``where`` (a run's ``.points``, cleared
    when the run is next written), else in the system temp dir named with this process's
    pid, where the ones whose process is gone (a SIGKILLed driver) are removed first."""
    if where is not None:
        Path(where).mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=where)
    _remove_orphaned_scratch()
    return tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")


def _remove_orphaned_scratch() -> None:
    root = Path(tempfile.gettempdir())
    for path in root.glob(f"{SCRATCH_PREFIX}*"):
        pid = path.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # alive (someone else's), or gone meanwhile
            continue


def run_isolated(point: Point, settings: Settings, *, dump_dir: Path | None = None,
                 validated: bool = False) -> Record:
    """One point in a fresh interpreter (no fork server: one point would not repay it).
    ``validated``: the caller has validated the point already (the CLI's ``point``, before it
    writes anything), so it is not validated twice."""
    executor = LocalExecutor(launcher="spawn")
    if validated:
        settings.validate()
        return executor._run(point, settings, dump_dir=dump_dir, slot=0)
    return executor.run(point, settings, dump_dir=dump_dir)


def _kill_group(proc: Any) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _classify_death(point: Point, settings: Settings, returncode: int, stderr_tail: str,
                    wall: float) -> Record:
    how = (f"killed by signal {signal.Signals(-returncode).name}" if returncode < 0
           else f"exited with status {returncode}")
    return Record.for_point(point, settings, status=failure_status(stderr_tail, returncode),
                            error=f"worker {how} without a record\n{stderr_tail}".rstrip(),
                            wall_s=wall)
