"""``python -m suite`` / ``ift-bench``: list, check, point, run, report, gate, compare.

Exit status: 0 success; 1 a measured point did not finish ``ok`` (``point``) or a sweep was
interrupted (``run``); 2 bad input, reported on one line that names the field.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import signal
import sys
from pathlib import Path
from typing import Any

from suite.inputs import (
    JOBS_MAX,
    K_MAX,
    N_MAX,
    NAME_ALLOWED,
    REPEATS_MAX,
    SEED_MAX,
    TIMEOUT_MAX_S,
    number,
    output_file,
    path_argument,
    safe_component,
    writable_directory,
)
from suite.plugin.errors import UsageError

#: what ``point --dump DIR`` writes into DIR
DUMP_FILES = ("instance.npz", "grad.npy")
RECORD_SUMMARY = ("status", "time_s", "time_min_s", "forward_time_s", "compile_s", "peak_bytes",
                  "trace_bytes", "rss_peak_bytes", "grad_rel_error", "reference", "grad_norm",
                  "inner_residual", "step_evals", "vjp_evals", "jvp_evals", "hvp_evals",
                  "solver_iters", "solver_converged", "threads", "warnings", "error")


class _Parser(argparse.ArgumentParser):
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
    "--framework": "torch, jax",
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
    "--device": "cpu, cuda",
    "--dtype": "float64, float32",
    "RESULTS_DIR": "a results/<run-id> directory",
    "command": "list, check, point, run, report, gate, compare",
    "PROBLEM": "a problem name (ift-bench list), package.module:ClassName or "
               "path/to/file.py:ClassName",
    "--max-K": f"an integer from 1 to {K_MAX}",
}


def _type_error(exc: UsageError) -> argparse.ArgumentTypeError:
    """argparse turns this into "argument FIELD: MESSAGE" and calls ``_Parser.error``."""
    return argparse.ArgumentTypeError(f"{exc.detail} (allowed: {exc.allowed})")


def _numbers(field: str, *, integer: bool, minimum: float, maximum: float, what: str,
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


def _names_list(field: str):
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise _type_error(UsageError(field, "empty list",
                                         f"comma-separated, {ALLOWED.get(field, 'names')}"))
        return items

    return parse


def _path(field: str):
    def parse(text: str) -> Path:
        try:
            return path_argument(field, text)
        except UsageError as exc:
            raise _type_error(exc) from None

    return parse


def _run_id(text: str) -> str:
    try:
        return safe_component("--run-id", text)
    except UsageError as exc:
        raise _type_error(exc) from None


def _attach_dash_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
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


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ift-bench", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p_list = sub.add_parser("list",
                            help="every (problem, backend, framework), supported or why not")
    p_list.add_argument("--json", action="store_true", help="a JSON list of objects")
    p_list.add_argument("--device", default="cpu")
    p_list.add_argument("--problem", type=_names_list("--problem"), default=None,
                        help="only these problems (names or import paths; default: every "
                             "built-in and installed one)")

    p_check = sub.add_parser("check", help="vet a problem before trusting it: one line per "
                             "rule, pass/warn/fail (exit 1 on a fail)")
    p_check.add_argument("problem", metavar="PROBLEM",
                         help="a name, package.module:ClassName or path/to/file.py:ClassName")
    p_check.add_argument("--n", type=_numbers("--n", integer=True, minimum=1, maximum=N_MAX,
                                              what="an integer"), default=6,
                         help="problem size (default 6: the checks build dense Jacobians)")
    p_check.add_argument("--K", type=_numbers("--K", integer=True, minimum=1, maximum=K_MAX,
                                              what="an integer"), default=10,
                         help="K of the K-step map the references, the torch/JAX agreement "
                              "and the trace are checked at (default 10)")
    p_check.add_argument("--max-K", type=_numbers("--max-K", integer=True, minimum=1,
                                                  maximum=K_MAX, what="an integer"),
                         default=20000, help="steps the convergence rule allows (20000)")
    p_check.add_argument("--framework", default=None,
                         help="check in this framework only (default: every one the problem "
                              "supports)")
    p_check.add_argument("--seed", type=_numbers("--seed", integer=True, minimum=0,
                                                 maximum=SEED_MAX, what="an integer"), default=0)
    p_check.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                         help="problem option; repeatable")
    p_check.add_argument("--timeout", type=_numbers("--timeout", integer=False, minimum=0,
                                                    exclusive_minimum=True,
                                                    maximum=TIMEOUT_MAX_S, what="seconds"),
                         default=None,
                         help="seconds each rule may take before it fails as timed out "
                              "(default 600); the rules run in a child process")

    def measurement_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--repeats", type=_numbers("--repeats", integer=True, minimum=1,
                                                  maximum=REPEATS_MAX, what="an integer"),
                       default=5,
                       help="timed repeats per point (median and min reported; default 5)")
        p.add_argument("--timeout", type=_numbers("--timeout", integer=False, minimum=0,
                                                  exclusive_minimum=True, maximum=TIMEOUT_MAX_S,
                                                  what="seconds"), default=300.0,
                       help="seconds before a point is killed and recorded as timeout (300)")
        p.add_argument("--memory-cap", default=None,
                       help="address-space cap per point, e.g. 8GiB (default: none)")
        p.add_argument("--threads", type=_numbers("--threads", integer=True, minimum=1,
                                                  maximum=10**6, what="an integer"), default=1,
                       help="threads (and CPUs) per point, fixed for the whole run (1)")
        p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                       help="problem or backend option; repeatable")

    p_point = sub.add_parser("point", help="measure one point in an isolated subprocess")
    p_point.add_argument("--problem", required=True)
    p_point.add_argument("--backend", required=True)
    p_point.add_argument("--framework", required=True)
    p_point.add_argument("--n", type=_numbers("--n", integer=True, minimum=1, maximum=N_MAX,
                                              what="an integer"), required=True)
    p_point.add_argument("--K", type=_numbers("--K", integer=True, minimum=1, maximum=K_MAX,
                                              what="an integer"), required=True)
    p_point.add_argument("--seed", type=_numbers("--seed", integer=True, minimum=0,
                                                 maximum=SEED_MAX, what="an integer"), default=0)
    p_point.add_argument("--dtype", default="float64")
    p_point.add_argument("--device", default="cpu")
    measurement_args(p_point)
    p_point.add_argument("--dump", type=_path("--dump"), default=None, metavar="DIR",
                         help="write DIR/instance.npz and DIR/grad.npy")
    p_point.add_argument("--json", action="store_true", help="print the record as one JSON object")

    p_run = sub.add_parser("run", help="a sweep (config file or comma lists) with a progress bar")
    p_run.add_argument("--config", default=None,
                       help="a config name in suite/configs (default, quick, …) or a TOML path")
    p_run.add_argument("--problem", type=_names_list("--problem"))
    p_run.add_argument("--backend", type=_names_list("--backend"))
    p_run.add_argument("--framework", type=_names_list("--framework"), default=None)
    p_run.add_argument("--n", type=_numbers("--n", integer=True, minimum=1, maximum=N_MAX,
                                            what="an integer", many=True))
    p_run.add_argument("--K", type=_numbers("--K", integer=True, minimum=1, maximum=K_MAX,
                                            what="an integer", many=True))
    p_run.add_argument("--seed", type=_numbers("--seed", integer=True, minimum=0,
                                               maximum=SEED_MAX, what="an integer", many=True),
                       default=None)
    p_run.add_argument("--dtype", type=_names_list("--dtype"), default=None)
    p_run.add_argument("--device", default=None)
    measurement_args(p_run)
    p_run.add_argument("--results", type=_path("--results"), default=Path("results"),
                       help="where run directories are created (results/)")
    p_run.add_argument("--run-id", type=_run_id, default=None,
                       help="name of the run directory (one name: letters, digits, . _ -)")
    p_run.add_argument("--jobs", type=_numbers("--jobs", integer=True, minimum=1,
                                               maximum=JOBS_MAX, what="an integer"),
                       default=None,
                       help="points measured in parallel, each on its own --threads CPUs, their "
                            "timed sections taking turns (default: this machine's CPUs, or "
                            "the Ray cluster's, over --threads; 1 leaves the other cores idle "
                            "while a point is timed)")
    p_run.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="where points run: local (fresh processes here) or ray (tasks on a "
                            "Ray cluster; needs the ray extra)")
    p_run.add_argument("--address", default=None, metavar="ADDR",
                       help="with --executor ray: a running cluster (auto, or HOST:PORT); "
                            "default: start a local one")
    p_run.add_argument("--resume", type=_path("--resume"), default=None, metavar="RUN_DIR",
                       help="continue a run, skipping points already recorded")
    p_run.add_argument("--allow-code-change", action="store_true",
                       help="with --resume: measure the remaining points even though a "
                            "problem's code changed since the run began (the report keeps "
                            "the versions apart)")
    p_run.add_argument("--connect-timeout", type=_numbers(
                           "--connect-timeout", integer=False, minimum=0, exclusive_minimum=True,
                           maximum=TIMEOUT_MAX_S, what="seconds"), default=None,
                       help="with --executor ray --address: seconds to reach the cluster "
                            "before giving up (default 30)")
    p_run.add_argument("--report", action="store_true", help="write report.html afterwards")
    p_run.add_argument("--no-progress", action="store_true")

    p_gate = sub.add_parser("gate", help="run the gate sweep and compare with the baseline")
    p_gate.add_argument("--baseline", type=Path, default=None,
                        help="baseline file (default benchmarks/baseline.json)")
    p_gate.add_argument("--update-baseline", action="store_true",
                        help="rewrite the baseline from this run and print what changed")
    p_gate.add_argument("--run", type=Path, default=None, metavar="RUN_DIR",
                        help="compare an existing run instead of sweeping anew")
    p_gate.add_argument("--config", default="gate", help="sweep config (default: gate)")
    p_gate.add_argument("--time-dir", type=Path, default=None, metavar="DIR",
                        help="the machines' time baselines, one <fingerprint>.json each "
                             "(default: the project's benchmarks/time)")
    p_gate.add_argument("--results", type=_path("--results"), default=Path("results"))
    p_gate.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="where to write the findings (default RUN_DIR/gate.json)")
    p_gate.add_argument("--jobs", type=_numbers("--jobs", integer=True, minimum=1,
                                                maximum=JOBS_MAX, what="an integer"), default=2,
                        help="points measured at once (default 2: the gate times strategies "
                             "against unrolled within each process, so neighbours cancel out)")
    p_gate.add_argument("--no-progress", action="store_true")

    p_report = sub.add_parser("report", help="write RESULTS_DIR/report.html")
    p_report.add_argument("run_dir", type=_path("RESULTS_DIR"), metavar="RESULTS_DIR")
    p_report.add_argument("--out", type=_path("--out"), default=None)

    p_compare = sub.add_parser(
        "compare", help="RUN_B against RUN_A per cell: ratios, time significance, regressions "
                        "(exit 1 on a regression by the gate's rules)")
    p_compare.add_argument("run_a", type=Path, metavar="RUN_A", help="the reference run directory")
    p_compare.add_argument("run_b", type=Path, metavar="RUN_B", help="the run under review")
    p_compare.add_argument("--out", type=Path, default=None, metavar="FILE.html",
                           help="also write the table as a self-contained HTML page")
    return parser


# ---- commands -----------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from suite.frameworks import DEVICES

    if args.device not in DEVICES:
        raise UsageError("--device", f"unknown {args.device!r}", DEVICES)
    # the user's problem code runs below (its options, its support answers): what it prints
    # goes to stderr, so that stdout is only the listing (only JSON with --json)
    with stdout_to_stderr():
        rows = _list_rows(args)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["backend"]) for r in rows)
    for r in rows:
        mark = "yes" if r["supported"] else "no "
        tail = "" if r["supported"] else f"  — {r['reason']}"
        if r["needs_options"]:
            tail = f"  — not with the defaults: {r['needs_options']}"
        if r["corresponds_to"]:
            own = "; converged-only: runs its own solver, K is a budget"
            tail += f"  [peer of {r['corresponds_to']}{own if r['converged_only'] else ''}]"
        print(f"{r['problem']:10s} {r['backend']:{width}s} {r['framework']:6s} {mark}{tail}")
    return 0


def _list_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    import backends
    import problems
    from suite.frameworks import registry as framework_registry
    from suite.plugin.errors import UnsupportedError
    from suite.point import Point, support_reason, validate_point

    names = list(problems.registry())
    if args.problem:  # each resolved now: a bad spec is one line, exit 2
        names = [spec for spec in args.problem if problems.get(spec, "--problem")]
    rows = []
    for prob in names:
        for back in backends.registry():
            for fw in framework_registry():
                reason = support_reason(prob, back, fw, args.device)
                needs = None
                if reason is None:  # supported, but perhaps not with the default options
                    try:
                        validate_point(Point(prob, back, fw, n=8, K=10, device=args.device))
                    except UnsupportedError as exc:
                        needs = exc.detail
                strategy = backends.registry()[back]
                rows.append({"problem": prob, "backend": back, "framework": fw,
                             "supported": reason is None, "reason": reason,
                             "needs_options": needs,
                             # peer rows: the strategy of ours the report sets them beside
                             "corresponds_to": getattr(strategy, "corresponds_to", None),
                             "converged_only": bool(getattr(strategy, "converged_only", False))})
    return rows


def _settings(args: argparse.Namespace, base: Any = None):
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
def _cli_field_names():
    """A point's field (``n``, ``problem``) named as the option that set it (``--n``)."""
    try:
        yield
    except UsageError as exc:
        if exc.field in {"problem", "backend", "framework", "device", "dtype", "n", "K", "seed"}:
            raise type(exc)(f"--{exc.field}", exc.detail, exc.allowed) from None
        raise


def _cli_where(key: str) -> str:
    """A config key (``repeats``, ``options.tol``) named as the option that set it."""
    if key.startswith("options."):
        return f"--option {key.split('.', 1)[1]}"
    return CLI_SETTING_NAMES.get(key, key)


def cmd_point(args: argparse.Namespace) -> int:
    from suite.executors.local import run_isolated
    from suite.plugin.options import parse_assignments
    from suite.point import Point, validate_point

    point = Point(args.problem, args.backend, args.framework, n=args.n, K=args.K,
                  device=args.device, dtype=args.dtype, seed=args.seed,
                  options=parse_assignments(args.option))
    settings = _settings(args)
    with _cli_field_names(), stdout_to_stderr():  # the user's problem code answers here
        validate_point(point)  # bad input and unsupported combinations: exit 2 before spawning
    if args.dump is not None:  # a dump that cannot be written fails now, not after measuring
        writable_directory("--dump", args.dump)
        for name in DUMP_FILES:
            output_file("--dump", args.dump / name)
    record = run_isolated(point, settings, dump_dir=args.dump)
    payload = record.to_json()
    if args.json:  # strict JSON for jq and friends: a NaN or ±inf error prints as null
        print(json.dumps(_strict_json(payload), allow_nan=False))
    else:
        print(point.label())
        for key in RECORD_SUMMARY:
            value = payload.get(key)
            if value in (None, [], ""):
                continue
            print(f"  {key:16s} {_fmt(key, value)}")
        if args.dump and record.status == "ok":
            print(f"  dumped           {args.dump}/instance.npz, {args.dump}/grad.npy")
    return 0 if record.status == "ok" else 1


def stdout_to_stderr():
    """What the user's code prints in this process goes to stderr (see problems._vetting)."""
    from problems._vetting import stdout_to_stderr as redirect

    return redirect()


def _strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (RFC 8259 has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def _fmt(key: str, value: Any) -> str:
    if key.endswith("_bytes") and isinstance(value, int):
        from reports.units import format_bytes

        return f"{value} ({format_bytes(value)})"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "; ".join(map(str, value))
    return str(value)


def cmd_run(args: argparse.Namespace) -> int:
    from suite.config import build_config, load_config
    from suite.plugin.options import parse_assignments
    from suite.sweep import run_sweep

    if args.config and (args.problem or args.backend or args.n or args.K):
        raise UsageError("--config", "given together with --problem/--backend/--n/--K lists",
                         "either --config or the lists")
    if args.resume and not (args.config or args.problem):
        config = _config_of_run(args.resume)
    elif args.config:
        config = load_config(args.config)
    else:
        missing = [f for f in ("problem", "backend", "n", "K") if not getattr(args, f)]
        if missing:
            raise UsageError(f"--{missing[0]}", "required without --config",
                             ALLOWED.get(f"--{missing[0]}"))
        raw = {"problems": args.problem, "backends": args.backend,
               "frameworks": args.framework or ["torch", "jax"],
               "dtypes": args.dtype or ["float64"], "device": args.device or "cpu",
               "seeds": args.seed or [0], "repeats": args.repeats, "timeout_s": args.timeout,
               "memory_cap": args.memory_cap, "threads": args.threads,
               "grid": [{"n": args.n, "K": args.K}],
               "options": parse_assignments(args.option)}
        config = build_config(raw, name="cli", where=_cli_where)

    if args.address is not None and args.executor != "ray":
        raise UsageError("--address", "only applies to --executor ray",
                         "--executor ray --address ADDR")
    if args.connect_timeout is not None and args.address is None:
        raise UsageError("--connect-timeout", "only applies to --executor ray --address ADDR",
                         "--executor ray --address ADDR --connect-timeout SECONDS")
    if args.allow_code_change and args.resume is None:
        raise UsageError("--allow-code-change", "only applies to --resume",
                         "--resume RUN_DIR --allow-code-change")
    options = {}
    if args.executor == "ray":
        options["address"] = args.address
        if args.connect_timeout is not None:
            options["connect_timeout_s"] = args.connect_timeout
    with _terminate_as_interrupt():
        try:
            result = run_sweep(config, args.results, jobs=args.jobs, resume=args.resume,
                               run_id=args.run_id, progress=not args.no_progress,
                               executor=args.executor, executor_options=options,
                               allow_code_change=args.allow_code_change)
        except KeyboardInterrupt:  # before the sweep began (connecting to a cluster)
            print("interrupted: before any point was measured", file=sys.stderr)
            return 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(result.statuses.items()))
    print(f"{result.run_dir}/records.jsonl: {summary or 'no points'}")
    if result.interrupted:
        print(f"interrupted: finished records kept; continue with --resume {result.run_dir}")
        return 1
    if args.report:
        from reports.html import write_report

        print(f"report: {write_report(result.run_dir)}")
    return 0


def _config_of_run(run_dir: Path):
    """The config a run was started with (its meta.json), for ``run --resume RUN_DIR``."""
    from suite.config import config_from_json
    from suite.sweep import open_run_dir, read_meta

    run_dir = open_run_dir(run_dir)
    meta_path = run_dir / "meta.json"
    if not meta_path.exists():
        raise UsageError("--resume", f"{str(run_dir)!r} has no meta.json",
                         "a results/<run-id> directory, or give --config too")
    meta = read_meta(run_dir)
    if "config" not in meta:
        raise UsageError("--resume", f"{str(meta_path)!r} has no config",
                         "a meta.json written by ift-bench run, or give --config too")
    return config_from_json(meta["config"], where=str(meta_path))


def cmd_report(args: argparse.Namespace) -> int:
    from reports.html import write_report
    from suite.sweep import read_meta

    run_dir = _readable_run("RESULTS_DIR", args.run_dir)
    output_file("--out", args.out or run_dir / "report.html")
    if (run_dir / "meta.json").exists():
        read_meta(run_dir, "RESULTS_DIR")  # a damaged meta.json: one line, exit 2
    print(write_report(run_dir, args.out))
    return 0


def _readable_run(field: str, run_dir: Path, label: str = "") -> Path:
    """A run directory a reader (report, compare, gate --run) may use: its unreadable lines
    and a writer still at work are said on stderr; one point recorded twice is refused."""
    from suite import rundir
    from suite.records import read_records_checked

    run_dir = rundir.existing_run(field, run_dir)
    path = run_dir / "records.jsonl"
    prefix = f"ift-bench: warning: {label}" if label else "ift-bench: warning: "
    for note in rundir.reader_notes(run_dir):
        print(prefix + note, file=sys.stderr)
    checked = read_records_checked(path)
    for line in checked.problems(path):  # said, never skipped quietly
        print(prefix + line, file=sys.stderr)
    rundir.refuse_duplicates(field, path, checked.records)
    return run_dir


@contextlib.contextmanager
def _terminate_as_interrupt():
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


def cmd_gate(args: argparse.Namespace) -> int:
    from suite import gate, gate_sweep
    from suite.config import load_config
    from suite.env import git_state
    from suite.fingerprint import machine_fingerprint
    from suite.records import load_frame, write_json
    from suite.sweep import run_sweep

    baseline_path = args.baseline or gate.DEFAULT_BASELINE
    time_dir = args.time_dir or gate.DEFAULT_TIME_DIR
    if args.json is not None:
        output_file("--json", args.json)  # before sweeping: nothing measured is lost
    if args.update_baseline:
        output_file("--baseline", baseline_path)
    config = load_config(args.config)
    baseline = None if args.update_baseline else gate.load_baseline(baseline_path)
    time_reference, not_judged = None, None
    if args.run is not None:
        run_dir = _readable_run("--run", args.run)
        if baseline is not None:
            time_reference, not_judged, fingerprint = gate_sweep.judge_existing(
                run_dir, baseline, time_dir)
        else:
            fingerprint = gate_sweep.run_fingerprint(run_dir)
    else:
        fingerprint = machine_fingerprint()
        with _terminate_as_interrupt():
            if args.update_baseline:
                result = run_sweep(config, args.results, jobs=args.jobs,
                                   progress=not args.no_progress)
                run_dir, interrupted = result.run_dir, result.interrupted
            else:
                sweep = gate_sweep.measure(config, args.results, baseline, time_dir=time_dir,
                                           jobs=args.jobs, progress=not args.no_progress,
                                           fingerprint=fingerprint)
                run_dir, interrupted = sweep.run_dir, sweep.interrupted
                time_reference, not_judged = sweep.time, sweep.time_not_judged
        if interrupted:
            print("gate: interrupted", file=sys.stderr)
            return 1
    frame = load_frame(run_dir)
    if args.update_baseline:
        git = git_state()
        old = gate.previous_baseline(baseline_path)
        new = gate.build_baseline(frame, config.name, measured_on=fingerprint, git=git)
        baseline_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(baseline_path, new)
        print(gate.baseline_diff(old, new))
        if fingerprint is None:
            print("no time baseline written: the run records no machine fingerprint")
            return 0
        time_path = gate.time_baseline_path(fingerprint, time_dir)
        time_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(time_path, gate.build_time_baseline(frame, config.name, fingerprint, git))
        print(f"time baseline of this machine: {time_path}")
        if git.get("dirty"):
            print(f"ift-bench: warning: the checkout has uncommitted changes; the paired path "
                  f"will measure commit {str(git.get('commit'))[:12]} without them",
                  file=sys.stderr)
        return 0
    outcome = gate.compare(frame, baseline, time=time_reference, time_not_judged=not_judged)
    outcome.fingerprint = fingerprint
    findings = args.json or run_dir / "gate.json"
    try:
        write_json(findings, outcome.to_json())
    except OSError as exc:  # a read-only run: the verdict still counts, and is printed
        print(gate.render(outcome))
        print(f"ift-bench: warning: findings not written: cannot write {str(findings)!r}: "
              f"{exc.strerror or exc} (give --json FILE elsewhere)", file=sys.stderr)
        return 0 if outcome.passed else 1
    print(gate.render(outcome))
    print(f"findings: {findings}")
    return 0 if outcome.passed else 1


def cmd_compare(args: argparse.Namespace) -> int:
    """Exit 0: no cell regressed; 1: some did (the table says which); 2: bad input."""
    from suite import compare
    from suite.records import load_frame, read_records

    for flag, run_dir in (("RUN_A", args.run_a), ("RUN_B", args.run_b)):
        _readable_run(flag, run_dir, f"{flag}: ")
        if not read_records(run_dir / "records.jsonl"):
            raise UsageError(flag, f"{str(run_dir / 'records.jsonl')!r} holds no readable "
                             "record: nothing to compare", "a run with measured points")
    if args.out is not None:
        output_file("--out", args.out)
    result = compare.compare_runs(load_frame(args.run_a), load_frame(args.run_b))
    if not result.cells:
        raise UsageError("RUN_B", f"shares no cell with RUN_A ({str(args.run_a)!r}): nothing "
                         "was compared", "two runs of the same cells (problem, strategy, "
                         "framework, dtype, n, K, options)")
    print(compare.render_text(result))
    if args.out is not None:
        args.out.write_text(compare.render_html(result, str(args.run_a), str(args.run_b)),
                            encoding="utf-8")
        print(f"html: {args.out}")
    return 0 if result.passed else 1


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0: no rule failed (warnings allowed); 1: some rule failed; 2: bad input."""
    from suite.check import RULE_TIMEOUT_S, run_check
    from suite.plugin.options import parse_assignments

    report = run_check(args.problem, n=args.n, K=args.K, max_K=args.max_K,
                       framework=args.framework, seed=args.seed,
                       options=parse_assignments(args.option),
                       timeout_s=args.timeout or RULE_TIMEOUT_S)
    for line in report.lines():
        print(line, flush=True)
    return 1 if report.failed else 0


COMMANDS = {"list": cmd_list, "check": cmd_check, "point": cmd_point, "run": cmd_run,
            "report": cmd_report, "gate": cmd_gate, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    try:
        parser = _build_parser()
        argv = sys.argv[1:] if argv is None else list(argv)
        args = parser.parse_args(_attach_dash_values(argv, parser))
        status = COMMANDS[args.command](args)
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
