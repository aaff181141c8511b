"""Validation of what a user types: names that become paths, directories we write, numbers.

Every check raises :class:`~suite.plugin.errors.UsageError` naming the field and the allowed
values, so the CLI prints one line and exits 2 *before* anything is measured or written.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from suite.plugin.errors import UsageError

#: run ids and config names become one directory name under the results directory
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
NAME_MAX = 100
NAME_ALLOWED = (f"one directory name of 1-{NAME_MAX} characters from A-Z a-z 0-9 . _ -, "
                "not starting with '.'")

#: upper bounds on a point's size: beyond them a dense n×n matrix (ift-direct, qp) or the
#: K-step tape of unrolled reverse mode no longer fits a workstation's memory anyway
N_MAX = 100_000
K_MAX = 10_000_000
SEED_MAX = 2**32 - 1  # numpy's SeedSequence takes any int, but records stay readable
REPEATS_MAX = 10_000
TIMEOUT_MAX_S = 7 * 24 * 3600.0
JOBS_MAX = 64  # more parallel points would only queue on the timing lock
#: the memory cap bounds what a measurement adds to the loaded framework (see suite.worker);
#: below this, thread stacks and the meters do not fit (measured: JAX at n = 10, K = 10 dies
#: with a 128 MiB cap, not with 256 MiB; torch needs 64 MiB)
MEMORY_CAP_MIN = 2**28
MEMORY_CAP_MAX = 2**50  # 1 PiB: beyond it setrlimit's argument is no longer a real cap


def safe_component(field: str, value: Any) -> str:
    """``value`` as one safe path component (a run id, a config name), or a UsageError."""
    if not isinstance(value, str):
        raise UsageError(field, f"{value!r} is not a string", NAME_ALLOWED)
    if not value or len(value) > NAME_MAX or not NAME_PATTERN.fullmatch(value):
        raise UsageError(field, f"{value!r} is not a safe name", NAME_ALLOWED)
    return value


def sanitize_component(text: str, fallback: str = "config") -> str:
    """A safe name derived from ``text`` (a file's stem): unsafe characters become ``-``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", text).lstrip(".")[:NAME_MAX]
    return cleaned or fallback


def cpus_available() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def number(field: str, value: Any, *, integer: bool = False, minimum: float | None = None,
           maximum: float | None = None, exclusive_minimum: bool = False,
           allowed: str | None = None, strict: bool = False,
           what: str | None = None) -> int | float:
    """A finite int (``integer``) or float within [minimum, maximum], from a number or text.

    Booleans are not numbers here (TOML's ``true`` must not read as 1), NaN and ±inf are not
    finite, and an integer field does not accept 2.5. ``strict`` (a value already parsed, from
    TOML or meta.json): no text, and an integer field takes only an int.
    """
    allowed = allowed or describe_range(integer, minimum, maximum, exclusive_minimum)
    kind = what or ("an integer" if integer else "a number")
    parsed: int | float
    if isinstance(value, bool):
        raise UsageError(field, f"{str(value).lower()} is a boolean, not {kind}", allowed)
    try:
        if value is None:
            raise ValueError
        if strict and (isinstance(value, str) or (integer and not isinstance(value, int))):
            raise ValueError
        if isinstance(value, str):
            text = value.strip()
            parsed = int(text) if integer and re.fullmatch(r"[+-]?\d+", text) else float(text)
        elif isinstance(value, int | float):
            parsed = value
        else:
            raise ValueError
    except (ValueError, OverflowError):
        raise UsageError(field, f"cannot read {value!r} as {kind}", allowed) from None
    if isinstance(parsed, float):
        if not math.isfinite(parsed):
            raise UsageError(field, f"{value!r} is not finite", allowed)
        if integer:
            if not parsed.is_integer():
                raise UsageError(field, f"{value!r} is not an integer", allowed)
            parsed = int(parsed)
    if minimum is not None and (parsed < minimum or (exclusive_minimum and parsed == minimum)):
        raise UsageError(field, f"{value!r} is out of range", allowed)
    if maximum is not None and parsed > maximum:
        raise UsageError(field, f"{value!r} is out of range", allowed)
    return parsed


def describe_range(integer: bool, minimum: float | None, maximum: float | None,
                   exclusive_minimum: bool = False) -> str:
    kind = "an integer" if integer else "a finite number"
    lo = "" if minimum is None else f"{'>' if exclusive_minimum else '>='} {minimum:g}"
    hi = "" if maximum is None else f"<= {maximum:g}"
    bound = " and ".join(b for b in (lo, hi) if b)
    return f"{kind}{' ' + bound if bound else ''}"


def path_argument(field: str, text: str) -> Path:
    """A path typed by the user: not empty (``''`` would silently mean the current directory)."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(field, "empty path", "a file or directory path")
    if "\x00" in text:
        raise UsageError(field, f"{text!r} contains a NUL byte", "a file or directory path")
    return Path(text)


def writable_directory(field: str, path: Path, *, create: bool = True) -> Path:
    """``path`` as a directory we can write, created (with parents) when missing and allowed."""
    path = Path(path)
    if str(path) == "":
        raise UsageError(field, "empty path", "a directory path")
    if path.exists() and not path.is_dir():
        raise UsageError(field, f"{str(path)!r} exists and is not a directory",
                         "a directory we can write, or a path where one can be created")
    if not path.exists():
        if not create:
            raise UsageError(field, f"{str(path)!r} does not exist", "an existing directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(field, f"cannot create {str(path)!r}: {exc.strerror or exc}",
                             "a directory we can write, or a path where one can be created"
                             ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(field, f"{str(path)!r} is not writable",
                         "a directory we can write")
    return path


def appendable_file(field: str, path: Path) -> Path:
    """``path`` (existing or not) is a regular file we can append to; nothing is changed."""
    path = Path(path)
    if path.exists():
        if not path.is_file():
            raise UsageError(field, f"{str(path)!r} is not a regular file", "a writable file")
        if not os.access(path, os.W_OK):
            raise UsageError(field, f"{str(path)!r} is read-only", "a writable file")
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(field, f"{str(path.parent)!r} is not writable", "a writable directory")
    return path


def output_file(field: str, path: Path) -> Path:
    """A file we are about to (over)write: its directory exists and is writable, it is no
    directory itself."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(field, f"{str(path)!r} is a directory", "a file path to write")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(field, f"directory {str(parent)!r} does not exist",
                         "a file path in an existing, writable directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists()
                                                      and not os.access(path, os.W_OK)):
        raise UsageError(field, f"{str(path)!r} is not writable",
                         "a file path in an existing, writable directory")
    return path


def inside(root: Path, child: Path) -> bool:
    """Whether ``child`` resolves to a path under ``root`` (defence against ``..`` and links)."""
    root_r, child_r = Path(root).resolve(), Path(child).resolve()
    return child_r != root_r and root_r in child_r.parents
