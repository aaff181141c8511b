"""``ift-bench report RESULTS_DIR [--predicted-from RUN_DIR]``: write the run's report.html."""

from __future__ import annotations

import argparse

from suite.cli.arguments import path_arg, readable_run
from suite.inputs import output_file
from suite.plugin.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="write RESULTS_DIR/report.html")
    p.add_argument("run_dir", type=path_arg("RESULTS_DIR"), metavar="RESULTS_DIR")
    p.add_argument("--out", type=path_arg("--out"), default=None)
    p.add_argument("--predicted-from", type=path_arg("--predicted-from"), default=None,
                   metavar="RUN_DIR", help="another run whose fitted laws (ift-bench advise) "
                   "predict this run's points: the report's \"Predictions checked\"")
    return p


def run(args: argparse.Namespace) -> int:
    from reports.html import write_report
    from suite.rundir import RunDir

    run_dir = readable_run("RESULTS_DIR", args.run_dir)
    run = RunDir(run_dir)
    output_file("--out", args.out or run.report_file)
    if run.has_meta():
        run.read_meta("RESULTS_DIR")  # a damaged meta.json: one line, exit 2
    predicted_from = None
    if args.predicted_from is not None:
        predicted_from = readable_run("--predicted-from", args.predicted_from)
        if not RunDir(predicted_from).records_file.exists():
            raise UsageError("--predicted-from", f"{str(predicted_from)!r} holds no records",
                             "a results/<run-id> directory of a finished run")
    print(write_report(run_dir, args.out) if predicted_from is None
          else write_report(run_dir, args.out, predicted_from=predicted_from))
    return 0
