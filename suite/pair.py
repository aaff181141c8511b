"""A paired time ratio a user can trust: two strategies, one instance, one process.

``pair(point, other)`` prepares the point's strategy A and strategy ``other`` B on the same
instance (problem, n, K, seed, framework, dtype), compiles and warms both, then times them in
ABBA blocks — per block B A A B — each gradient call right after a call of the problem's
K-step forward (the same program for both sides). Per block:

* the whole-gradient ratio Σ t_grad(A) / Σ t_grad(B) (each program returning dℓ/dθ alone:
  the diagnostics our strategies return beside it, a peer's do not);
* the backward ratio: at K = 1000 the shared forward is most of the gradient's time, and the
  whole-gradient ratio hides the part that differs. Where both strategies read the forward
  only through its final state s_K (``Strategy.reads_forward_state_only``: the IFT rows, ours
  and the peers' built on our forward), each backward is its own program, run from s_K
  computed once (``suite.program.backward_program``), and timed alone in ABBA blocks of its
  own: Σ t_back(A) / Σ t_back(B). Otherwise (a tape through the steps: unrolled,
  checkpointing) Σ (t_grad(A) − t_fwd) / Σ (t_grad(B) − t_fwd), each gradient call minus the
  forward call just before it — an estimate whose spread is the forward's, wide where the
  backward is a few % of the gradient. Not defined where a strategy runs its own solver (qpth:
  our forward is not part of its gradient).

Load that comes and goes hits both halves of a block alike, and whichever program runs first
after the other pays the switch once per block each (``suite.measure._paired_ratios``). The
blocks' median is reported with its exact distribution-free confidence interval
(:func:`median_interval`: order statistics, binomial coverage), so "A is faster than B" is
said only when the whole interval lies below 1.

Beside the times: ‖g_A − g_B‖/‖g_B‖, and each gradient's error against the problem's converged
float64 reference (``suite.references``).

Run as ``python -m suite.pair SPEC OUT`` it is the child the ``pair`` command isolates the two
strategies in (a fresh interpreter with the sweep's thread settings).
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from suite.intervals import CONFIDENCE, Interval, median_interval  # noqa: F401 (re-exported)
from suite.point import Point

#: the default number of ABBA blocks: with 21, the 95 % interval of the median is the 6th to
#: the 16th smallest block ratio (coverage 97.3 %)
DEFAULT_BLOCKS = 21
#: the least seconds one timed call of a backward alone lasts (it is repeated to reach it)
BACKWARD_CALL_S = 2e-3
#: the most backward calls one timed call repeats
CALLS_MAX = 1000


def combine(pairings: list[dict[str, Any]]) -> dict[str, Any]:
    """One pairing from the same pairing run in several fresh processes (``pair
    --processes``): a process's compiled programs and memory layout give its ratios a level of
    their own (a few % on these machines), which its blocks cannot average out. Each ratio is
    then the median of the processes' medians, with the exact interval over those medians
    (distribution-free: six processes reach 96.9 %); the gradients' agreement and errors are the
    first process's (every process computes the same ones); the seconds are medians."""
    first = pairings[0]
    out = dict(first)
    out["processes"] = len(pairings)
    for key in ("gradient", "backward"):
        medians = [p[key]["median"] for p in pairings if p[key] is not None]
        out[key] = asdict(median_interval(medians)) if len(medians) == len(pairings) else None
        out[f"{key}_per_process"] = medians
    for key in ("gradient_s", "backward_s"):
        if first[key] is not None:
            out[key] = [float(np.median([p[key][i] for p in pairings])) for i in (0, 1)]
    out["forward_s"] = float(np.median([p["forward_s"] for p in pairings]))
    a, b = first["point"]["backend"], first["other"]
    out["verdict"] = {k: None if out[k] is None else Interval(**out[k]).verdict(a, b)
                      for k in ("gradient", "backward")}
    return out


@dataclass
class Pairing:
    """What ``ift-bench pair`` prints: A = ``point.backend``, B = ``other``."""

    point: dict[str, Any]
    other: str
    blocks: int
    gradient: Interval
    backward: Interval | None
    backward_note: str | None
    #: how the backward ratio was obtained: "timed alone" (each backward its own program, from
    #: the forward's final state) or "gradient minus forward"; None where there is none
    backward_method: str | None
    #: ‖g_A − g_B‖ / ‖g_B‖
    agreement: float
    #: each gradient's relative error against the converged reference (None: unavailable)
    error_a: float | None
    error_b: float | None
    #: medians of the seconds per call, for context
    gradient_s: tuple[float, float]
    forward_s: float
    #: medians of the seconds per backward call timed alone (None: not timed alone)
    backward_s: tuple[float, float] | None = None
    #: the largest ‖g_backward − g_gradient‖/‖g_gradient‖ of the two sides: the backward
    #: program computes the same gradient (None: not timed alone)
    backward_agreement: float | None = None
    #: backward calls run back to back in each timed call of the backward alone
    backward_calls: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["processes"] = 1
        a, b = self.point["backend"], self.other
        out["verdict"] = {"gradient": self.gradient.verdict(a, b),
                          "backward": None if self.backward is None
                          else self.backward.verdict(a, b)}
        return out


Clock = Callable[[Callable[[], Any]], float]


def _options_for(problem: Any, strategy: Any, options: dict[str, Any]) -> dict[str, Any]:
    names = {o.name for o in problem.options} | {o.name for o in strategy.options}
    return {k: v for k, v in options.items() if k in names}


def split_options(point: Point, other: str) -> tuple[Point, Point]:
    """A's and B's points: each takes the problem's options and those of the given options
    its own strategy declares; an option neither side declares is a usage error."""
    import backends
    import problems
    from suite.plugin.errors import UsageError

    problem = problems.get(point.problem)
    strategies = backends.registry()
    for field, name in (("A", point.backend), ("B", other)):
        if name not in strategies:
            raise UsageError(field, f"unknown strategy {name!r}", strategies)
    a, b = strategies[point.backend], strategies[other]
    declared = ({o.name for o in problem.options} | {o.name for o in a.options}
                | {o.name for o in b.options})
    unknown = sorted(set(point.options) - declared)
    if unknown:
        raise UsageError(f"option {unknown[0]!r}",
                         f"not an option of problem {problem.name}, {a.name} or {b.name}",
                         sorted(declared) or ["(none)"])
    return (replace(point, options=_options_for(problem, a, point.options)),
            replace(point, backend=other, options=_options_for(problem, b, point.options)))


def _wall_clock(fw: Any) -> Clock:
    def timed(fn: Callable[[], Any]) -> float:
        start = time.perf_counter()
        fw.synchronize(fn())
        return time.perf_counter() - start
    return timed


def paired_blocks(call_a: Callable[[], Any], call_b: Callable[[], Any],
                  call_forward: Callable[[], Any], blocks: int, clock: Clock
                  ) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
    """``blocks`` ABBA blocks, each gradient call right after a forward call. Returns per
    block the whole-gradient ratios and the backward ratios (None-free: a block whose
    backward sum is not positive on either side is dropped from them), and every call's
    gradient seconds for A and B and forward seconds."""
    ratios, backward, t_a, t_b, t_f = [], [], [], [], []
    gc.collect()
    gc.disable()  # a collection inside one half of a block would bias that half
    try:
        for _ in range(blocks):
            grad = {"a": 0.0, "b": 0.0}
            back = {"a": 0.0, "b": 0.0}
            for side in ("b", "a", "a", "b"):
                forward = clock(call_forward)
                seconds = clock(call_a if side == "a" else call_b)
                grad[side] += seconds
                back[side] += seconds - forward
                (t_a if side == "a" else t_b).append(seconds)
                t_f.append(forward)
            ratios.append(grad["a"] / grad["b"])
            if back["a"] > 0 and back["b"] > 0:
                backward.append(back["a"] / back["b"])
    finally:
        gc.enable()
    return ratios, backward, t_a, t_b, t_f


def _gradient_only(program: Callable[..., tuple[Any, Any]]) -> Callable[..., Any]:
    """The program's gradient without its diagnostics (our solver statistics and adjoint,
    which a peer row does not return): both sides are timed computing dℓ/dθ alone, and XLA
    drops whatever only the diagnostics needed."""
    def gradient(*args: Any) -> Any:
        return program(*args)[0]

    return gradient


def _repeated(call: Callable[[], Any], times: int, fw: Any) -> Callable[[], Any]:
    """``call`` run ``times`` times in a row, each result waited for (the clock waits for the
    last)."""
    if times == 1:
        return call

    def run() -> Any:
        for _ in range(times - 1):
            fw.synchronize(call())
        return call()

    return run


def abba_blocks(call_a: Callable[[], Any], call_b: Callable[[], Any], blocks: int,
                clock: Clock) -> tuple[list[float], list[float], list[float]]:
    """``blocks`` ABBA blocks of two programs alone: per block Σ t(A) / Σ t(B), and every
    call's seconds for A and B."""
    ratios, t_a, t_b = [], [], []
    gc.collect()
    gc.disable()
    try:
        for _ in range(blocks):
            spent = {"a": 0.0, "b": 0.0}
            for side in ("b", "a", "a", "b"):
                seconds = clock(call_a if side == "a" else call_b)
                spent[side] += seconds
                (t_a if side == "a" else t_b).append(seconds)
            ratios.append(spent["a"] / spent["b"])
    finally:
        gc.enable()
    return ratios, t_a, t_b


def pair(point: Point, other: str, blocks: int = DEFAULT_BLOCKS,
         clock: Clock | None = None) -> Pairing:
    """Time ``point``'s strategy against ``other`` on its instance (module docstring)."""
    from suite import references
    from suite.program import prepare

    point_a, point_b = split_options(point, other)
    prep_a, prep_b = prepare(point_a), prepare(point_b)
    fw = prep_a.fw
    grad_a = fw.compile(_gradient_only(prep_a.gradient_program()))
    grad_b = fw.compile(_gradient_only(prep_b.gradient_program()))
    forward = fw.compile_shared(prep_a.forward_program(), prep_a.theta, prep_a.arrays)

    def call_a() -> Any:
        return grad_a(prep_a.theta, prep_a.arrays)

    def call_b() -> Any:
        return grad_b(prep_b.theta, prep_b.arrays)

    def call_forward() -> Any:
        return forward(prep_a.theta, prep_a.arrays)

    # compile and warm all three, and keep the gradients for the agreement
    g_a, g_b = call_a(), call_b()
    fw.synchronize((g_a, g_b, call_forward()))
    g_a, g_b = fw.to_numpy(g_a), fw.to_numpy(g_b)
    ratios, backward, t_a, t_b, t_f = paired_blocks(call_a, call_b, call_forward, blocks,
                                                    clock or _wall_clock(fw))
    own_solver = [p.strategy.name for p in (prep_a, prep_b) if p.strategy.own_solver]
    alone = not own_solver and all(p.strategy.reads_forward_state_only
                                   for p in (prep_a, prep_b))
    method: str | None = "gradient minus forward"
    backward_s = backward_agreement = backward_calls = None
    if own_solver:
        back, method, note = None, None, (
            f"{own_solver[0]} runs its own solver: our forward is not part of its gradient, "
            "so no backward can be split off")
    elif alone:
        state = fw.compile(prep_a.final_state_program())(prep_a.theta, prep_a.arrays)
        back_a = fw.compile(_gradient_only(prep_a.backward_program()))
        back_b = fw.compile(_gradient_only(prep_b.backward_program()))

        def call_back_a() -> Any:
            return back_a(prep_a.theta, prep_a.arrays, state)

        def call_back_b() -> Any:
            return back_b(prep_b.theta, prep_b.arrays, state)

        h_a, h_b = call_back_a(), call_back_b()
        fw.synchronize((h_a, h_b))
        backward_agreement = max(_rel(fw.to_numpy(h_a), g_a), _rel(fw.to_numpy(h_b), g_b))
        timer = clock or _wall_clock(fw)
        # a backward of ~0.1 ms is near the timer's and the dispatch's own jitter: each timed
        # call runs it `calls` times back to back, so that one lasts ≥ BACKWARD_CALL_S
        calls = max(1, min(CALLS_MAX, math.ceil(BACKWARD_CALL_S / max(
            timer(call_back_a), timer(call_back_b), 1e-9))))
        back_ratios, s_a, s_b = abba_blocks(_repeated(call_back_a, calls, fw),
                                            _repeated(call_back_b, calls, fw), blocks, timer)
        back, method, note = median_interval(back_ratios), "timed alone", None
        backward_s = (float(np.median(s_a)) / calls, float(np.median(s_b)) / calls)
        backward_calls = calls
    elif len(backward) < blocks:
        back = median_interval(backward) if backward else None
        note = (f"{blocks - len(backward)} of {blocks} blocks had a gradient no slower than "
                "the forward (the backward is within the timer's noise)")
    else:
        back, note = median_interval(backward), None

    def error(g: np.ndarray) -> float | None:
        try:
            ref = references.reference_gradient(prep_a.problem, prep_a.instance, point.K,
                                                "converged")
        except references.ReferenceUnavailable:
            return None
        return _rel(g, ref)

    return Pairing(point=point_a.to_json(), other=other, blocks=blocks,
                   gradient=median_interval(ratios), backward=back, backward_note=note,
                   backward_method=method,
                   agreement=_rel(g_a, g_b), error_a=error(g_a), error_b=error(g_b),
                   gradient_s=(float(np.median(t_a)), float(np.median(t_b))),
                   forward_s=float(np.median(t_f)), backward_s=backward_s,
                   backward_agreement=backward_agreement, backward_calls=backward_calls)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(b))
    diff = float(np.linalg.norm(np.asarray(a) - np.asarray(b)))
    return diff / denom if denom > 0 else diff


def main(argv: list[str]) -> int:
    """The isolated child: read the spec, pair, write the result (or the error) as JSON."""
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    point = Point.from_json(spec["point"])
    if spec.get("cpus") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(spec["cpus"]))
    from suite.frameworks import registry

    registry()[point.framework].configure_threads(spec["threads"])
    try:
        result: dict[str, Any] = {"ok": pair(point, spec["other"], spec["blocks"]).to_json()}
    except Exception as exc:  # noqa: BLE001 — the parent prints it on one line
        result = {"error": f"{type(exc).__name__}: {exc}"}
    Path(out_path).write_text(json.dumps(result, default=_finite), encoding="utf-8")
    return 0


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
