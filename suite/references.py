"""float64 evaluation of a problem outside any measured program, and the references the suite
computes for problems that supply no ``reference_gradient``.

``Host`` runs a problem's own math in float64: numpy (``array_api_compat.numpy``) for problems
written against ``xp``, or the one framework a problem declares (``frameworks = ("torch",)``),
on the CPU. The suite's references, for a problem without its own:

* ``k_step``: reverse mode in float64 through exactly the K-step map
  θ ↦ ℓ(x(T^K(s₀(θ), θ)), θ), by the torch adapter (eager autograd: any Python the problem
  writes is fine), or by the problem's own framework if it declares one;
* ``converged``: x* by the problem's own step until ‖F(θ, x)‖ ≤ 1e-12 (:func:`solve`; a clear
  error naming the residual reached if it never gets there), then the dense IFT

      dℓ/dθ = ∇_θℓ − (∂F/∂θ)ᵀ a,   (∂F/∂x)ᵀ a = ∇ₓℓ,   all at (θ, x*),

  with ∂F/∂x built densely by forward mode and one LU solve.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np

from problems.base import Bound, Instance, Problem, ReferenceKind, numpy_namespace
from suite.frameworks import registry as framework_registry
from suite.plugin.errors import ReferenceUnavailable
from suite.plugin.framework import Framework
from suite.run_cache import CACHE_ENV, write_cache_entry

#: ‖F(θ, x)‖ at which a state counts as a solution for the suite's converged reference
SOLVE_TOL = 1e-12
#: steps of the problem's own solver the suite runs at most to reach SOLVE_TOL
MAX_SOLVE_STEPS = 100_000


def reference_source(problem: Problem) -> str:
    """``problem`` (its own ``reference_gradient``) or ``suite`` (computed here)."""
    return "problem" if problem.has_reference else "suite"


def reference_gradient(problem: Problem, instance: Instance, K: int,
                       kind: ReferenceKind) -> np.ndarray:
    """The float64 reference of ``kind``: the problem's own, else the suite's; read from the
    run's reference cache when an earlier point of the same instance computed it."""
    cache = os.environ.get(CACHE_ENV)
    if not cache:
        return _compute_reference(problem, instance, K, kind)
    path = Path(cache) / f"{_reference_key(problem, instance, K, kind)}.npy"
    try:
        return np.load(path)
    except (OSError, ValueError):
        pass
    reference = _compute_reference(problem, instance, K, kind)
    try:
        write_cache_entry(path, lambda fh: np.save(fh, reference))
    except OSError:
        pass  # a cache that cannot be written costs time, never a measurement
    return reference


def _reference_key(problem: Problem, instance: Instance, K: int, kind: ReferenceKind) -> str:
    """A hash of everything a reference depends on: the problem's code (its file and the
    suite's reference code), the instance's numbers, and K where the kind depends on it."""
    digest = hashlib.sha256()
    for path in (inspect.getfile(type(problem)), __file__):
        digest.update(Path(path).read_bytes())
    digest.update(f"{type(problem).__qualname__}|{kind}|"
                  f"{K if kind == 'k_step' else ''}|".encode())
    digest.update(np.ascontiguousarray(instance.theta, dtype=np.float64).tobytes())
    for name in sorted(instance.arrays):
        array = np.ascontiguousarray(instance.arrays[name])
        digest.update(f"{name}{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    digest.update(repr(sorted(instance.consts.items())).encode())
    return digest.hexdigest()


def _compute_reference(problem: Problem, instance: Instance, K: int,
                       kind: ReferenceKind) -> np.ndarray:
    if problem.has_reference:
        return np.asarray(problem.reference_gradient(instance, K, kind), dtype=np.float64)
    if kind == "k_step":
        return k_step_gradient(problem, instance, K)
    return converged_gradient(problem, instance)


# ---- float64 host evaluation -----------------------------------------------------------
def ad_framework(problem: Problem) -> Framework:
    """The float64 CPU adapter that differentiates references: the problem's own framework if
    it declares one, else the first installed in the registry's order (torch — eager, no
    tracing constraints — then JAX)."""
    names = list(problem.frameworks or framework_registry())
    registry = framework_registry()
    for name in names:
        if registry[name].unavailable_reason("cpu") is None:
            return registry[name]("cpu", "float64")
    raise ReferenceUnavailable(f"none of {', '.join(names)} is installed")


class Host:
    """One instance evaluated in float64: numpy for ``xp``-generic problems, else the
    problem's declared framework. Every output is returned as a numpy array."""

    def __init__(self, problem: Problem, instance: Instance):
        self.problem, self.instance = problem, instance
        if problem.frameworks is None:
            self.fw: Framework | None = None
            self.xp = numpy_namespace()
            convert = np.asarray
        else:
            self.fw = ad_framework(problem)
            self.xp = self.fw.xp
            convert = self.fw.asarray
        self._convert = convert
        self.data: dict[str, Any] = {**{k: convert(v) for k, v in instance.arrays.items()},
                                     **instance.consts}
        self.theta = convert(instance.theta)

    def asarray(self, a: np.ndarray) -> Any:
        return self._convert(a)

    def numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a, dtype=np.float64) if self.fw is None else self.fw.to_numpy(a)

    def init(self, theta: Any = None) -> Any:
        return self.problem.init(self.xp, self.data, self.theta if theta is None else theta)

    def step(self, state: Any, theta: Any = None) -> Any:
        return self.problem.step(self.xp, self.data, state,
                                 self.theta if theta is None else theta)

    def solution(self, state: Any, theta: Any = None) -> Any:
        return self.problem.solution(self.xp, self.data, state,
                                     self.theta if theta is None else theta)

    def residual(self, x: Any, theta: Any = None) -> np.ndarray:
        return self.numpy(self.problem.residual(self.xp, self.data, x,
                                                self.theta if theta is None else theta))

    def loss(self, x: Any, theta: Any = None) -> float:
        return float(self.numpy(self.problem.loss(self.xp, self.data, x,
                                                  self.theta if theta is None else theta)))

    def residual_norm(self, x: Any, theta: Any = None) -> float:
        return float(np.linalg.norm(self.residual(x, theta)))

    def outer_after(self, K: int, theta: Any = None) -> float:
        """ℓ(x_K(θ), θ): the K-step map, evaluated."""
        theta = self.theta if theta is None else theta
        state = self.init(theta)
        for _ in range(K):
            state = self.step(state, theta)
        return self.loss(self.solution(state, theta), theta)


def solve(problem: Problem, instance: Instance, tol: float = SOLVE_TOL,
          max_steps: int = MAX_SOLVE_STEPS) -> tuple[np.ndarray, int]:
    """(x*, steps): the problem's own step from s₀ until ‖F(θ, x)‖ ≤ ``tol``."""
    host = Host(problem, instance)
    state = host.init()
    best = np.inf
    for k in range(max_steps + 1):
        x = host.solution(state)
        norm = host.residual_norm(x)
        best = min(best, norm)
        if norm <= tol:
            return host.numpy(x), k
        if not np.isfinite(norm):
            raise ReferenceUnavailable(f"the solver diverged: ‖F(θ, x)‖ = {norm} after {k} "
                                       "steps")
        if k < max_steps:
            state = host.step(state)
    raise ReferenceUnavailable(
        f"the problem's step did not reach ‖F(θ, x)‖ ≤ {tol:g} in {max_steps} steps (smallest "
        f"reached {best:.2e}, last {norm:.2e}); supply reference_gradient for this problem")


def _bound(problem: Problem, fw: Framework, instance: Instance) -> Bound:
    return Bound(problem, fw.xp, {k: fw.asarray(v) for k, v in instance.arrays.items()},
                 instance.consts)


def k_step_gradient(problem: Problem, instance: Instance, K: int) -> np.ndarray:
    """d/dθ ℓ(x_K(θ), θ) by float64 reverse mode through the K steps."""
    fw = ad_framework(problem)
    P = _bound(problem, fw, instance)

    def outer(theta: Any) -> Any:
        state = fw.iterate(lambda s: P.step(s, theta), P.init(theta), K)
        return P.loss(P.solution(state, theta), theta)

    _, grad = fw.compile(lambda th: fw.value_and_grad(outer, th))(fw.asarray(instance.theta))
    return fw.to_numpy(grad)


def converged_gradient(problem: Problem, instance: Instance,
                       x_star: np.ndarray | None = None) -> np.ndarray:
    """dℓ/dθ at x* by the dense IFT (x* from :func:`solve` unless given)."""
    if x_star is None:
        x_star, _ = solve(problem, instance)
    fw = ad_framework(problem)
    P = _bound(problem, fw, instance)
    theta, x = fw.asarray(instance.theta), fw.asarray(x_star)
    jac = fw.to_numpy(fw.jacobian(lambda x_: P.residual(x_, theta), x))
    value, loss_pullback = fw.vjp(P.loss, x, theta)
    loss_x, loss_theta = (fw.to_numpy(g) for g in loss_pullback(fw.xp.ones_like(value)))
    adjoint = np.linalg.solve(jac.reshape(x_star.size, x_star.size).T, loss_x.ravel())
    _, residual_pullback = fw.vjp(lambda th: P.residual(x, th), theta)
    (implicit,) = residual_pullback(fw.asarray(adjoint.reshape(np.shape(x_star))))
    return loss_theta - fw.to_numpy(implicit)


def jacobian_and_loss_gradient(problem: Problem, instance: Instance,
                               x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(∂F/∂x, ∇ₓℓ) at (θ, x), float64, by the reference adapter's forward/reverse mode."""
    fw = ad_framework(problem)
    P = _bound(problem, fw, instance)
    theta, x_fw = fw.asarray(instance.theta), fw.asarray(x)
    jac = fw.to_numpy(fw.jacobian(lambda x_: P.residual(x_, theta), x_fw))
    value, pullback = fw.vjp(P.loss, x_fw, theta)
    return jac.reshape(x.size, x.size), fw.to_numpy(pullback(fw.xp.ones_like(value))[0])


def loss_gradient_x(problem: Problem, instance: Instance, x: np.ndarray) -> np.ndarray:
    """∇ₓℓ(θ, x), float64, by the reference adapter's reverse mode."""
    fw = ad_framework(problem)
    P = _bound(problem, fw, instance)
    value, pullback = fw.vjp(P.loss, fw.asarray(x), fw.asarray(instance.theta))
    return fw.to_numpy(pullback(fw.xp.ones_like(value))[0])
