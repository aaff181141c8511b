"""A point: one (problem, backend, framework, device, dtype, n, K, options, seed) to measure.

``validate_point`` checks every field against the registries before any subprocess starts, and
``Settings`` holds how a point is measured (repeats, timeout, memory cap, threads).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import backends
import problems
from suite.frameworks import DEVICES, DTYPES
from suite.frameworks import registry as framework_registry
from suite.inputs import (
    K_MAX,
    MEMORY_CAP_MAX,
    MEMORY_CAP_MIN,
    N_MAX,
    REPEATS_MAX,
    SEED_MAX,
    TIMEOUT_MAX_S,
    cpus_available,
    number,
)
from suite.plugin import options as options_mod
from suite.plugin.errors import UnsupportedError, UsageError

IDENTITY_FIELDS = ("problem", "backend", "framework", "device", "dtype", "n", "K", "seed",
                   "options")


@dataclass(frozen=True)
class Point:
    problem: str
    backend: str
    framework: str
    n: int
    K: int
    device: str = "cpu"
    dtype: str = "float64"
    seed: int = 0
    #: options as given by the user (raw or parsed values), part of the point's identity
    options: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """Canonical identity string: equal points (same options, any order) share a key."""
        ident = asdict(self)
        ident["options"] = {k: str(v) for k, v in sorted(self.options.items())}
        return json.dumps(ident, sort_keys=True, separators=(",", ":"))

    def label(self) -> str:
        opts = "".join(f" {k}={v}" for k, v in sorted(self.options.items()))
        return (f"{self.problem}/{self.backend}/{self.framework} {self.dtype} "
                f"n={self.n} K={self.K}{opts}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Point:
        return cls(**{k: d[k] for k in IDENTITY_FIELDS if k in d})


@dataclass(frozen=True)
class Settings:
    """How points are measured; recorded in meta.json and in every record."""

    repeats: int = 5
    timeout_s: float = 300.0
    memory_cap_bytes: int | None = None
    threads: int = 1
    #: also time this strategy's gradient in the same process, alternating call by call, and
    #: record the ratio of medians (the CI gate's noise-robust time measure); None: don't
    pair_with: str | None = None

    def validate(self, names: dict[str, str] | None = None) -> Settings:
        """Check every field; ``names`` maps a field to what the user called it (``--timeout``,
        ``mine.toml:5: timeout_s``) so that the message names what they typed."""
        name = {"repeats": "repeats", "timeout_s": "timeout_s", "memory_cap_bytes": "memory_cap",
                "threads": "threads", "pair_with": "pair_with", **(names or {})}
        cpus = cpus_available()
        number(name["repeats"], self.repeats, integer=True, minimum=1, maximum=REPEATS_MAX,
               allowed=f"an integer from 1 to {REPEATS_MAX}", strict=True)
        number(name["timeout_s"], self.timeout_s, minimum=0, exclusive_minimum=True,
               maximum=TIMEOUT_MAX_S, strict=True,
               allowed=f"a number of seconds > 0 and <= {TIMEOUT_MAX_S:g} = one week")
        if self.memory_cap_bytes is not None:
            number(name["memory_cap_bytes"], self.memory_cap_bytes, integer=True, strict=True,
                   maximum=MEMORY_CAP_MAX, allowed="a size from 256MiB to 1PiB, e.g. 8GiB")
            if self.memory_cap_bytes < MEMORY_CAP_MIN:
                raise UsageError(name["memory_cap_bytes"],
                                 f"{self.memory_cap_bytes!r} bytes is below the "
                                 f"{MEMORY_CAP_MIN // 2**20} MiB of address space that thread "
                                 "stacks, XLA's compiler and the meters take beyond the loaded "
                                 "framework",
                                 f">= {MEMORY_CAP_MIN // 2**20} MiB, e.g. 1GiB")
        number(name["threads"], self.threads, integer=True, minimum=1, maximum=cpus, strict=True,
               allowed=f"an integer from 1 to {cpus}, the CPUs available to this process")
        if self.pair_with is not None and (not isinstance(self.pair_with, str)
                                           or self.pair_with not in backends.registry()):
            raise UsageError(name["pair_with"], f"unknown {self.pair_with!r}",
                             backends.registry())
        return self


def _check_int(field_name: str, value: Any, minimum: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise UsageError(field_name, f"{value!r} is not an integer from {minimum} to {maximum}",
                         f"integers from {minimum} to {maximum}")


def validate_point(point: Point) -> dict[str, dict[str, Any]]:
    """Check every field; return the parsed options split into problem and strategy parts.

    Raises :class:`UsageError` for bad input and :class:`UnsupportedError` for a valid but
    unsupported combination (recorded as status ``unsupported`` in sweeps).
    """
    strats, fws = backends.registry(), framework_registry()
    problem = problems.get(point.problem)  # a name, package.module:Class or file.py:Class
    if point.backend not in strats:
        raise UsageError("backend", f"unknown {point.backend!r}", strats)
    if point.framework not in fws:
        raise UsageError("framework", f"unknown {point.framework!r}", fws)
    if point.device not in DEVICES:
        raise UsageError("device", f"unknown {point.device!r}", DEVICES)
    if point.dtype not in DTYPES:
        raise UsageError("dtype", f"unknown {point.dtype!r}", DTYPES)
    _check_int("n", point.n, 1, N_MAX)
    _check_int("K", point.K, 1, K_MAX)
    _check_int("seed", point.seed, 0, SEED_MAX)
    strategy = strats[point.backend]
    declared = {o.name for o in problem.options} | {o.name for o in strategy.options}
    unknown = sorted(set(point.options) - declared)
    if unknown:
        raise UsageError(f"option {unknown[0]!r}",
                         f"not an option of problem {problem.name} or backend {strategy.name}",
                         sorted(declared) or ["(none)"])
    parsed = {
        "problem": options_mod.resolve(
            problem.options, {k: v for k, v in point.options.items()
                              if k in {o.name for o in problem.options}}, problem.name),
        "strategy": options_mod.resolve(
            strategy.options, {k: v for k, v in point.options.items()
                               if k in {o.name for o in strategy.options}}, strategy.name),
    }
    reason = (support_reason(point.problem, point.backend, point.framework, point.device)
              or strategy.options_reason(problem, parsed["problem"], parsed["strategy"])
              or problem.size_reason(point.backend, point.framework, point.n,
                                     parsed["problem"]))
    if reason is not None:
        raise UnsupportedError("backend", reason)
    return parsed


def support_reason(problem_name: str, backend_name: str, framework: str,
                   device: str = "cpu") -> str | None:
    """Why (problem, backend, framework) cannot be measured here; None when it can."""
    problem = problems.get(problem_name)
    strategy = backends.registry()[backend_name]
    fw_reason = (problem.framework_reason(framework)
                 or framework_registry()[framework].unavailable_reason(device))
    if fw_reason is not None:
        return fw_reason
    return (strategy.unsupported_reason(problem, framework)
            or problem.unsupported_reason(backend_name, framework))
