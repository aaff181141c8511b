"""``python -m suite`` / ``ift-bench``: list, point, run, report.

Exit status: 0 success; 1 a measured point did not finish ``ok`` (``point``) or a sweep was
interrupted (``run``); 2 bad input, reported on one line that names the field.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from suite.errors import UsageError

RECORD_SUMMARY = ("status", "time_s", "time_min_s", "forward_time_s", "compile_s", "peak_bytes",
                  "trace_bytes", "rss_peak_bytes", "grad_rel_error", "reference", "grad_norm",
                  "inner_residual", "step_evals", "vjp_evals", "jvp_evals", "hvp_evals",
                  "solver_iters", "solver_converged", "threads", "warnings", "error")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(self.prog, message)


def _csv(kind: type, field_name: str):
    def parse(text: str) -> list[Any]:
        out = []
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                out.append(kind(item))
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"cannot read {item!r} as {kind.__name__} "
                    f"(allowed: comma-separated {kind.__name__} values)") from None
        if not out:
            raise argparse.ArgumentTypeError("empty list")
        return out

    return parse


def _one_int(field_name: str):
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"cannot read {text!r} as an integer") from None

    return parse


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ift-bench", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p_list = sub.add_parser("list",
                            help="every (problem, backend, framework), supported or why not")
    p_list.add_argument("--json", action="store_true", help="a JSON list of objects")
    p_list.add_argument("--device", default="cpu")

    def measurement_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--repeats", type=_one_int("--repeats"), default=5,
                       help="timed repeats per point (median and min reported; default 5)")
        p.add_argument("--timeout", type=float, default=300.0,
                       help="seconds before a point is killed and recorded as timeout (300)")
        p.add_argument("--memory-cap", default=None,
                       help="address-space cap per point, e.g. 8GiB (default: none)")
        p.add_argument("--threads", type=_one_int("--threads"), default=1,
                       help="threads (and CPUs) per point, fixed for the whole run (1)")
        p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                       help="problem or backend option; repeatable")

    p_point = sub.add_parser("point", help="measure one point in an isolated subprocess")
    p_point.add_argument("--problem", required=True)
    p_point.add_argument("--backend", required=True)
    p_point.add_argument("--framework", required=True)
    p_point.add_argument("--n", type=_one_int("--n"), required=True)
    p_point.add_argument("--K", type=_one_int("--K"), required=True)
    p_point.add_argument("--seed", type=_one_int("--seed"), default=0)
    p_point.add_argument("--dtype", default="float64")
    p_point.add_argument("--device", default="cpu")
    measurement_args(p_point)
    p_point.add_argument("--dump", type=Path, default=None, metavar="DIR",
                         help="write DIR/instance.npz and DIR/grad.npy")
    p_point.add_argument("--json", action="store_true", help="print the record as one JSON object")

    p_run = sub.add_parser("run", help="a sweep (config file or comma lists) with a progress bar")
    p_run.add_argument("--config", default=None,
                       help="a config name in suite/configs (default, quick, …) or a TOML path")
    p_run.add_argument("--problem", type=_csv(str, "--problem"))
    p_run.add_argument("--backend", type=_csv(str, "--backend"))
    p_run.add_argument("--framework", type=_csv(str, "--framework"), default=None)
    p_run.add_argument("--n", type=_csv(int, "--n"))
    p_run.add_argument("--K", type=_csv(int, "--K"))
    p_run.add_argument("--seed", type=_csv(int, "--seed"), default=None)
    p_run.add_argument("--dtype", type=_csv(str, "--dtype"), default=None)
    p_run.add_argument("--device", default=None)
    measurement_args(p_run)
    p_run.add_argument("--results", type=Path, default=Path("results"),
                       help="where run directories are created (results/)")
    p_run.add_argument("--run-id", default=None, help="name of the run directory")
    p_run.add_argument("--jobs", type=_one_int("--jobs"), default=1,
                       help="points measured in parallel (default 1: parallel points disturb "
                            "each other's timings)")
    p_run.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                       help="continue a run, skipping points already recorded")
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
    p_gate.add_argument("--results", type=Path, default=Path("results"))
    p_gate.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="where to write the findings (default RUN_DIR/gate.json)")
    p_gate.add_argument("--jobs", type=_one_int("--jobs"), default=2,
                        help="points measured at once (default 2: the gate times strategies "
                             "against unrolled within each process, so neighbours cancel out)")
    p_gate.add_argument("--no-progress", action="store_true")

    p_report = sub.add_parser("report", help="write RESULTS_DIR/report.html")
    p_report.add_argument("run_dir", type=Path, metavar="RESULTS_DIR")
    p_report.add_argument("--out", type=Path, default=None)
    return parser


# ---- commands -----------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    import backends
    import problems
    from suite.errors import UnsupportedError
    from suite.frameworks import registry as framework_registry
    from suite.point import Point, support_reason, validate_point

    rows = []
    for prob in problems.registry():
        for back in backends.registry():
            for fw in framework_registry():
                reason = support_reason(prob, back, fw, args.device)
                needs = None
                if reason is None:  # supported, but perhaps not with the default options
                    try:
                        validate_point(Point(prob, back, fw, n=8, K=10, device=args.device))
                    except UnsupportedError as exc:
                        needs = exc.detail
                rows.append({"problem": prob, "backend": back, "framework": fw,
                             "supported": reason is None, "reason": reason,
                             "needs_options": needs})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["backend"]) for r in rows)
    for r in rows:
        mark = "yes" if r["supported"] else "no "
        tail = "" if r["supported"] else f"  — {r['reason']}"
        if r["needs_options"]:
            tail = f"  — not with the defaults: {r['needs_options']}"
        print(f"{r['problem']:10s} {r['backend']:{width}s} {r['framework']:6s} {mark}{tail}")
    return 0


def _settings(args: argparse.Namespace, base: Any = None):
    from suite.config import parse_bytes
    from suite.point import Settings

    return Settings(repeats=args.repeats, timeout_s=args.timeout,
                    memory_cap_bytes=parse_bytes(args.memory_cap, "--memory-cap"),
                    threads=args.threads).validate()


def cmd_point(args: argparse.Namespace) -> int:
    from suite.options import parse_assignments
    from suite.point import Point, validate_point
    from suite.runner import run_isolated

    point = Point(args.problem, args.backend, args.framework, n=args.n, K=args.K,
                  device=args.device, dtype=args.dtype, seed=args.seed,
                  options=parse_assignments(args.option))
    settings = _settings(args)
    validate_point(point)  # bad input and unsupported combinations: exit 2 before spawning
    record = run_isolated(point, settings, dump_dir=args.dump)
    payload = record.to_json()
    if args.json:
        print(json.dumps(payload))
    else:
        print(point.label())
        for key in RECORD_SUMMARY:
            value = payload.get(key)
            if value in (None, [], ""):
                continue
            print(f"  {key:16s} {_fmt(key, value)}")
        if args.dump:
            print(f"  dumped           {args.dump}/instance.npz, {args.dump}/grad.npy")
    return 0 if record.status == "ok" else 1


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
    from suite.options import parse_assignments
    from suite.sweep import run_sweep

    if args.config and (args.problem or args.backend or args.n or args.K):
        raise UsageError("--config", "give either --config or --problem/--backend/--n/--K lists")
    if args.resume and not (args.config or args.problem):
        config = _config_of_run(args.resume)
    elif args.config:
        config = load_config(args.config)
    else:
        missing = [f for f in ("problem", "backend", "n", "K") if not getattr(args, f)]
        if missing:
            raise UsageError(f"--{missing[0]}", "required without --config")
        raw = {"name": "cli", "problems": args.problem, "backends": args.backend,
               "frameworks": args.framework or ["torch", "jax"],
               "dtypes": args.dtype or ["float64"], "device": args.device or "cpu",
               "seeds": args.seed or [0], "repeats": args.repeats, "timeout_s": args.timeout,
               "memory_cap": args.memory_cap, "threads": args.threads,
               "grid": [{"n": args.n, "K": args.K}],
               "options": parse_assignments(args.option)}
        config = build_config(raw, name="cli")

    _terminate_as_interrupt()
    result = run_sweep(config, args.results, jobs=args.jobs, resume=args.resume,
                       run_id=args.run_id, progress=not args.no_progress)
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

    meta = Path(run_dir) / "meta.json"
    if not meta.exists():
        raise UsageError("--resume", f"{str(run_dir)!r} has no meta.json",
                         "a results/<run-id> directory")
    return config_from_json(json.loads(meta.read_text())["config"])


def cmd_report(args: argparse.Namespace) -> int:
    from reports.html import write_report

    if not (args.run_dir / "records.jsonl").exists():
        raise UsageError("RESULTS_DIR", f"{str(args.run_dir)!r} has no records.jsonl",
                         "a results/<run-id> directory")
    print(write_report(args.run_dir, args.out))
    return 0


def _terminate_as_interrupt() -> None:
    """SIGTERM and SIGINT stop a sweep the way Ctrl-C does: children killed, finished records
    kept. SIGINT is installed explicitly because a shell starts background jobs with it
    ignored, and Python then never raises KeyboardInterrupt."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_gate(args: argparse.Namespace) -> int:
    from suite import gate
    from suite.config import load_config
    from suite.records import load_frame, write_json
    from suite.sweep import run_sweep

    baseline_path = args.baseline or gate.DEFAULT_BASELINE
    config = load_config(args.config)
    if args.run is not None:
        if not (args.run / "records.jsonl").exists():
            raise UsageError("--run", f"{str(args.run)!r} has no records.jsonl",
                             "a results/<run-id> directory")
        run_dir = args.run
    else:
        if not args.update_baseline:
            gate.load_baseline(baseline_path)  # fail early (exit 2) on a missing or bad file
        _terminate_as_interrupt()
        result = run_sweep(config, args.results, jobs=args.jobs, progress=not args.no_progress)
        if result.interrupted:
            print("gate: interrupted", file=sys.stderr)
            return 1
        run_dir = result.run_dir
    frame = load_frame(run_dir)
    if args.update_baseline:
        old = json.loads(baseline_path.read_text()) if baseline_path.exists() else None
        new = gate.build_baseline(frame, config.name)
        baseline_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(baseline_path, new)
        print(gate.baseline_diff(old, new))
        return 0
    outcome = gate.compare(frame, gate.load_baseline(baseline_path))
    write_json(args.json or run_dir / "gate.json", outcome.to_json())
    print(gate.render(outcome))
    print(f"findings: {args.json or run_dir / 'gate.json'}")
    return 0 if outcome.passed else 1


COMMANDS = {"list": cmd_list, "point": cmd_point, "run": cmd_run, "report": cmd_report,
            "gate": cmd_gate}


def main(argv: list[str] | None = None) -> int:
    try:
        args = _build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"ift-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ift-bench: interrupted", file=sys.stderr)
        return 130
