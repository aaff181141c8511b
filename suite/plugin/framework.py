"""The framework adapter: the few operations a strategy needs, implemented once per framework.

Strategies (``backends/``) are written against this interface only. An adapter must provide
reverse mode (``value_and_grad``, ``vjp``), forward mode (``jacobian``), the solver loop
(``iterate``, ``while_loop``), a dense ``solve``, compilation and synchronisation, and the
deterministic ``trace_bytes`` meter. Counting (``tick``, ``wrap_step``) is active only in the
separate, untimed counting pass, so instrumentation never perturbs time or memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter as _Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

COUNT_KINDS = ("step_evals", "vjp_evals", "jvp_evals", "hvp_evals", "solver_iters")


class OpCounter:
    """Exact operation counts, filled during the counting pass."""

    def __init__(self) -> None:
        self.counts: _Counter[str] = _Counter()

    def add(self, kind: str, times: int = 1) -> None:
        if kind not in COUNT_KINDS:
            raise KeyError(kind)
        self.counts[kind] += int(times)

    def snapshot(self) -> dict[str, int]:
        return {k: int(self.counts.get(k, 0)) for k in COUNT_KINDS}


class Framework(ABC):
    """One execution framework on one device at one dtype."""

    name: ClassVar[str]
    #: where tables, figures and sweeps list this framework: lower first, ties by name
    order: ClassVar[int] = 100
    #: the distributions this framework's programs (and so its deterministic meters) depend
    #: on, besides python: what a machine fingerprint and a baseline record of it
    packages: ClassVar[tuple[str, ...]] = ()
    #: whether the first call compiles the program (JAX), so that its excess over the median
    #: time is recorded as ``compile_s``; eager frameworks record null
    compiles: ClassVar[bool] = False
    #: whether an array's shape inside a loop is fixed when the program is compiled (XLA), so
    #: that a buffer a loop fills must be allocated whole before it; eager frameworks can grow
    #: one as it fills (a Krylov basis holds only the vectors it uses)
    static_shapes: ClassVar[bool] = False
    #: modules a sweep's fork server imports once, before any fork, where installed: the
    #: framework and the parts of it that would otherwise load on a point's first use
    preload: ClassVar[tuple[str, ...]] = ()

    def __init__(self, device: str, dtype: str):
        self.device_name = device
        self.dtype_name = dtype
        self.counter: OpCounter | None = None

    # ---- availability and process set-up ----------------------------------------------
    @classmethod
    @abstractmethod
    def unavailable_reason(cls, device: str = "cpu") -> str | None:
        """None if the framework can run on ``device`` here, else why not."""

    # ---- arrays -------------------------------------------------------------------------
    @property
    @abstractmethod
    def xp(self) -> Any:
        """The array-API namespace problems are written against."""

    @abstractmethod
    def asarray(self, a: np.ndarray) -> Any:
        """numpy float64 → framework array of this dtype on this device."""

    @abstractmethod
    def to_numpy(self, a: Any) -> np.ndarray:
        """framework array → numpy (host copy): floating arrays as float64, others as they are."""

    # ---- execution ----------------------------------------------------------------------
    @abstractmethod
    def compile(self, fn: Callable) -> Callable:
        """The callable that is timed (``jax.jit``; eager torch returns ``fn``)."""

    #: whether ``trace_bytes`` runs the program (eager torch) rather than analysing its
    #: compilation (JAX): then one run of the counting program meters both
    counts_while_tracing: bool = False

    def compile_shared(self, fn: Callable, *args: Any) -> Callable:
        """``compile(fn)`` for a program whose compilation no record reports (the forward
        solve, the gate's paired gradient), which other points of the run may share: JAX
        loads it from the run's program cache when an earlier point compiled the same one."""
        return self.compile(fn)

    def compile_for_counting(self, fn: Callable, *args: Any) -> Callable:
        """The counting pass's callable for arguments like ``args``: what ``compile`` gives,
        unless a cheaper compilation executes the same operations (it is never timed)."""
        return self.compile(fn)

    @abstractmethod
    def synchronize(self, tree: Any) -> None:
        """Block until every array in ``tree`` is computed."""

    @abstractmethod
    def iterate(self, step: Callable[[Any], Any], state: Any, K: int) -> Any:
        """K applications of ``step``, differentiable in reverse mode (scan / Python loop)."""

    @abstractmethod
    def while_loop(self, cond: Callable[[Any], Any], body: Callable[[Any], Any], init: Any) -> Any:
        """``while cond(s): s = body(s)``; used by iterative linear solvers."""

    # ---- derivatives --------------------------------------------------------------------
    @abstractmethod
    def value_and_grad(self, f: Callable[[Any], Any], theta: Any) -> tuple[Any, Any]:
        """(f(θ), ∇f(θ)) by reverse mode through everything f does."""

    @abstractmethod
    def vjp(
        self, f: Callable[..., Any], *primals: Any, count: str = "vjp_evals"
    ) -> tuple[Any, Callable[[Any], tuple]]:
        """(f(p), v ↦ vᵀ ∂f/∂p for each primal). The linearisation is built once and reused;
        each application of the pullback counts one operation of kind ``count``."""

    @abstractmethod
    def jvp(
        self, f: Callable[..., Any], primals: tuple, tangents: tuple, batched: bool = False
    ) -> tuple[Any, Any]:
        """(f(p), ∂f/∂p · t) by forward mode; no tape, memory independent of f's length.

        With ``batched`` every tangent carries a leading axis of width w and all w directions
        are pushed through together (the tangent output has that leading axis too). While f
        runs, each application of the instrumented step counts w JVPs.
        """

    def jvp_columns(self, f: Callable[[Any], Any], x: Any, tangents: Any) -> Any:
        """(∂f/∂x · t_j)_j for the rows t_j of ``tangents`` (w, dim x), pushed through
        together (a Jacobian's columns, or block columns; uncounted: the caller ticks)."""
        return self.jvp(f, (x,), (tangents,), batched=True)[1]

    @abstractmethod
    def jacobian(self, f: Callable[[Any], Any], x: Any) -> Any:
        """The dense Jacobian ∂f/∂x by forward mode (dim x JVPs, batched)."""

    def solve_in_place(self, A: Any, b: Any) -> Any:
        """``solve(A, b)`` where A is a temporary the caller drops: a framework may overwrite
        it with its factors instead of factoring a copy (one matrix in memory, not two)."""
        return self.solve(A, b)

    def solve_spd(self, A: Any, b: Any) -> Any:
        """A z = b for symmetric positive definite A (…, m, m), b (…, m, k): Cholesky, half
        of LU's m³ flops, no pivoting; only A's lower triangle is read. (Default: LU.)"""
        return self.solve(A, b)

    def solve_spd_in_place(self, A: Any, b: Any) -> Any:
        """``solve_spd(A, b)`` where A is a temporary the caller drops (see
        :meth:`solve_in_place`)."""
        return self.solve_spd(A, b)

    @abstractmethod
    def solve(self, A: Any, b: Any) -> Any:
        """Dense solve of A z = b (LU)."""

    def solve_upper_triangular(self, R: Any, b: Any) -> Any:
        """R z = b for upper triangular R (…, m, m), b (…, m, k): back substitution, Θ(m²)."""
        return self.solve(R, b)

    @abstractmethod
    def stop_gradient(self, tree: Any) -> Any:
        """``tree`` cut from the tape: no derivative flows through it."""

    @abstractmethod
    def checkpoint(self, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """``fn(state, theta)`` that stores only its inputs and is recomputed in the backward
        pass (``jax.checkpoint``; reentrant ``torch.utils.checkpoint``)."""

    # ---- control flow for schedules ------------------------------------------------------
    @abstractmethod
    def fori_loop(self, lower: Any, upper: Any, body: Callable[[Any, Any], Any], init: Any) -> Any:
        """``for i in range(lower, upper): s = body(i, s)``; bounds may be traced integers."""

    def repeat(self, body: Callable[[Any], Any], state: Any, count: Any) -> Any:
        """``count`` applications of ``body`` where ``count`` may be a traced integer."""
        return self.fori_loop(0, count, lambda _, s: body(s), state)

    @abstractmethod
    def switch(self, index: Any, branches: list[Callable[[Any], Any]], operand: Any) -> Any:
        """``branches[index](operand)``; all branches return the same structure."""

    @abstractmethod
    def sequential_map(self, fn: Callable[[Any], Any], n: int) -> Any:
        """``stack([fn(j) for j in range(n)])``, one j at a time (j is an integer array)."""

    @abstractmethod
    def index_update(self, buffer: Any, index: Any, value: Any) -> Any:
        """A copy of ``buffer`` with ``buffer[index] = value`` (functional in every framework)."""

    def dynamic_slice(self, buffer: Any, start: Any, size: int, axis: int = 0) -> Any:
        """``buffer[start:start + size]`` along ``axis``; ``size`` static, ``start`` may be a
        traced integer (with ``start + size`` within the buffer)."""
        index = [slice(None)] * axis + [slice(int(start), int(start) + size)]
        return buffer[tuple(index)]

    def dynamic_update_slice(self, buffer: Any, start: Any, value: Any, axis: int = 0) -> Any:
        """A copy of ``buffer`` with ``value`` written from index ``start`` along ``axis``;
        ``start`` may be a traced integer."""
        out = self.xp.asarray(buffer, copy=True)
        index = [slice(None)] * axis + [slice(int(start), int(start) + value.shape[axis])]
        out[tuple(index)] = value
        return out

    def tree_map(self, f: Callable[..., Any], *trees: Any) -> Any:
        """Map over states that are arrays or (nested) tuples of arrays."""
        head = trees[0]
        if isinstance(head, tuple | list):
            return type(head)(self.tree_map(f, *parts) for parts in zip(*trees, strict=True))
        return f(*trees)

    def hold_for_backward(self, *arrays: Any) -> None:
        """Declare arrays a strategy keeps outside the framework's tape for its backward pass
        (snapshots, reversible buffers), so that ``trace_bytes`` counts them. JAX's buffer
        assignment sees them already; torch's saved-tensor meter does not."""
        return None

    # ---- meters -------------------------------------------------------------------------
    @abstractmethod
    def trace_bytes(self, program: Callable, *args: Any) -> int:
        """Deterministic bytes the program keeps for its backward pass (see README)."""

    def device_peak_bytes(self, fn: Callable[[], Any]) -> int | None:
        """Peak device-allocator bytes of ``fn()`` above the start (accelerators only)."""
        return None

    # ---- counting pass ------------------------------------------------------------------
    @contextmanager
    def counting(self, counter: OpCounter) -> Iterator[OpCounter]:
        self.counter = counter
        try:
            yield counter
        finally:
            self.counter = None

    @abstractmethod
    def tick(self, kind: str, like: Any, times: int = 1) -> None:
        """Count ``times`` operations of ``kind`` each time this point executes.

        ``like`` is an array the counted operation depends on: under tracing it keeps the
        count inside the loop that executes it (a dependency-free callback would be hoisted).
        """

    @abstractmethod
    def wrap_step(
        self, step: Callable[[Any, Any], Any], reverse: bool
    ) -> Callable[[Any, Any], Any]:
        """``step`` instrumented to count its applications (and, inside ``jvp``, the JVPs).

        With ``reverse`` the strategy differentiates through steps by reverse-mode autodiff
        and the VJPs taken through each application are counted too.
        """


def first_leaf(tree: Any) -> Any:
    """The first array of a state that may be an array or a (nested) tuple of arrays."""
    while isinstance(tree, tuple | list):
        tree = tree[0]
    return tree
