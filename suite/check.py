"""``ift-bench check PROBLEM``: vet a problem before its measurements are trusted.

The rules (:mod:`suite.check_rules`) run in this process, or in child processes under a timeout
each (:mod:`suite.check_child`); this module validates the request and collects the findings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import problems
from suite.check_child import isolated_findings
from suite.check_rules import Finding, Plan, findings
from suite.frameworks import registry as framework_registry
from suite.plugin.errors import UsageError
from suite.point import Point, validate_point


@dataclass
class CheckReport:
    spec: str
    header: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(f.status == "fail" for f in self.findings)

    def status(self, rule: int) -> str:
        return next(f.status for f in self.findings if f.rule == rule)

    def lines(self) -> list[str]:
        counts = {s: sum(f.status == s for f in self.findings)
                  for s in ("pass", "warn", "fail", "skip")}
        tail = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        return [self.header, *(f.line() for f in self.findings), f"{self.spec}: {tail}"]



#: slow solver 20000 times and rule 4 compiles JAX programs
RULE_TIMEOUT_S = 600.0


def run_check(spec: str, *, n: int = 6, K: int = 10, max_K: int = 20000,
              framework: str | None = None, seed: int = 0,
              options: dict[str, Any] | None = None,
              timeout_s: float | None = None) -> CheckReport:
    """Every rule on ``spec`` at size ``n``; bad input raises :class:`UsageError`.

    ``timeout_s`` None: the rules run in this process. Otherwise they run in a child process
    (``suite.check_child``), each under ``timeout_s``: a rule that runs out of time, or whose
    code ends the process, fails with that reason and the next rules run in a fresh child."""
    plan = _plan(spec, n=n, K=K, max_K=max_K, framework=framework, seed=seed,
                 options=options)
    report = CheckReport(spec, plan.header)
    if timeout_s is None:
        report.findings.extend(findings(plan))
    else:
        report.findings.extend(isolated_findings(plan, timeout_s))
    return report


def _plan(spec: str, *, n: int, K: int, max_K: int, framework: str | None, seed: int,
          options: dict[str, Any] | None) -> Plan:
    problem = problems.get(spec, "PROBLEM")
    registry = framework_registry()
    if framework is not None and framework not in registry:
        raise UsageError("--framework", f"unknown {framework!r}", registry)
    usable = [fw for fw in registry if problem.framework_reason(fw) is None
              and registry[fw].unavailable_reason("cpu") is None]
    if framework is not None:
        if framework not in usable:
            reason = (problem.framework_reason(framework)
                      or registry[framework].unavailable_reason("cpu"))
            raise UsageError("--framework", f"{framework}: {reason}", usable)
        usable = [framework]
    if not usable:
        raise UsageError("PROBLEM", f"{spec!r} runs in no installed framework",
                         list(registry))
    options = dict(options or {})
    for name, value in (("--n", n), ("--K", K), ("--max-K", max_K)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(name, f"{value!r} is not a positive integer", "an integer ≥ 1")
    try:
        parsed = validate_point(Point(spec, "unrolled", usable[0], n=n, K=K, seed=seed,
                                      options=options))
    except UsageError as exc:
        if exc.field in {"n", "K", "seed"}:
            raise UsageError(f"--{exc.field}", exc.detail, exc.allowed) from None
        raise
    source = "its own" if problem.has_reference else "the suite's (it supplies none)"
    return Plan(spec=spec, n=n, K=K, max_K=max_K, seed=seed, options=options,
                problem_options=parsed["problem"], frameworks=usable,
                header=f"check {spec}: n={n}, K={K}, seed={seed}, frameworks "
                       f"{', '.join(usable)}, references {source}")
