"""``ift-bench pair``: two strategies timed against each other on one instance, in one
isolated process, ABBA block by block; the median ratios of the whole gradient and of the
backward alone with their 95 % intervals, the gradients' agreement and errors."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from suite.cli.arguments import cli_field_names, numbers, one_instance_args
from suite.cli.process import stdout_to_stderr

#: the most ABBA blocks one pairing may ask for
BLOCKS_MAX = 1000
#: the most processes one pairing may ask for
PROCESSES_MAX = 100


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from suite.pair import DEFAULT_BLOCKS

    p = sub.add_parser("pair", help="time strategy A against strategy B on one instance "
                                    "(paired ratio with its 95%% interval)")
    p.add_argument("a", metavar="A", help="a strategy (ours or a peer row)")
    p.add_argument("b", metavar="B", help="the strategy A is timed against")
    p.add_argument("--problem", required=True)
    p.add_argument("--framework", required=True)
    one_instance_args(p)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--device", default="cpu")
    p.add_argument("--blocks", type=numbers("--blocks", integer=True, minimum=6,
                                             maximum=BLOCKS_MAX, what="an integer"),
                   default=DEFAULT_BLOCKS,
                   help=f"ABBA blocks, four gradient calls each (default {DEFAULT_BLOCKS}; at "
                        "least 6, the fewest whose median has a 95%% interval)")
    p.add_argument("--processes", type=numbers("--processes", integer=True, minimum=1,
                                                maximum=PROCESSES_MAX, what="an integer"),
                   default=1,
                   help="run the pairing in this many fresh processes, one after the other, "
                        "and give each ratio's interval over their medians (1; 6 reach a 95%% "
                        "interval): a process's compiled code has a speed of its own")
    p.add_argument("--threads", type=numbers("--threads", integer=True, minimum=1,
                                              maximum=10**6, what="an integer"), default=1,
                   help="threads (and CPUs) of the process (1)")
    p.add_argument("--timeout", type=numbers("--timeout", integer=False, minimum=0,
                                              exclusive_minimum=True, maximum=7 * 86400,
                                              what="seconds"), default=600.0,
                   help="seconds before the pairing is stopped (600)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="problem option, or an option of A or B (each side takes the ones "
                        "its strategy declares); repeatable")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def run(args: argparse.Namespace) -> int:
    from suite.executors.local import child_env
    from suite.pair import combine, split_options
    from suite.plugin.errors import UsageError
    from suite.plugin.options import parse_assignments
    from suite.point import Point, validate_point

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cpus and args.threads > len(cpus):
        raise UsageError("--threads", f"{args.threads} > the {len(cpus)} CPUs available",
                         f"an integer from 1 to {len(cpus)}")
    point = Point(args.problem, args.a, args.framework, n=args.n, K=args.K,
                  device=args.device, dtype=args.dtype, seed=args.seed,
                  options=parse_assignments(args.option))
    with cli_field_names(), stdout_to_stderr():  # the user's problem code answers here
        for side in split_options(point, args.b):
            validate_point(side)  # bad input and unsupported pairs: exit 2, nothing run
    deadline = time.monotonic() + args.timeout
    pairings = []
    with tempfile.TemporaryDirectory(prefix="ift-bench-pair-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"point": point.to_json(), "other": args.b,
                                    "blocks": args.blocks, "threads": args.threads,
                                    "cpus": cpus[:args.threads]}), encoding="utf-8")
        for process in range(args.processes):  # one after the other: never two timing at once
            out = Path(tmp) / f"out-{process}.json"
            try:
                done = subprocess.run([sys.executable, "-m", "suite.pair", str(spec), str(out)],
                                      env=child_env(args.threads), capture_output=True,
                                      text=True, timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"ift-bench: pair: stopped after --timeout {args.timeout:g} s",
                      file=sys.stderr)
                return 1
            if not out.is_file():
                tail = (done.stderr or "").strip().splitlines()[-1:] or ["no output"]
                print(f"ift-bench: pair: the pairing process exited with status "
                      f"{done.returncode}: {tail[0]}", file=sys.stderr)
                return 1
            result = json.loads(out.read_text(encoding="utf-8"))
            if "error" in result:
                print(f"ift-bench: pair: {result['error']}", file=sys.stderr)
                return 1
            pairings.append(result["ok"])
    pairing = pairings[0] if len(pairings) == 1 else combine(pairings)
    if args.json:
        print(json.dumps(pairing, allow_nan=False))
    else:
        print(render(pairing))
    return 0


def render(p: dict[str, Any]) -> str:
    """The pairing as a person reads it: what was paired, the two ratios with their
    intervals and verdicts, the gradients."""
    point, a, b = p["point"], p["point"]["backend"], p["other"]
    opts = ", ".join(f"{k}={v}" for k, v in sorted(point["options"].items()))
    lines = [f"pair: {point['problem']} n={point['n']} K={point['K']} {point['framework']} "
             f"{point['dtype']} seed {point['seed']}" + (f" ({opts})" if opts else ""),
             f"  A = {a}, B = {b}; {p['blocks']} ABBA blocks ({4 * p['blocks']} gradient "
             f"calls)" + (f" in each of {p['processes']} fresh processes"
                          if p["processes"] > 1 else "")
             + f"; median s per call: A {p['gradient_s'][0]:.4g}, B "
             f"{p['gradient_s'][1]:.4g}, shared forward {p['forward_s']:.4g}"]
    unit = "process medians" if p["processes"] > 1 else "blocks"
    for name, key in (("whole gradient", "gradient"), ("backward alone", "backward")):
        iv = p[key]
        if iv is None:
            lines.append(f"  {name:15s} A/B  –  ({p['backward_note']})")
            continue
        lines.append(f"  {name:15s} A/B  median {iv['median']:.3f}  "
                     f"{iv['coverage']:.1%} interval [{iv['low']:.3f}, {iv['high']:.3f}]  "
                     f"({iv['samples']} {unit}): {p['verdict'][key]}")
    if p["backward_method"] == "timed alone":
        lines.append(f"  backward timed alone, from the forward's final state (its own "
                     f"{p['blocks']} ABBA blocks, {p['backward_calls']} backward calls per timed "
                     f"call); median s per backward: A {p['backward_s'][0]:.4g}, B "
                     f"{p['backward_s'][1]:.4g}; same gradient as the whole call to "
                     f"{p['backward_agreement']:.1g}")
    elif p["backward_method"] == "gradient minus forward":
        lines.append("  backward as each gradient call minus the forward call before it "
                     "(a side has a tape through the steps)")
    if p["backward"] is not None and p["backward_note"]:
        lines.append(f"  note: {p['backward_note']}")

    def err(value: float | None) -> str:
        return "unavailable" if value is None else f"{value:.3g}"

    lines.append(f"  gradients: ‖g_A − g_B‖/‖g_B‖ = {p['agreement']:.3g}; error against the "
                 f"converged reference: A {err(p['error_a'])}, B {err(p['error_b'])}")
    return "\n".join(lines)
