"""JAX adapter: ``jax.jit`` programs, ``lax.scan`` / ``lax.while_loop`` loops, ``jacfwd``.

``trace_bytes`` is XLA's own buffer assignment for the compiled program
(``memory_analysis().temp_size_in_bytes``): every temporary the gradient needs at once,
including the per-step residuals a reverse-mode scan stacks. float64 is enabled process-wide;
float32 runs use float32 arrays explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np

from suite.frameworks.base import Framework, OpCounter


class JaxFramework(Framework):
    name = "jax"

    def __init__(self, device: str, dtype: str):
        super().__init__(device, dtype)
        import jax

        jax.config.update("jax_enable_x64", True)
        self._jax = jax
        self._device = jax.devices("gpu" if device == "cuda" else "cpu")[0]
        self._np_dtype = np.dtype(dtype)

    @classmethod
    def unavailable_reason(cls, device: str = "cpu") -> str | None:
        try:
            import jax
        except ImportError:
            return "jax is not installed (make setup installs it)"
        if device == "cuda":
            try:
                jax.devices("gpu")
            except RuntimeError:
                return "jax has no GPU backend here (install jax[cuda12] on a GPU machine)"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        try:
            import jax
            import jaxlib
        except ImportError:
            return {}
        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}

    @classmethod
    def configure_threads(cls, threads: int) -> None:
        # XLA reads its thread settings from XLA_FLAGS at import; the worker sets them (and the
        # CPU affinity that bounds every pool) before importing jax. Nothing to do afterwards.
        return None

    # ---- arrays -------------------------------------------------------------------------
    @property
    def xp(self) -> Any:
        return self._jax.numpy

    def asarray(self, a: np.ndarray) -> Any:
        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.floating):
            a = a.astype(self._np_dtype)
        return self._jax.device_put(a, self._device)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)

    # ---- execution ----------------------------------------------------------------------
    def compile(self, fn: Callable) -> Callable:
        return self._jax.jit(fn)

    def synchronize(self, tree: Any) -> None:
        self._jax.block_until_ready(tree)

    def iterate(self, step: Callable[[Any], Any], state: Any, K: int) -> Any:
        final, _ = self._jax.lax.scan(lambda s, _: (step(s), None), state, None, length=K)
        return final

    def while_loop(self, cond: Callable[[Any], Any], body: Callable[[Any], Any], init: Any) -> Any:
        return self._jax.lax.while_loop(cond, body, init)

    # ---- derivatives --------------------------------------------------------------------
    def value_and_grad(self, f: Callable[[Any], Any], theta: Any) -> tuple[Any, Any]:
        return self._jax.value_and_grad(f)(theta)

    def vjp(
        self, f: Callable[..., Any], *primals: Any, count: str = "vjp_evals"
    ) -> tuple[Any, Callable[[Any], tuple]]:
        out, pullback = self._jax.vjp(f, *primals)

        def counted_pullback(cotangent: Any) -> tuple:
            self.tick(count, cotangent)
            return pullback(cotangent)

        return out, counted_pullback

    def jacobian(self, f: Callable[[Any], Any], x: Any) -> Any:
        self.tick("jvp_evals", x, times=x.size)
        return self._jax.jacfwd(f)(x)

    def solve(self, A: Any, b: Any) -> Any:
        return self._jax.numpy.linalg.solve(A, b)

    # ---- meters -------------------------------------------------------------------------
    def trace_bytes(self, program: Callable, *args: Any) -> int:
        compiled = self._jax.jit(program).lower(*args).compile()
        return int(compiled.memory_analysis().temp_size_in_bytes)

    def device_peak_bytes(self, fn: Callable[[], Any]) -> int | None:
        if self._device.platform == "cpu":
            return None
        # XLA's GPU allocator keeps a lifetime high-water mark that cannot be reset. The warm-up
        # call ran the same program from the same base, so (lifetime peak − bytes live now) is
        # this call's peak above its start.
        base = self._device.memory_stats()["bytes_in_use"]
        out = fn()
        self._jax.block_until_ready(out)
        peak = self._device.memory_stats()["peak_bytes_in_use"] - base
        del out
        return int(peak)

    # ---- counting pass ------------------------------------------------------------------
    @contextmanager
    def counting(self, counter: OpCounter) -> Iterator[OpCounter]:
        with super().counting(counter):
            try:
                yield counter
            finally:
                # debug callbacks may still be in flight when the outputs are ready
                self._jax.effects_barrier()

    def tick(self, kind: str, like: Any, times: int = 1) -> None:
        if self.counter is not None:
            self._jax.debug.callback(partial(_count, self.counter, kind, times), like)

    def wrap_step(self, step: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        if self.counter is None:
            return step
        jax = self._jax
        tick = self.tick

        # A custom VJP that is the step's own VJP plus a counter in each direction; only
        # the counting pass runs it. (Forward-mode strategies will need a custom_jvp twin.)
        @jax.custom_vjp
        def counted(state: Any, theta: Any) -> Any:
            tick("step_evals", state)
            return step(state, theta)

        def fwd(state: Any, theta: Any) -> tuple[Any, Any]:
            out, pullback = jax.vjp(step, state, theta)
            tick("step_evals", state)
            return out, pullback

        def bwd(pullback: Any, cotangent: Any) -> tuple[Any, Any]:
            tick("vjp_evals", cotangent)
            return pullback(cotangent)

        counted.defvjp(fwd, bwd)
        return counted


def _count(counter: Any, kind: str, times: int, _dependency: Any) -> None:
    counter.add(kind, times)
