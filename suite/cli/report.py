"""``ift-bench report RESULTS_DIR``: write the run's report.html."""

from __future__ import annotations

import argparse

from suite.cli.arguments import path_arg, readable_run
from suite.inputs import output_file


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="write RESULTS_DIR/report.html")
    p.add_argument("run_dir", type=path_arg("RESULTS_DIR"), metavar="RESULTS_DIR")
    p.add_argument("--out", type=path_arg("--out"), default=None)
    return p


def run(args: argparse.Namespace) -> int:
    from reports.html import write_report
    from suite.rundir import RunDir

    run_dir = readable_run("RESULTS_DIR", args.run_dir)
    run = RunDir(run_dir)
    output_file("--out", args.out or run.report_file)
    if run.has_meta():
        run.read_meta("RESULTS_DIR")  # a damaged meta.json: one line, exit 2
    print(write_report(run_dir, args.out))
    return 0
