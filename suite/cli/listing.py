"""``ift-bench list``: every (problem, strategy, framework), supported or why not."""

from __future__ import annotations

import argparse
import json
from typing import Any

from suite.cli.arguments import names_list
from suite.cli.process import stdout_to_stderr
from suite.plugin.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("list",
                       help="every (problem, backend, framework), supported or why not")
    p.add_argument("--json", action="store_true", help="a JSON list of objects")
    p.add_argument("--device", default="cpu")
    p.add_argument("--problem", type=names_list("--problem"), default=None,
                   help="only these problems (names or import paths; default: every "
                        "built-in and installed one)")
    return p


# ---- commands -----------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
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
