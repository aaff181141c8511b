"""What a command does to its own process: signals that stop a sweep as Ctrl-C does, and the
user's prints kept off stdout."""

from __future__ import annotations

import contextlib
import signal
from typing import Any


def stdout_to_stderr():
    """What the user's code prints in this process goes to stderr (see problems._vetting)."""
    from problems._vetting import stdout_to_stderr as redirect

    return redirect()


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM and SIGINT stop a sweep the way Ctrl-C does: children killed, finished records
    kept. SIGINT is installed explicitly because a shell starts background jobs with it
    ignored, and Python then never raises KeyboardInterrupt."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # restored afterwards: main() also runs in-process (tests), whose handlers are not ours
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
