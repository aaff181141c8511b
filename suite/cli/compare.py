"""``ift-bench compare RUN_A RUN_B``: RUN_B against RUN_A per cell."""

from __future__ import annotations

import argparse
from pathlib import Path

from suite.cli.arguments import readable_run
from suite.inputs import output_file
from suite.plugin.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare", help="RUN_B against RUN_A per cell: ratios, time significance, regressions "
                "(exit 1 on a regression by the gate's rules)")
    p.add_argument("run_a", type=Path, metavar="RUN_A", help="the reference run directory")
    p.add_argument("run_b", type=Path, metavar="RUN_B", help="the run under review")
    p.add_argument("--out", type=Path, default=None, metavar="FILE.html",
                   help="also write the table as a self-contained HTML page")
    return p


def run(args: argparse.Namespace) -> int:
    """Exit 0: no cell regressed; 1: some did (the table says which); 2: bad input."""
    from suite import compare
    from suite.records import read_records
    from suite.rundir import RunDir

    for flag, run_dir in (("RUN_A", args.run_a), ("RUN_B", args.run_b)):
        readable_run(flag, run_dir, f"{flag}: ")
        if not read_records(RunDir(run_dir).records_file):
            raise UsageError(flag, f"{str(RunDir(run_dir).records_file)!r} holds no readable "
                             "record: nothing to compare", "a run with measured points")
    if args.out is not None:
        output_file("--out", args.out)
    result = compare.compare_runs(RunDir(args.run_a).frame(), RunDir(args.run_b).frame())
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
