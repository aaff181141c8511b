"""``check``'s rules in a child process, each under a timeout.

The rules run the user's code (``generate``, ``step``, …), which may never return, ask for
more memory than the machine has, or end the process. The parent (:func:`isolated_findings`)
starts ``python -m suite.check_child`` and reads one JSON line per step from a pipe of its own —
``{"begin": step}`` as a step starts, ``{"finding": …}`` as a rule ends — so it knows which rule
is running when time runs out or the child dies. That rule fails with the reason; the next
rules run in a fresh child (rule 2 is rerun there, unseen, for the solution later rules need,
unless rule 2 was the one that failed). What the user's code prints goes to stderr: the
child's stdout is the parent's stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

from suite.check_rules import RULES, Finding, Plan, findings

#: seconds the child may take to start (interpreter, torch, JAX) before its first step
STARTUP_S = 120.0
RULE_NAMES = {rule: name for rule, (name, _) in enumerate(RULES, start=1)}


def isolated_findings(plan: Plan, timeout_s: float) -> Iterator[Finding]:
    """Every rule's finding, the rules run in child processes, each under ``timeout_s``."""
    first, solution = 1, True
    while first <= len(RULES):
        got: dict[int, Finding] = {}
        step, how = _run_child(plan, first, solution, timeout_s, got)
        yield from (got[r] for r in sorted(got))
        if how is None:  # the child ran every rule from ``first``
            return
        if isinstance(step, int) and step in got:  # it ended between two rules
            step += 1
            if step > len(RULES):
                return
        if step == "generate" and first == 1:
            yield Finding(1, RULE_NAMES[1], "fail",
                          f"generate(n={plan.n}, seed={plan.seed}) {how}")
            for rule in range(2, len(RULES) + 1):
                yield Finding(rule, RULE_NAMES[rule], "skip",
                              "no instance: generate() did not return (rule 1)")
            return
        if not isinstance(step, int):  # the child did not get to the rules: none can run
            what = {"start": "starting:", "generate": "rerunning generate()",
                    "solution": "rerunning rule 2 for the solution"}.get(str(step), str(step))
            for rule in range(first, len(RULES) + 1):
                yield Finding(rule, RULE_NAMES[rule], "fail", f"not run: {what} {how}")
            return
        yield Finding(step, RULE_NAMES[step], "fail", how)
        if step == 2:
            solution = False
        first = step + 1


def _run_child(plan: Plan, first: int, solution: bool, timeout_s: float,
               got: dict[int, Finding]) -> tuple[int | str | None, str | None]:
    """Run rules ``first`` … in one child; fill ``got``. Returns (the step that did not end,
    how) — (None, None) when the child ran to the end."""
    read_fd, write_fd = os.pipe()
    args = json.dumps({"plan": plan.to_json(), "first": first, "solution": solution,
                       "fd": write_fd})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
    from problems._vetting import VETTED_ENV

    env[VETTED_ENV] = "1"
    try:
        proc = subprocess.Popen([sys.executable, "-m", "suite.check_child", args],
                                stdin=subprocess.DEVNULL, stdout=2,
                                env=env, pass_fds=(write_fd,), start_new_session=True)
    finally:
        os.close(write_fd)
    step: int | str = "start"
    # starting an interpreter and importing the frameworks is not the rules' time
    deadline = time.monotonic() + max(timeout_s, STARTUP_S)
    buffer = b""
    how: str | None = None
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                how = f"timed out after {timeout_s:g} s"
                break
            ready, _, _ = select.select([read_fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(read_fd, 65536)
            if not chunk:  # the child closed its end: it ended
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    message = json.loads(line)
                except ValueError:  # not ours (the user's code wrote to this descriptor)
                    continue
                if "begin" in message:
                    step = message["begin"]
                    deadline = time.monotonic() + timeout_s
                elif "finding" in message:
                    finding = Finding(**message["finding"])
                    got[finding.rule] = finding
                elif message.get("done"):
                    step = "done"
    finally:
        if how is None:  # it closed the pipe: it is exiting, let it (its status says how)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if proc.poll() is None:  # out of time, an interrupt, or stuck on its way out
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        os.close(read_fd)
    if how is None and step == "done":
        return None, None
    if how is None:
        code = proc.returncode
        how = (f"ended the process (killed by {_signal_name(-code)})" if code < 0
               else f"ended the process (exit status {code})")
    if step == "start" and how.startswith("timed out"):
        how = f"the check's child process did not start within {max(timeout_s, STARTUP_S):g} s"
    return step, how


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def main(argv: list[str]) -> int:
    """In the child: run the rules, report each step on the pipe the parent gave."""
    request = json.loads(argv[0])
    fd = request["fd"]
    out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")

    def send(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    plan = Plan(**request["plan"])
    for finding in findings(plan, request["first"], request["solution"],
                            begin=lambda step: send({"begin": step})):
        send({"finding": finding.__dict__})
    send({"done": True})
    out.close()
    return 0


def _main_quietly(argv: list[str]) -> int:
    """``main``; whatever escapes it (the user's code raising SystemExit or
    KeyboardInterrupt inside a rule) is one line on stderr, never a traceback: the parent
    fails the rule that was running with the exit status."""
    try:
        return main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        sys.stderr.write(f"ift-bench check: the problem's code called sys.exit({exc.code!r})\n")
        return code or 1
    except BaseException as exc:  # noqa: BLE001 — reported on one line, status 1
        text = " ".join(str(exc).split())[:200]
        sys.stderr.write(f"ift-bench check: {type(exc).__name__}{': ' + text if text else ''}\n")
        return 1


if __name__ == "__main__":
    sys.exit(_main_quietly(sys.argv[1:]))
