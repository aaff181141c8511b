"""What keeps concurrent points from disturbing each other's timings: a lock around every timed
section and the CPUs each worker is pinned to.

Points measured side by side (``--jobs N`` locally, several Ray tasks on one node) may overlap
in their untimed meters, but never in their timed repeats: each timed section holds an
exclusive ``flock`` on one file per machine (its path travels in ``IFT_BENCH_TIMING_LOCK``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: set by a parallel sweep: a file whose exclusive lock guards every timed section, so that
#: points measured side by side never time at the same moment (their untimed meters may overlap)
TIMING_LOCK_ENV = "IFT_BENCH_TIMING_LOCK"
#: test hook: a file to which every timed section appends "pid start end" (time.monotonic(),
#: one clock for all processes on Linux), so that tests can check sections never overlap
TIMING_LOG_ENV = "IFT_BENCH_TIMING_LOG"


@contextmanager
def timing_lock() -> Iterator[None]:
    """Hold the machine's timing lock (when a parallel sweep set one) for the block."""
    path = os.environ.get(TIMING_LOCK_ENV)
    if not path:
        with _logged_section():
            yield
        return
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            with _logged_section():  # logged while the lock is still held
                yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _logged_section() -> Iterator[None]:
    log = os.environ.get(TIMING_LOG_ENV)
    start = time.monotonic()
    try:
        yield
    finally:
        if log:
            with open(log, "a") as fh:
                fh.write(f"{os.getpid()} {start!r} {time.monotonic()!r}\n")


def cpu_affinity_for(threads: int, slot: int = 0) -> list[int] | None:
    """The CPUs a worker in ``slot`` is pinned to: ``threads`` consecutive allowed cores."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    start = (slot * threads) % max(1, len(allowed))
    return [allowed[(start + i) % len(allowed)] for i in range(min(threads, len(allowed)))]
