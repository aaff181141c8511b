"""``ift-bench check PROBLEM``: vet a problem before trusting it (the rules: suite.check_rules)."""

from __future__ import annotations

import argparse

from suite.cli.arguments import numbers
from suite.inputs import K_MAX, N_MAX, SEED_MAX, TIMEOUT_MAX_S


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("check", help="vet a problem before trusting it: one line per "
                       "rule, pass/warn/fail (exit 1 on a fail)")
    p.add_argument("problem", metavar="PROBLEM",
                   help="a name, package.module:ClassName or path/to/file.py:ClassName")
    p.add_argument("--n", type=numbers("--n", integer=True, minimum=1, maximum=N_MAX,
                                        what="an integer"), default=6,
                   help="problem size (default 6: the checks build dense Jacobians)")
    p.add_argument("--K", type=numbers("--K", integer=True, minimum=1, maximum=K_MAX,
                                        what="an integer"), default=10,
                   help="K of the K-step map the references, the torch/JAX agreement "
                        "and the trace are checked at (default 10)")
    p.add_argument("--max-K", type=numbers("--max-K", integer=True, minimum=1,
                                            maximum=K_MAX, what="an integer"),
                   default=20000, help="steps the convergence rule allows (20000)")
    p.add_argument("--framework", default=None,
                   help="check in this framework only (default: every one the problem "
                        "supports)")
    p.add_argument("--seed", type=numbers("--seed", integer=True, minimum=0,
                                           maximum=SEED_MAX, what="an integer"), default=0)
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="problem option; repeatable")
    p.add_argument("--timeout", type=numbers("--timeout", integer=False, minimum=0,
                                              exclusive_minimum=True,
                                              maximum=TIMEOUT_MAX_S, what="seconds"),
                   default=None,
                   help="seconds each rule may take before it fails as timed out "
                        "(default 600); the rules run in a child process")
    return p


def run(args: argparse.Namespace) -> int:
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
