"""One writer per run directory, and what a reader must be told about a run.

A sweep (``run``, ``run --resume``, the gate's own sweep) holds an exclusive ``flock`` on
``RUN_DIR/.writer.lock`` for its whole length and writes its pid into the file. The kernel
releases the lock when the process dies, however it dies, so a SIGKILLed run can be resumed at
once; a second writer is refused on one line naming the holder's pid (exit 2).

Readers (``report``, ``compare``, ``gate --run``) never take the lock — a report of a live run
is allowed — but :func:`reader_notes` says that the run is still being written, and
:func:`refuse_duplicates` refuses a run whose records hold one point twice (two writers before
this lock existed, or records concatenated by hand): every table and fit would silently count
that point twice.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from suite.plugin.errors import UsageError

LOCK_NAME = ".writer.lock"


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOCK_NAME


@contextlib.contextmanager
def writer(run_dir: Path, field: str = "--resume") -> Iterator[None]:
    """Hold the run's writer lock for the body; a run already held is a :class:`UsageError`
    naming the holder's pid."""
    path = lock_path(run_dir)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(field, f"cannot open the run's lock file {str(path)!r}: "
                         f"{exc.strerror or exc}", "a run directory we can write") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = _pid_in(path)
            raise UsageError(field, f"{str(run_dir)!r} is being written by another ift-bench "
                             f"(pid {holder if holder is not None else 'unknown'})",
                             "one writer per run: wait for it to finish (or stop it), then "
                             "--resume") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            # a reader that finds no pid knows the run is finished; the lock goes with close
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def writing_pid(run_dir: Path) -> int | None:
    """The pid of the process writing ``run_dir`` now, None if none — without taking the lock.

    The pid in the lock file names the last writer; it is writing now only if the kernel still
    holds a lock on that file (``/proc/locks``), or, where that cannot be read, if the process
    is alive."""
    path = lock_path(run_dir)
    pid = _pid_in(path)
    if pid is None:
        return None
    held = _kernel_holds_lock(path)
    if held is not None:
        return pid if held else None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, someone else's
        return pid
    return pid


def _kernel_holds_lock(path: Path) -> bool | None:
    """Whether /proc/locks lists a lock on ``path``'s inode; None where it cannot be read."""
    try:
        st = path.stat()
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    # matched by inode alone: overlay file systems report another device number here
    want = f":{st.st_ino}"
    return any(field.endswith(want) and field.count(":") == 2
               for line in text.splitlines() for field in line.split()[4:7])


def reader_notes(run_dir: Path) -> list[str]:
    """What a reader of ``run_dir`` should print before using it (a run still being written)."""
    pid = writing_pid(run_dir)
    if pid is None:
        return []
    return [f"{run_dir} is still being written (by pid {pid}): its records are those finished "
            "so far"]


def duplicated_points(records: list) -> dict[str, int]:
    """Point label → number of records, for every point recorded more than once."""
    from suite.point import Point

    keys: Counter = Counter()
    labels: dict[str, str] = {}
    for r in records:
        point = Point(r.problem, r.backend, r.framework, n=r.n, K=r.K, device=r.device,
                      dtype=r.dtype, seed=r.seed, options=r.options or {})
        keys[point.key()] += 1
        labels[point.key()] = point.label()
    return {labels[k]: c for k, c in keys.items() if c > 1}


def refuse_duplicates(field: str, path: Path, records: list) -> None:
    """A :class:`UsageError` naming the cells when ``records`` hold one point twice."""
    dup = duplicated_points(records)
    if not dup:
        return
    shown = "; ".join(f"{label} ({count} records)" for label, count in list(dup.items())[:5])
    more = f"; and {len(dup) - 5} more" if len(dup) > 5 else ""
    raise UsageError(field, f"{str(path)!r} holds {len(dup)} point(s) more than once: "
                     f"{shown}{more}", "a run with one record per point (keep one line of each "
                     "and remove the others)")


def existing_run(field: str, path: Path) -> Path:
    """``path`` as an existing run directory holding records.jsonl, or a UsageError that says
    what it is instead (a records.jsonl given for its directory, a path this user cannot
    reach)."""
    path = Path(path)
    records = path / "records.jsonl"
    try:
        if path.is_file() and path.name == "records.jsonl":
            raise UsageError(field, f"{str(path)!r} is a records file, not a run directory",
                             f"its directory: {str(path.parent)!r}")
        if not path.is_dir():
            raise UsageError(field, f"{str(path)!r} is not a directory" if path.exists()
                             else f"{str(path)!r} does not exist", "a results/<run-id> directory")
        if not records.is_file():
            raise UsageError(field, f"{str(path)!r} has no records.jsonl",
                             "a results/<run-id> directory")
    except PermissionError as exc:
        raise UsageError(field, f"cannot access {str(exc.filename or path)!r}: permission "
                         "denied", "a run directory this user can read") from None
    return path
