"""The run directory: :class:`RunDir` owns its layout and its life — create, open for resume,
open for reading, ``meta.json``, ``records.jsonl`` (append, read, a torn last line set aside),
the run's cache and scratch directories, the timing lock, the writer lock and the names of what
``report``, ``gate`` and the gate's paired base run write there. Every other module asks a
``RunDir`` for a path instead of spelling it.

One writer per run directory: a sweep (``run``, ``run --resume``, the gate's own sweep) holds
an exclusive ``flock`` on ``RUN_DIR/.writer.lock`` for its whole length and writes its pid into
the file. The kernel releases the lock when the process dies, however it dies, so a SIGKILLed
run can be resumed at once; a second writer is refused on one line naming the holder's pid
(exit 2).

Readers (``report``, ``compare``, ``gate --run``) never take the lock — a report of a live run
is allowed — but :meth:`RunDir.reader_notes` says that the run is still being written, and
:func:`refuse_duplicates` refuses a run whose records hold one point twice (two writers before
this lock existed, or records concatenated by hand): every table and fit would silently count
that point twice.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from suite.inputs import (
    NAME_ALLOWED,
    appendable_file,
    inside,
    safe_component,
    writable_directory,
)
from suite.plugin.errors import UsageError
from suite.records import Record, RecordsFile, append_record, read_records_checked, write_json


class RunDir:
    """One run's directory (``results/<run-id>``) and every path inside it.

    Make one with :meth:`create` (a fresh run), :meth:`for_resume` (a run to write again),
    :meth:`existing` (a run to read) or ``RunDir(path)`` where the directory is known good."""

    #: one JSON object per line, appended and fsynced point by point (suite.records)
    RECORDS = "records.jsonl"
    #: the run's configuration, environment, code identity and progress
    META = "meta.json"
    #: the writer's flock and pid (module doc)
    WRITER_LOCK = ".writer.lock"
    #: the lock the timed sections of points measured side by side take turns under
    #: (suite.timing)
    TIMING_LOCK = ".timing.lock"
    #: what the points of the run share: float64 references by instance (suite.references)
    #: and compiled programs (suite.run_cache)
    CACHE = ".references"
    #: per-point scratch directories, cleared when the run is next written
    SCRATCH = ".points"
    #: what ``gate`` found (its default --json)
    GATE = "gate.json"
    #: what ``report`` writes (its default --out)
    REPORT = "report.html"
    #: the decision table as CSV, beside the report
    DECISION = "decision.csv"
    #: the gate's paired path: the base commit's run, its hash (its tree carries no .git to
    #: ask), its output, and its source tree while it runs (removed afterwards)
    BASE_RUN = "base"
    BASE_COMMIT = "base.commit"
    BASE_LOG = "base.log"
    BASE_TREE = ".base-src"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ---- making and opening ---------------------------------------------------------------
    @classmethod
    def create(cls, results_root: Path, config_name: str, run_id: str | None = None) -> RunDir:
        """A fresh directory ``results_root/<run-id>`` (``<run-id>-1``, … where it exists);
        the id is one safe path component, so the run can never be written outside
        ``results_root``."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = (safe_component("--run-id", run_id) if run_id is not None
                else f"{stamp}-{safe_component('config name', config_name)}")
        results_root = writable_directory("--results", Path(results_root))
        path, i = results_root / base, 1
        while path.exists():
            path, i = results_root / f"{base}-{i}", i + 1
        if not inside(results_root, path):  # unreachable with a safe component; a guard
            raise UsageError("--run-id", f"{base!r} leaves {str(results_root)!r}", NAME_ALLOWED)
        try:
            path.mkdir()
        except OSError as exc:
            raise UsageError("--results", f"cannot create {str(path)!r}: "
                             f"{exc.strerror or exc}", "a directory we can write") from None
        return cls(path)

    @classmethod
    def for_resume(cls, path: Path) -> RunDir:
        """An existing run directory to write again: a directory we can write, records.jsonl
        (if any) a regular file we can append to, meta.json (if any) a file we can replace."""
        run = cls(path)
        if cls.is_records_file(run.path):
            raise UsageError("--resume", f"{str(run.path)!r} is a records file, not a run "
                             "directory", f"its directory: {str(run.path.parent)!r}")
        if not run.path.is_dir():
            raise UsageError("--resume", f"{str(run.path)!r} is not a directory",
                             f"a results/<run-id> directory with {cls.RECORDS}")
        if not run.records_file.exists() and not run.meta_file.exists():
            raise UsageError("--resume", f"{str(run.path)!r} is not a run directory",
                             f"a results/<run-id> directory with {cls.RECORDS}")
        writable_directory("--resume", run.path, create=False)
        appendable_file("--resume", run.records_file)
        if run.meta_file.exists() and not run.meta_file.is_file():
            raise UsageError("--resume", f"{str(run.meta_file)!r} is not a file",
                             "a run directory written by ift-bench run")
        return run

    @classmethod
    def existing(cls, field: str, path: Path) -> RunDir:
        """``path`` as an existing run directory holding records.jsonl, or a UsageError that
        says what it is instead (a records.jsonl given for its directory, a path this user
        cannot reach)."""
        run = cls(path)
        try:
            if cls.is_records_file(run.path):
                raise UsageError(field, f"{str(run.path)!r} is a records file, not a run "
                                 "directory", f"its directory: {str(run.path.parent)!r}")
            if not run.path.is_dir():
                raise UsageError(field, f"{str(run.path)!r} is not a directory"
                                 if run.path.exists() else f"{str(run.path)!r} does not exist",
                                 "a results/<run-id> directory")
            if not run.records_file.is_file():
                raise UsageError(field, f"{str(run.path)!r} has no {cls.RECORDS}",
                                 "a results/<run-id> directory")
        except PermissionError as exc:
            raise UsageError(field, f"cannot access {str(exc.filename or run.path)!r}: "
                             "permission denied", "a run directory this user can read") from None
        return run

    @classmethod
    def is_records_file(cls, path: Path) -> bool:
        """Whether ``path`` is a run's records file (given where its directory was meant)."""
        return Path(path).name == cls.RECORDS and Path(path).is_file()

    def remove_if_unused(self) -> None:
        """Remove this run directory, made before anything was measured; one that holds
        something worth reading (Ray's log of a failed connection) stays."""
        for path in self.path.iterdir():
            if path.name != self.WRITER_LOCK and (path.is_dir() or path.stat().st_size > 0):
                return
        for path in self.path.iterdir():
            path.unlink()
        self.path.rmdir()

    # ---- the paths --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The run id."""
        return self.path.name

    @property
    def records_file(self) -> Path:
        return self.path / self.RECORDS

    @property
    def meta_file(self) -> Path:
        return self.path / self.META

    @property
    def writer_lock_file(self) -> Path:
        return self.path / self.WRITER_LOCK

    @property
    def timing_lock_file(self) -> Path:
        return self.path / self.TIMING_LOCK

    @property
    def cache_dir(self) -> Path:
        return self.path / self.CACHE

    @property
    def scratch_dir(self) -> Path:
        return self.path / self.SCRATCH

    @property
    def gate_file(self) -> Path:
        return self.path / self.GATE

    @property
    def report_file(self) -> Path:
        return self.path / self.REPORT

    @classmethod
    def decision_file_beside(cls, report: Path) -> Path:
        """Where the decision table's CSV goes for a report written to ``report``."""
        return Path(report).parent / cls.DECISION

    @property
    def decision_file(self) -> Path:
        return self.decision_file_beside(self.report_file)

    @property
    def base_run(self) -> RunDir:
        """The gate's base commit's run, inside this one."""
        return RunDir(self.path / self.BASE_RUN)

    @property
    def base_commit_file(self) -> Path:
        return self.path / self.BASE_COMMIT

    @property
    def base_log_file(self) -> Path:
        return self.path / self.BASE_LOG

    @property
    def base_tree(self) -> Path:
        return self.path / self.BASE_TREE

    def executor_log(self, executor: str) -> Path:
        """Where executor ``executor``'s own messages go (a Ray cluster's: ``ray.log``)."""
        return self.path / f"{executor}.log"

    # ---- meta.json --------------------------------------------------------------------------
    def has_meta(self) -> bool:
        return self.meta_file.exists()

    def read_meta(self, field: str = "--resume") -> dict:
        """meta.json as a JSON object; a damaged one is a UsageError naming it."""
        path = self.meta_file
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

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Replace meta.json whole (never half-written)."""
        write_json(self.meta_file, meta)

    # ---- records.jsonl ----------------------------------------------------------------------
    def append(self, record: Record) -> None:
        """Append one record, durable before this returns."""
        append_record(self.records_file, record)

    def read_records(self) -> RecordsFile:
        """Every record, and what could not be read as one (see
        :func:`suite.records.read_records_checked`)."""
        return read_records_checked(self.records_file)

    def set_aside_torn_tail(self) -> tuple[Path, int] | None:
        """Move a torn last line of records.jsonl into a side file (:func:`move_torn_tail`)."""
        return move_torn_tail(self.records_file)

    def frame(self):
        """The run's records as a pandas DataFrame (:func:`load_frame`)."""
        return load_frame(self.path)

    # ---- scratch ----------------------------------------------------------------------------
    def clear_scratch(self) -> None:
        """Remove what a killed sweep left in the scratch directory (under the writer lock)."""
        shutil.rmtree(self.scratch_dir, ignore_errors=True)

    def remove_scratch_if_empty(self) -> None:
        with contextlib.suppress(OSError):  # empty once every point has ended
            self.scratch_dir.rmdir()

    # ---- the writer lock --------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, field: str = "--resume") -> Iterator[None]:
        """Hold the run's writer lock for the body; a run already held is a
        :class:`UsageError` naming the holder's pid."""
        path = self.writer_lock_file
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
                raise UsageError(field, f"{str(self.path)!r} is being written by another "
                                 f"ift-bench (pid {holder if holder is not None else 'unknown'})",
                                 "one writer per run: wait for it to finish (or stop it), then "
                                 "--resume") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                # a reader that finds no pid knows the run is finished; the lock goes with
                # close
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def writing_pid(self) -> int | None:
        """The pid of the process writing the run now, None if none — without taking the lock.

        The pid in the lock file names the last writer; it is writing now only if the kernel
        still holds a lock on that file (``/proc/locks``), or, where that cannot be read, if
        the process is alive."""
        path = self.writer_lock_file
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

    def reader_notes(self) -> list[str]:
        """What a reader should print before using the run (a run still being written)."""
        pid = self.writing_pid()
        if pid is None:
            return []
        return [f"{self.path} is still being written (by pid {pid}): its records are those "
                "finished so far"]


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


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


def move_torn_tail(path: Path) -> tuple[Path, int] | None:
    """Move a torn last line (bytes after the last newline) into a side file, so the next
    append starts on a fresh line instead of merging into it; return (side file, bytes).

    The fragment is written and synced to the side file before the records file is truncated,
    so a crash in between leaves it in both places, never in neither.
    """
    path = Path(path)
    if not path.exists():
        return None
    with open(path, "rb") as fh:
        data = fh.read()
    cut = data.rfind(b"\n") + 1
    if cut == len(data):
        return None
    side = path.with_name(f"{path.name}.torn-at-{cut}")
    i = 1
    while side.exists():
        side, i = path.with_name(f"{path.name}.torn-at-{cut}-{i}"), i + 1
    with open(side, "wb") as fh:
        fh.write(data[cut:])
        fh.flush()
        os.fsync(fh.fileno())
    with open(path, "r+b") as fh:
        fh.truncate(cut)
        fh.flush()
        os.fsync(fh.fileno())
    return side, len(data) - cut


def load_frame(run_dir: str | Path):
    """The records of a run directory (or of a records file) as a pandas DataFrame, one row
    per point, every schema column."""
    from suite.records import records_frame

    path = Path(run_dir)
    read = RunDir(path).read_records() if path.is_dir() else read_records_checked(path)
    return records_frame(read.records)


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


# ---- the writer lock of a run directory given as a path ----------------------------------
def writer(run_dir: Path, field: str = "--resume"):
    """:meth:`RunDir.writer` of ``run_dir``."""
    return RunDir(run_dir).writer(field)


def writing_pid(run_dir: Path) -> int | None:
    """:meth:`RunDir.writing_pid` of ``run_dir``."""
    return RunDir(run_dir).writing_pid()
