"""The two programs a point times: the full gradient and the forward solve alone.

Both take ``(theta, arrays)`` so that instance data are arguments of the compiled program
(not constants baked into it) and the same callable serves timing, peak memory, trace bytes and
the counting pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import backends
import problems
from backends.base import Strategy, solve_forward
from problems.base import Bound, Instance, Problem
from suite.frameworks import registry as framework_registry
from suite.plugin.framework import Framework, OpCounter
from suite.point import Point, validate_point
from suite.references import Host


def gradient_program(
    problem: Problem, strategy: Strategy, fw: Framework, consts: Mapping[str, Any], K: int,
    opts: Mapping[str, Any],
) -> Callable[[Any, Any], tuple[Any, dict[str, Any]]]:
    """(θ, arrays) ↦ (dℓ/dθ, aux): one full gradient, forward solve included."""

    def program(theta: Any, arrays: Any) -> tuple[Any, dict[str, Any]]:
        P = Bound(problem, fw.xp, arrays, consts,
                  wrap_step=lambda step: fw.wrap_step(step, strategy.reverse_through_steps))
        return strategy.gradient(fw, P, theta, K, dict(opts))

    return program


def forward_program(
    problem: Problem, fw: Framework, consts: Mapping[str, Any], K: int
) -> Callable[[Any, Any], tuple[Any, Any]]:
    """(θ, arrays) ↦ (ℓ(x_K, θ), x_K): the solve alone, no tape."""

    def program(theta: Any, arrays: Any) -> tuple[Any, Any]:
        P = Bound(problem, fw.xp, arrays, consts)
        x = solve_forward(fw, P, theta, K)
        return P.loss(x, theta), x

    return program


def final_state_program(
    problem: Problem, fw: Framework, consts: Mapping[str, Any], K: int
) -> Callable[[Any, Any], Any]:
    """(θ, arrays) ↦ s_K: the solver's whole state after K steps, no tape."""

    def program(theta: Any, arrays: Any) -> Any:
        P = Bound(problem, fw.xp, arrays, consts)
        return fw.iterate(lambda s: P.step(s, theta), P.init(theta), K)

    return program


class ReplayedForward:
    """``fw``, except that ``iterate`` returns a final state computed beforehand (without a
    tape) instead of running K steps: a strategy that reads the forward only through that state
    (``Strategy.reads_forward_state_only``) then runs its backward alone. A second ``iterate``,
    or one of another K, is a strategy that does not, and raises."""

    def __init__(self, fw: Framework, state: Any, K: int):
        self._fw, self._state, self._K, self._calls = fw, state, K, 0

    def iterate(self, step: Callable[[Any], Any], state: Any, K: int) -> Any:
        self._calls += 1
        if self._calls > 1 or K != self._K:
            raise RuntimeError(f"the strategy iterates more than the one {self._K}-step forward "
                               "it declares (reads_forward_state_only)")
        return self._fw.stop_gradient(self._state)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fw, name)


def backward_program(
    problem: Problem, strategy: Strategy, fw: Framework, consts: Mapping[str, Any], K: int,
    opts: Mapping[str, Any],
) -> Callable[[Any, Any, Any], tuple[Any, dict[str, Any]]]:
    """(θ, arrays, s_K) ↦ (dℓ/dθ, aux): the gradient of a strategy that reads the forward only
    through its final state s_K (:func:`final_state_program`'s), from that state: its
    backward alone. The same gradient as :func:`gradient_program`'s."""
    if not strategy.reads_forward_state_only:
        raise ValueError(f"{strategy.name} does not read the forward only through its final "
                         "state: its backward cannot be run alone")

    def program(theta: Any, arrays: Any, state: Any) -> tuple[Any, dict[str, Any]]:
        replayed: Any = ReplayedForward(fw, state, K)
        P = Bound(problem, fw.xp, arrays, consts,
                  wrap_step=lambda step: fw.wrap_step(step, strategy.reverse_through_steps))
        return strategy.gradient(replayed, P, theta, K, dict(opts))

    return program


@dataclass
class Prepared:
    """Everything needed to run a point's programs in this process."""

    point: Point
    problem: Problem
    strategy: Strategy
    fw: Framework
    instance: Instance
    theta: Any
    arrays: dict[str, Any]
    problem_options: dict[str, Any]
    options: dict[str, Any]
    dim_x: int
    #: ‖F(θ, x₀)‖ in float64, the scale inner residuals are judged against
    residual_0: float

    def gradient_program(self) -> Callable[[Any, Any], tuple[Any, dict[str, Any]]]:
        return gradient_program(self.problem, self.strategy, self.fw, self.instance.consts,
                                self.point.K, self.options)

    def forward_program(self) -> Callable[[Any, Any], tuple[Any, Any]]:
        return forward_program(self.problem, self.fw, self.instance.consts, self.point.K)

    def final_state_program(self) -> Callable[[Any, Any], Any]:
        return final_state_program(self.problem, self.fw, self.instance.consts, self.point.K)

    def backward_program(self) -> Callable[[Any, Any, Any], tuple[Any, dict[str, Any]]]:
        return backward_program(self.problem, self.strategy, self.fw, self.instance.consts,
                                self.point.K, self.options)

    def residual_norm(self, x: Any) -> float:
        """‖F(θ, x)‖ in float64 (numpy, or the problem's own framework) for a framework
        array x."""
        host = Host(self.problem, self.instance)
        return host.residual_norm(host.asarray(self.fw.to_numpy(x)))


def prepare(point: Point) -> Prepared:
    """Validate ``point``, generate its instance and convert it for its framework."""
    parsed = validate_point(point)
    problem = problems.get(point.problem)
    strategy = backends.registry()[point.backend]
    fw = framework_registry()[point.framework](point.device, point.dtype)
    instance = problem.generate(point.n, point.seed, parsed["problem"])
    host = Host(problem, instance)
    x_0 = host.solution(host.init())
    residual_0 = host.residual_norm(x_0)
    dim_x = int(host.numpy(x_0).size)
    opts = strategy.resolve_defaults(dict(parsed["strategy"]), point.K, point.dtype,
                                     dim_x)
    return Prepared(point=point, problem=problem, strategy=strategy, fw=fw, instance=instance,
                    theta=fw.asarray(instance.theta),
                    arrays={k: fw.asarray(v) for k, v in instance.arrays.items()},
                    problem_options=parsed["problem"], options=opts, dim_x=dim_x,
                    residual_0=residual_0 or 1.0)


@dataclass
class Evaluation:
    gradient: np.ndarray
    aux: dict[str, Any]
    counts: dict[str, int] | None
    prepared: Prepared


def evaluate(point: Point, *, count: bool = False) -> Evaluation:
    """One gradient of ``point`` in this process, without meters (tests, notebooks).

    With ``count=True`` the instrumented program of the counting pass is run instead and its
    exact operation counts are returned.
    """
    prep = prepare(point)
    fw = prep.fw
    counter = OpCounter() if count else None
    if counter is not None:
        with fw.counting(counter):
            grad, aux = fw.compile_for_counting(prep.gradient_program(), prep.theta,
                                                prep.arrays)(prep.theta, prep.arrays)
            fw.synchronize((grad, aux))
    else:
        grad, aux = fw.compile(prep.gradient_program())(prep.theta, prep.arrays)
        fw.synchronize((grad, aux))
    aux_np = {k: fw.to_numpy(v).item() if np.ndim(fw.to_numpy(v)) == 0 else fw.to_numpy(v)
              for k, v in aux.items()}
    return Evaluation(fw.to_numpy(grad), aux_np, counter.snapshot() if counter else None, prep)
