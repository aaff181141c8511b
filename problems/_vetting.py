"""Vet a user's problem code in a child process before this process imports it.

A problem given as a file, a module or an entry point is the user's code, and importing it runs
whatever its module level does. In the command's own process a ``sys.exit(3)`` or
``os._exit(0)`` there would end the command with that status and no message (a CI ``check``
step reading a pass), a crash would kill it, a hang would hang it, and a ``print`` would land
on stdout before ``--json``'s JSON. So each one is first imported in a child
(:func:`vet`), with stdout and stderr captured: an exit, a crash or a hang there is one
:class:`UsageError` naming the file, with what the module printed shown on stderr. An import
that merely raises is left to the in-process loader, whose message names the exception. The
in-process import that follows sends what the module prints to stderr
(:func:`stdout_to_stderr`), so stdout carries only the command's own output.

Processes that measure (workers, the fork server, ``check``'s child) inherit
``VETTED_ENV`` and do not vet again: their output never reaches the user's stdout.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

from suite.plugin.errors import UsageError

#: set in the environment of processes started after vetting (they skip it)
VETTED_ENV = "IFT_BENCH_VETTED"
#: seconds an import may take in the vetting child (a user module importing torch and a
#: dataset); overridable for tests and slow file systems
TIMEOUT_ENV = "IFT_BENCH_IMPORT_TIMEOUT"
DEFAULT_TIMEOUT_S = 120.0
#: what the child's output shows of a failed import
OUTPUT_TAIL = 4000

_CHILD = r"""
import importlib, importlib.metadata, importlib.util, os, sys
kind, target, fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
def say(word):
    os.write(fd, word.encode())
try:
    if kind == "file":
        spec = importlib.util.spec_from_file_location("ift_bench_vetting", target)
        module = importlib.util.module_from_spec(spec)
        sys.modules["ift_bench_vetting"] = module
        spec.loader.exec_module(module)
    elif kind == "module":
        importlib.import_module(target)
    else:
        importlib.metadata.EntryPoint(name="vetting", value=target, group="vetting").load()
except SystemExit as exc:
    say(f"exit {exc.code!r}")
except KeyboardInterrupt:  # the module's own: this child is in a session of its own
    say("interrupt")
except BaseException:
    say("raised")
else:
    say("ok")
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""


def vetting_enabled() -> bool:
    return os.environ.get(VETTED_ENV) != "1"


def _timeout_s() -> float:
    try:
        value = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S
    return value if value > 0 else DEFAULT_TIMEOUT_S


def vet(kind: str, target: str, what: str, field: str, allowed: object) -> None:
    """Import ``target`` (``kind`` file, module or entry) in a child process; an exit, a crash
    or a hang there raises a :class:`UsageError` for ``field`` naming ``what``."""
    if not vetting_enabled():
        return
    timeout = _timeout_s()
    read_fd, write_fd = os.pipe()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path),
           VETTED_ENV: "1"}
    with tempfile.TemporaryFile() as output:
        try:
            proc = subprocess.Popen([sys.executable, "-c", _CHILD, kind, target, str(write_fd)],
                                    stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                    env=env, pass_fds=(write_fd,), start_new_session=True)
        finally:
            os.close(write_fd)
        try:
            try:
                proc.wait(timeout=timeout)
                hung = False
            except subprocess.TimeoutExpired:
                hung = True
            finally:
                if proc.poll() is None:  # a hang, or Ctrl-C while we wait
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, 9)
                    proc.wait()
            verdict = _read_all(read_fd)
        finally:
            os.close(read_fd)
        if verdict in ("ok", "raised"):  # "raised": the in-process loader names the exception
            return
        output.seek(0)
        printed = output.read().decode("utf-8", errors="replace")[-OUTPUT_TAIL:]
    if printed.strip():
        sys.stderr.write(f"ift-bench: what importing {what} printed:\n{printed.rstrip()}\n")
    if hung:
        how = f"did not finish within {timeout:g} s (set {TIMEOUT_ENV} to allow longer)"
    elif verdict.startswith("exit"):
        how = f"called sys.exit({verdict.split(' ', 1)[1]})"
    elif verdict == "interrupt":
        how = "raised KeyboardInterrupt"
    elif proc.returncode < 0:
        how = f"crashed the process (signal {_signal_name(-proc.returncode)})"
    else:
        how = f"ended the process (os._exit({proc.returncode}) or a crash)"
    raise UsageError(field, f"importing {what} {how}", allowed)


def _read_all(fd: int) -> str:
    """What the (ended) child wrote; non-blocking, since a process the module started may
    still hold the pipe open."""
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """What the body prints — through ``sys.stdout`` or straight to file descriptor 1 —
    goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        try:
            sys.__stdout__.flush()
            saved = os.dup(1)
        except (OSError, AttributeError, ValueError):  # no real fd 1 (an embedding host)
            yield
            return
        try:
            os.dup2(2, 1)
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.__stdout__.flush()
            os.dup2(saved, 1)
            os.close(saved)
