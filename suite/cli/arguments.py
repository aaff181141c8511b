"""The command line's arguments: argparse types that check a value where it is typed, the
allowed values each option names in its error, and the options several commands share.

A usage mistake is one :class:`~suite.plugin.errors.UsageError` naming the field and what is
allowed; ``main`` prints it on one line and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from pathlib import Path
from typing import Any

from suite.frameworks import DEVICES, DTYPES
from suite.frameworks import registry as framework_registry
from suite.inputs import (
    JOBS_MAX,
    K_MAX,
    N_MAX,
    NAME_ALLOWED,
    REPEATS_MAX,
    SEED_MAX,
    TIMEOUT_MAX_S,
    number,
    path_argument,
    safe_component,
)
from suite.plugin.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the field and the allowed values on
    stderr, and exit status 2 (``main`` prints the :class:`UsageError`)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _usage_error(message)


def _usage_error(message: str) -> UsageError:
    """argparse's message (``argument --timeout: …``, ``the following arguments are
    required: …``) as a UsageError whose field is the option the user got wrong."""
    arg = re.fullmatch(r"argument ([^:]+): (.*)", message, re.DOTALL)
    if arg:
        field = arg.group(1).split("/")[-1]
        problem = arg.group(2).strip()
        choose = re.fullmatch(r"(invalid choice: .*?) \(choose from (.*)\)", problem)
        if choose:
            return UsageError(field, choose.group(1), choose.group(2).replace("'", ""))
        if "(allowed:" in problem:
            return UsageError(field, problem)
        return UsageError(field, problem, ALLOWED.get(field, "see --help"))
    required = re.fullmatch(r"the following arguments are required: (.*)", message)
    if required:
        missing = [m.strip() for m in required.group(1).split(",")]
        also = f" (so are {', '.join(missing[1:])})" if len(missing) > 1 else ""
        return UsageError(missing[0], "required" + also, ALLOWED.get(missing[0], "see --help"))
    unknown = re.fullmatch(r"unrecognized arguments: (.*)", message)
    if unknown:
        return UsageError(unknown.group(1).split()[0], "unrecognized argument",
                          "the options that ift-bench COMMAND --help lists")
    return UsageError("arguments", message, "see ift-bench --help")


#: what each option accepts, for argparse's own errors (a missing value, a missing option)
ALLOWED = {
    "--problem": "a problem name (ift-bench list), package.module:ClassName or "
                 "path/to/file.py:ClassName",
    "--backend": "a backend name (ift-bench list)",
    "--framework": ", ".join(framework_registry()),
    "--n": f"an integer from 1 to {N_MAX}",
    "--K": f"an integer from 1 to {K_MAX}",
    "--seed": f"an integer from 0 to {SEED_MAX}",
    "--repeats": f"an integer from 1 to {REPEATS_MAX}",
    "--timeout": f"a positive number of seconds, at most {TIMEOUT_MAX_S:g} = one week",
    "--memory-cap": "a size from 256MiB to 1PiB such as 8GiB, or none",
    "--threads": "an integer from 1 to the number of CPUs available",
    "--jobs": f"an integer from 1 to {JOBS_MAX}",
    "--option": "name=value",
    "--dump": "a directory path",
    "--results": "a directory path",
    "--resume": "a results/<run-id> directory",
    "--run-id": NAME_ALLOWED,
    "--config": "a config name in suite/configs or a TOML file",
    "--out": "a file path",
    "--device": ", ".join(DEVICES),
    "--dtype": ", ".join(DTYPES),
    "RESULTS_DIR": "a results/<run-id> directory",
    "command": "list, check, point, pair, run, report, gate, compare, advise",
    "PROBLEM": "a problem name (ift-bench list), package.module:ClassName or "
               "path/to/file.py:ClassName",
    "--max-K": f"an integer from 1 to {K_MAX}",
    "--check": "two results/<run-id> directories: the run to fit on, the run to predict",
    "--memory": "a size such as 16GiB",
    "--time-budget": "a positive duration such as 10s, 500ms, 2min, 1h (a bare number: seconds)",
    "--tol": "a number > 0, e.g. 1e-6",
    "--residual": "a number > 0: the forward residual ‖F(θ, x_K)‖ your solver stops at",
}


def _type_error(exc: UsageError) -> argparse.ArgumentTypeError:
    """argparse turns this into "argument FIELD: MESSAGE" and calls ``Parser.error``."""
    return argparse.ArgumentTypeError(f"{exc.detail} (allowed: {exc.allowed})")


def numbers(field: str, *, integer: bool, minimum: float, maximum: float, what: str,
             exclusive_minimum: bool = False, many: bool = False):
    """An argparse ``type``: one finite number (or, ``many``, a comma list) in range."""

    def one(text: str) -> int | float:
        return number(field, text, integer=integer, minimum=minimum, maximum=maximum,
                      exclusive_minimum=exclusive_minimum, what=what,
                      allowed=ALLOWED.get(field))

    def parse(text: str):
        try:
            if not many:
                return one(text)
            items = [item.strip() for item in text.split(",") if item.strip()]
            if not items:
                raise UsageError(field, "empty list", f"comma-separated, each {ALLOWED[field]}")
            return [one(item) for item in items]
        except UsageError as exc:
            raise _type_error(exc) from None

    return parse


def names_list(field: str):
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise _type_error(UsageError(field, "empty list",
                                         f"comma-separated, {ALLOWED.get(field, 'names')}"))
        return items

    return parse


def path_arg(field: str):
    def parse(text: str) -> Path:
        try:
            return path_argument(field, text)
        except UsageError as exc:
            raise _type_error(exc) from None

    return parse


def run_id_arg(text: str) -> str:
    try:
        return safe_component("--run-id", text)
    except UsageError as exc:
        raise _type_error(exc) from None


def attach_dash_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--memory-cap -1GiB`` → ``--memory-cap=-1GiB``: argparse takes a value that starts
    with ``-`` (and is not a plain negative number) for an option and says "expected one
    argument"; attached, the value reaches its own check, whose message names what is allowed."""
    takes_value, every_option = set(), set()
    parsers = [parser]
    while parsers:
        current = parsers.pop()
        for action in current._actions:
            every_option.update(action.option_strings)
            if action.option_strings and action.nargs != 0:
                takes_value.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        if (token in takes_value and i + 1 < len(argv) and argv[i + 1].startswith("-")
                and argv[i + 1].split("=", 1)[0] not in every_option):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def one_instance_args(p: argparse.ArgumentParser) -> None:
    """--n, --K (required) and --seed (0) of one instance (``point`` and ``pair``)."""
    p.add_argument("--n", type=numbers("--n", integer=True, minimum=1, maximum=N_MAX,
                                        what="an integer"), required=True)
    p.add_argument("--K", type=numbers("--K", integer=True, minimum=1, maximum=K_MAX,
                                        what="an integer"), required=True)
    p.add_argument("--seed", type=numbers("--seed", integer=True, minimum=0,
                                           maximum=SEED_MAX, what="an integer"), default=0)


def measurement_args(p: argparse.ArgumentParser) -> None:
    """The options of how each point is measured (``point`` and ``run``)."""
    p.add_argument("--repeats", type=numbers("--repeats", integer=True, minimum=1,
                                              maximum=REPEATS_MAX, what="an integer"),
                   default=5,
                   help="timed repeats per point (median and min reported; default 5)")
    p.add_argument("--timeout", type=numbers("--timeout", integer=False, minimum=0,
                                              exclusive_minimum=True, maximum=TIMEOUT_MAX_S,
                                              what="seconds"), default=300.0,
                   help="seconds before a point is killed and recorded as timeout (300)")
    p.add_argument("--memory-cap", default=None,
                   help="address-space cap per point, e.g. 8GiB (default: none)")
    p.add_argument("--threads", type=numbers("--threads", integer=True, minimum=1,
                                              maximum=10**6, what="an integer"), default=1,
                   help="threads (and CPUs) per point, fixed for the whole run (1)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="problem or backend option; repeatable")


def settings_from(args: argparse.Namespace, base: Any = None):
    from suite.config import parse_bytes
    from suite.point import Settings

    return Settings(repeats=args.repeats, timeout_s=args.timeout,
                    memory_cap_bytes=parse_bytes(args.memory_cap, "--memory-cap"),
                    threads=args.threads).validate(CLI_SETTING_NAMES)


#: Settings' and a config's field names → the options a user types on the command line
CLI_SETTING_NAMES = {"repeats": "--repeats", "timeout_s": "--timeout",
                     "memory_cap_bytes": "--memory-cap", "memory_cap": "--memory-cap",
                     "threads": "--threads", "seeds": "--seed", "dtypes": "--dtype",
                     "problems": "--problem", "backends": "--backend", "frameworks": "--framework",
                     "device": "--device", "grid[0].n": "--n", "grid[0].K": "--K",
                     "options": "--option"}


@contextlib.contextmanager
def cli_field_names():
    """A point's field (``n``, ``problem``) named as the option that set it (``--n``)."""
    try:
        yield
    except UsageError as exc:
        if exc.field in {"problem", "backend", "framework", "device", "dtype", "n", "K", "seed"}:
            raise type(exc)(f"--{exc.field}", exc.detail, exc.allowed) from None
        raise


def cli_where(key: str) -> str:
    """A config key (``repeats``, ``options.tol``) named as the option that set it."""
    if key.startswith("options."):
        return f"--option {key.split('.', 1)[1]}"
    return CLI_SETTING_NAMES.get(key, key)


def readable_run(field: str, run_dir: Path, label: str = "") -> Path:
    """A run directory a reader (report, compare, gate --run) may use: its unreadable lines
    and a writer still at work are said on stderr; one point recorded twice is refused."""
    from suite import rundir
    from suite.records import read_records_checked
    from suite.rundir import RunDir

    run = RunDir.existing(field, run_dir)
    run_dir, path = run.path, run.records_file
    prefix = f"ift-bench: warning: {label}" if label else "ift-bench: warning: "
    for note in run.reader_notes():
        print(prefix + note, file=sys.stderr)
    checked = read_records_checked(path)
    for line in checked.problems(path):  # said, never skipped quietly
        print(prefix + line, file=sys.stderr)
    rundir.refuse_duplicates(field, path, checked.records)
    return run_dir
