"""``ift-bench run``: a sweep from a config or comma lists, on this machine or on Ray."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from suite.cli.arguments import (
    ALLOWED,
    cli_where,
    measurement_args,
    names_list,
    numbers,
    path_arg,
    run_id_arg,
)
from suite.cli.process import terminate_as_interrupt
from suite.inputs import JOBS_MAX, K_MAX, N_MAX, SEED_MAX, TIMEOUT_MAX_S
from suite.plugin.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="a sweep (config file or comma lists) with a progress bar")
    p.add_argument("--config", default=None,
                   help="a config name in suite/configs (default, quick, …) or a TOML path")
    p.add_argument("--problem", type=names_list("--problem"))
    p.add_argument("--backend", type=names_list("--backend"))
    p.add_argument("--framework", type=names_list("--framework"), default=None)
    p.add_argument("--n", type=numbers("--n", integer=True, minimum=1, maximum=N_MAX,
                                        what="an integer", many=True))
    p.add_argument("--K", type=numbers("--K", integer=True, minimum=1, maximum=K_MAX,
                                        what="an integer", many=True))
    p.add_argument("--seed", type=numbers("--seed", integer=True, minimum=0,
                                           maximum=SEED_MAX, what="an integer", many=True),
                   default=None)
    p.add_argument("--dtype", type=names_list("--dtype"), default=None)
    p.add_argument("--device", default=None)
    measurement_args(p)
    p.add_argument("--results", type=path_arg("--results"), default=Path("results"),
                   help="where run directories are created (results/)")
    p.add_argument("--run-id", type=run_id_arg, default=None,
                   help="name of the run directory (one name: letters, digits, . _ -)")
    p.add_argument("--jobs", type=numbers("--jobs", integer=True, minimum=1,
                                           maximum=JOBS_MAX, what="an integer"),
                   default=None,
                   help="points measured in parallel, each on its own --threads CPUs, their "
                        "timed sections taking turns (default: this machine's CPUs, or "
                        "the Ray cluster's, over --threads; 1 leaves the other cores idle "
                        "while a point is timed)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where points run: local (fresh processes here) or ray (tasks on a "
                        "Ray cluster; needs the ray extra)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="with --executor ray: a running cluster (auto, or HOST:PORT); "
                        "default: start a local one")
    p.add_argument("--resume", type=path_arg("--resume"), default=None, metavar="RUN_DIR",
                   help="continue a run, skipping points already recorded")
    p.add_argument("--allow-code-change", action="store_true",
                   help="with --resume: measure the remaining points even though a "
                        "problem's code changed since the run began (the report keeps "
                        "the versions apart)")
    p.add_argument("--connect-timeout", type=numbers(
                       "--connect-timeout", integer=False, minimum=0, exclusive_minimum=True,
                       maximum=TIMEOUT_MAX_S, what="seconds"), default=None,
                   help="with --executor ray --address: seconds to reach the cluster "
                        "before giving up (default 30)")
    p.add_argument("--report", action="store_true", help="write report.html afterwards")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    from suite.config import build_config, load_config
    from suite.frameworks import registry as framework_registry
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
               "frameworks": args.framework or list(framework_registry()),
               "dtypes": args.dtype or ["float64"], "device": args.device or "cpu",
               "seeds": args.seed or [0], "repeats": args.repeats, "timeout_s": args.timeout,
               "memory_cap": args.memory_cap, "threads": args.threads,
               "grid": [{"n": args.n, "K": args.K}],
               "options": parse_assignments(args.option)}
        config = build_config(raw, name="cli", where=cli_where)

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
    with terminate_as_interrupt():
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
    from suite.rundir import RunDir

    run = RunDir.for_resume(run_dir)
    meta_path = run.meta_file
    if not run.has_meta():
        raise UsageError("--resume", f"{str(run.path)!r} has no {RunDir.META}",
                         "a results/<run-id> directory, or give --config too")
    meta = run.read_meta()
    if "config" not in meta:
        raise UsageError("--resume", f"{str(meta_path)!r} has no config",
                         f"a {RunDir.META} written by ift-bench run, or give --config too")
    return config_from_json(meta["config"], where=str(meta_path))
