"""``python -m suite`` / ``ift-bench``: list, check, point, pair, run, report, gate, compare,
advise.

Exit status: 0 success; 1 a measured point did not finish ``ok`` (``point``) or a sweep was
interrupted (``run``); 2 bad input, reported on one line that names the field.
"""

from __future__ import annotations

import argparse
import signal
import sys

from suite.cli import advise, check, compare, gate, listing, pair, point, report, run
from suite.cli.arguments import Parser, attach_dash_values
from suite.plugin.errors import UsageError

#: the commands, in the order ``--help`` lists them: each a module with ``add_parser(sub)``
#: and ``run(args) -> exit status``; a new command is one module and one entry here
COMMANDS = {"list": listing, "check": check, "point": point, "pair": pair, "run": run,
            "gate": gate, "report": report, "compare": compare, "advise": advise}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ift-bench", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        argv = sys.argv[1:] if argv is None else list(argv)
        args = parser.parse_args(attach_dash_values(argv, parser))
        status = COMMANDS[args.command].run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
        return status
    except UsageError as exc:
        print(f"ift-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ift-bench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_stdout()
    except PermissionError as exc:  # a path under a directory this user cannot enter
        where = exc.filename if exc.filename is not None else "a path"
        print(f"ift-bench: error: {where}: permission denied (allowed: a path this user can "
              "reach)", file=sys.stderr)
        return 2


def _closed_stdout() -> int:
    """The reader of stdout went away (``ift-bench list | head -1``): end quietly, as a
    command killed by SIGPIPE would (status 141), without a traceback at exit, when Python
    flushes stdout once more."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE
