"""``ift-bench gate``: the gate sweep judged against the baseline (exit 1 on a regression)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from suite.cli.arguments import numbers, path_arg, readable_run
from suite.cli.process import terminate_as_interrupt
from suite.inputs import JOBS_MAX, output_file
from suite.plugin.errors import UsageError

#: the sweeps ``--update-baseline`` measures by default: enough that a cell whose ratio sits in
#: one of two modes per process shows both (a mode seen in 3 of 8 processes is missed by 5
#: with probability (5/8)⁵ ≈ 0.1)
DEFAULT_PROCESSES = 5
PROCESSES_MAX = 50


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("gate", help="run the gate sweep and compare with the baseline")
    p.add_argument("--baseline", type=Path, default=None,
                   help="baseline file (default benchmarks/baseline.json)")
    p.add_argument("--update-baseline", action="store_true",
                   help="rewrite the baseline from this run and print what changed")
    p.add_argument("--processes", type=numbers("--processes", integer=True, minimum=1,
                                                maximum=PROCESSES_MAX, what="an integer"),
                   default=None,
                   help="with --update-baseline: measure the sweep this many times, each "
                        "point in a fresh process every time, and record each cell's time "
                        f"ratio range over them (default {DEFAULT_PROCESSES})")
    p.add_argument("--run", type=Path, default=None, metavar="RUN_DIR",
                   help="compare an existing run instead of sweeping anew")
    p.add_argument("--config", default="gate", help="sweep config (default: gate)")
    p.add_argument("--time-dir", type=Path, default=None, metavar="DIR",
                   help="the machines' time baselines, one <fingerprint>.json each "
                        "(default: the project's benchmarks/time)")
    p.add_argument("--results", type=path_arg("--results"), default=Path("results"))
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="where to write the findings (default RUN_DIR/gate.json)")
    p.add_argument("--jobs", type=numbers("--jobs", integer=True, minimum=1,
                                           maximum=JOBS_MAX, what="an integer"), default=2,
                   help="points measured at once (default 2: the gate times strategies "
                        "against unrolled within each process, so neighbours cancel out)")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    from suite import gate, gate_sweep
    from suite.config import load_config
    from suite.env import git_state
    from suite.fingerprint import machine_fingerprint
    from suite.records import write_json
    from suite.rundir import RunDir
    from suite.sweep import run_sweep

    baseline_path = args.baseline or gate.DEFAULT_BASELINE
    time_dir = args.time_dir or gate.DEFAULT_TIME_DIR
    if args.json is not None:
        output_file("--json", args.json)  # before sweeping: nothing measured is lost
    if args.update_baseline:
        output_file("--baseline", baseline_path)
    elif args.processes is not None:
        raise UsageError("--processes", f"{args.processes} without --update-baseline",
                         "a number of sweeps, only with --update-baseline")
    if args.update_baseline and args.run is not None and (args.processes or 1) > 1:
        raise UsageError("--processes", f"{args.processes} with --run (one run is one process "
                         "per point)", "1, or no --run")
    processes = (args.processes or DEFAULT_PROCESSES) if args.run is None else 1
    config = load_config(args.config)
    baseline = None if args.update_baseline else gate.load_baseline(baseline_path)
    time_reference, not_judged = None, None
    if args.run is not None:
        run_dir = readable_run("--run", args.run)
        if baseline is not None:
            time_reference, not_judged, fingerprint = gate_sweep.judge_existing(
                run_dir, baseline, time_dir)
        else:
            fingerprint = gate_sweep.run_fingerprint(run_dir)
    else:
        fingerprint = machine_fingerprint()
        with terminate_as_interrupt():
            if args.update_baseline:
                run_dirs, interrupted = [], False
                for _ in range(processes):
                    result = run_sweep(config, args.results, jobs=args.jobs,
                                       progress=not args.no_progress)
                    run_dirs.append(result.run_dir)
                    if result.interrupted:
                        interrupted = True
                        break
                run_dir = run_dirs[0]
            else:
                sweep = gate_sweep.measure(config, args.results, baseline, time_dir=time_dir,
                                           jobs=args.jobs, progress=not args.no_progress,
                                           fingerprint=fingerprint)
                run_dir, interrupted = sweep.run_dir, sweep.interrupted
                time_reference, not_judged = sweep.time, sweep.time_not_judged
        if interrupted:
            print("gate: interrupted", file=sys.stderr)
            return 1
    frame = RunDir(run_dir).frame()
    if args.update_baseline:
        git = git_state()
        old = gate.previous_baseline(baseline_path)
        frames = [frame] + ([RunDir(d).frame() for d in run_dirs[1:]] if args.run is None
                            else [])
        new = gate.build_baseline(frame, config.name, measured_on=fingerprint, git=git,
                                  ranges=gate.process_ranges(frames))
        baseline_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(baseline_path, new)
        print(gate.baseline_diff(old, new))
        print(gate.describe_ranges(new, len(frames)))
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
    if args.run is None:
        with terminate_as_interrupt():
            gate_sweep.confirm_time(config, args.results, run_dir, outcome, baseline,
                                    jobs=args.jobs, progress=not args.no_progress)
    findings = args.json or RunDir(run_dir).gate_file
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
