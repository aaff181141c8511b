"""``ift-bench point``: measure one point in an isolated subprocess and print its record."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from suite.cli.arguments import (
    cli_field_names,
    measurement_args,
    one_instance_args,
    path_arg,
    settings_from,
)
from suite.cli.process import stdout_to_stderr
from suite.inputs import output_file, writable_directory


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("point", help="measure one point in an isolated subprocess")
    p.add_argument("--problem", required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--framework", required=True)
    one_instance_args(p)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--device", default="cpu")
    measurement_args(p)
    p.add_argument("--dump", type=path_arg("--dump"), default=None, metavar="DIR",
                   help="write DIR/instance.npz and DIR/grad.npy")
    p.add_argument("--json", action="store_true", help="print the record as one JSON object")
    return p


#: what ``point --dump DIR`` writes into DIR
DUMP_FILES = ("instance.npz", "grad.npy")


RECORD_SUMMARY = ("status", "time_s", "time_min_s", "forward_time_s", "compile_s", "peak_bytes",
                  "trace_bytes", "rss_peak_bytes", "grad_rel_error", "reference", "grad_norm",
                  "inner_residual", "step_evals", "vjp_evals", "jvp_evals", "hvp_evals",
                  "solver_iters", "solver_converged", "threads", "warnings", "error")


def run(args: argparse.Namespace) -> int:
    from suite.executors.local import run_isolated
    from suite.plugin.options import parse_assignments
    from suite.point import Point, validate_point

    point = Point(args.problem, args.backend, args.framework, n=args.n, K=args.K,
                  device=args.device, dtype=args.dtype, seed=args.seed,
                  options=parse_assignments(args.option))
    settings = settings_from(args)
    with cli_field_names(), stdout_to_stderr():  # the user's problem code answers here
        validate_point(point)  # bad input and unsupported combinations: exit 2 before spawning
    if args.dump is not None:  # a dump that cannot be written fails now, not after measuring
        writable_directory("--dump", args.dump)
        for name in DUMP_FILES:
            output_file("--dump", args.dump / name)
    record = run_isolated(point, settings, dump_dir=args.dump)
    payload = record.to_json()
    if args.json:  # strict JSON for jq and friends: a NaN or ±inf error prints as null
        print(json.dumps(strict_json(payload), allow_nan=False))
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


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (RFC 8259 has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
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
