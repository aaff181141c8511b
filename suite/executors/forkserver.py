"""A warm parent for isolated points: it imports the frameworks and the suite once, then forks one
fresh child per point.

Starting a Python interpreter and importing torch, JAX, memray and the problems costs seconds
per point, the same seconds every time. The fork server pays them once per sweep; each point
still runs in a process of its own, forked from a parent that has measured nothing, allocated
nothing of a point's and initialised no framework backend (importing torch or JAX starts no
device runtime, so a forked child starts them itself, as a fresh interpreter would). What one
point leaks, fragments or caches dies with its child.

Protocol (one JSON object per line): the client writes ``{"id", "spec", "out", "stdout",
"stderr"}`` to the server's stdin; the server forks, answers ``{"id", "pid"}`` at once, and
``{"pid", "returncode"}`` when that child exits (negative: killed by that signal, as
``subprocess`` reports it). The server runs in its own session and dies with its client;
each child runs in a session of its own (its process group is what a timeout kills) and dies
with the server.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import subprocess
import sys
import threading
from pathlib import Path

#: imported once by the server, before any fork: what every point needs
PRELOAD = ("numpy", "memray", "psutil", "suite.measure", "suite.worker")


def _send(message: dict) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _child(request: dict) -> None:
    """In the forked child: become a fresh session with its own stdout/stderr, run the worker,
    and leave through ``os._exit`` (never back into the server's loop)."""
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        from suite.worker import main

        code = main([request["spec"], request["out"]])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 — report it on the child's stderr, then exit 1
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """The server loop: fork on request, report every child's exit."""
    from suite.worker import _die_with_parent

    _die_with_parent()
    for name in PRELOAD:
        importlib.import_module(name)
    import suite.frameworks

    # where installed: a framework that fails to import fails its own points, not the others'
    for framework in suite.frameworks.registry().values():
        for name in framework.preload:
            try:
                importlib.import_module(name)
            except ImportError:
                pass
    import problems

    for problem in problems.registry().values():  # the modules a problem's data needs
        for name in getattr(problem, "preload", ()):
            importlib.import_module(name)
    import gc

    # every child inherits these objects; frozen, its collections never scan them (nor does
    # a collection in the child touch their pages, which would copy them)
    gc.collect()
    gc.freeze()
    _send({"ready": os.getpid()})

    buffer = b""
    children = 0
    while True:
        readable, _, _ = select.select([0], [], [], 0.05 if children else 1.0)
        if readable:
            chunk = os.read(0, 65536)
            if not chunk:  # the client went away: children die with us (PDEATHSIG)
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request)
                children += 1
                _send({"id": request["id"], "pid": pid})
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children -= 1
            _send({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)})


class ForkServerClient:
    """The sweep's side: starts the server, asks it for children and learns how they ended.

    Thread-safe: concurrent sweep threads share one server; a reader thread routes the
    server's answers to the thread waiting for them.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "suite.executors.forkserver"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, start_new_session=True)
        ready = self._proc.stdout.readline()
        if not ready:
            raise RuntimeError("the fork server exited while importing the frameworks "
                               f"(exit status {self._proc.wait()})")
        self._lock = threading.Lock()
        self._pids: dict[int, threading.Event] = {}
        self._started: dict[int, dict] = {}
        self._returncodes: dict[int, int] = {}
        self._next_id = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            message = json.loads(line)
            with self._lock:
                if "id" in message:
                    self._started[message["id"]]["pid"] = message["pid"]
                    self._started[message["id"]]["event"].set()
                else:
                    self._returncodes[message["pid"]] = message["returncode"]
                    event = self._pids.setdefault(message["pid"], threading.Event())
                    event.set()
        with self._lock:  # the server died: wake everyone waiting
            for entry in self._started.values():
                entry["event"].set()
            for event in self._pids.values():
                event.set()

    def start(self, spec: Path, out: Path, stdout: Path, stderr: Path) -> ForkedChild:
        with self._lock:
            request_id = self._next_id
            self._next_id += 1
            entry = {"event": threading.Event(), "pid": None}
            self._started[request_id] = entry
            self._proc.stdin.write((json.dumps({
                "id": request_id, "spec": str(spec), "out": str(out), "stdout": str(stdout),
                "stderr": str(stderr)}) + "\n").encode())
            self._proc.stdin.flush()
        entry["event"].wait()
        with self._lock:
            del self._started[request_id]
            pid = entry["pid"]
            if pid is None:
                raise RuntimeError("the fork server died")
            event = self._pids.setdefault(pid, threading.Event())
        return ForkedChild(self, pid, event)

    def _returncode(self, pid: int) -> int | None:
        with self._lock:
            code = self._returncodes.pop(pid, None)
            self._pids.pop(pid, None)
        return code

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class ForkedChild:
    """One point's child process, as the fork server reported it (a ``Popen``-like handle)."""

    def __init__(self, client: ForkServerClient, pid: int, exited: threading.Event) -> None:
        self.pid = pid
        self._client = client
        self._exited = exited
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"point in process {self.pid}", timeout)
        if self.returncode is None:
            code = self._client._returncode(self.pid)
            # a dead server cannot report: treat the child as killed
            self.returncode = code if code is not None else -9
        return self.returncode

    def poll(self) -> int | None:
        return self.returncode if self.returncode is not None or not self._exited.is_set() \
            else self.wait(0)


if __name__ == "__main__":
    serve()
