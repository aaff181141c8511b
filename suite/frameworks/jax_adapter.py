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

from suite.plugin.framework import Framework, OpCounter


class JaxFramework(Framework):
    name = "jax"
    order = 1
    packages = ("jax", "jaxlib")
    compiles = True
    static_shapes = True
    preload = ("jax", "jax.numpy")

    def __init__(self, device: str, dtype: str):
        super().__init__(device, dtype)
        import jax

        jax.config.update("jax_enable_x64", True)
        self._jax = jax
        self._device = jax.devices("gpu" if device == "cuda" else "cpu")[0]
        self._np_dtype = np.dtype(dtype)
        self._jvp_width = 0  # tangent directions of the jvp being traced (0: none)

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
        out = np.asarray(a)
        return out.astype(np.float64) if np.issubdtype(out.dtype, np.floating) else out

    # ---- execution ----------------------------------------------------------------------
    def compile(self, fn: Callable) -> Callable:
        return self._jax.jit(fn)

    def compile_shared(self, fn: Callable, *args: Any) -> Callable:
        from suite import run_cache

        return run_cache.compiled(self._jax.jit(fn).lower(*args))

    def compile_for_counting(self, fn: Callable, *args: Any) -> Callable:
        # The counters are host callbacks with effects, which XLA neither removes nor
        # duplicates at any optimisation level. Backend optimisations off halve the compile
        # time (gd, unrolled, K = 1000: 0.6 s, not 1.3 s); the loop-based fusion code
        # generator instead of the fusion emitters halves it again (17 programs of gd, savi,
        # qp, softmax and deq at K = 100: 3.7 s in all, not 8.3 s), with identical counts.
        return self._jax.jit(fn).lower(*args).compile(
            compiler_options={"xla_backend_optimization_level": 0,
                              "xla_cpu_use_fusion_emitters": False})

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

    def jvp(
        self, f: Callable[..., Any], primals: tuple, tangents: tuple, batched: bool = False
    ) -> tuple[Any, Any]:
        jax = self._jax
        width = int(tangents[0].shape[0]) if batched else 1
        previous, self._jvp_width = self._jvp_width, width  # read at trace time by wrap_step
        try:
            if batched:
                return jax.vmap(lambda *t: jax.jvp(f, primals, t), out_axes=(None, 0))(*tangents)
            return jax.jvp(f, primals, tangents)
        finally:
            self._jvp_width = previous

    def jacobian(self, f: Callable[[Any], Any], x: Any) -> Any:
        self.tick("jvp_evals", x, times=x.size)
        return self._jax.jacfwd(f)(x)

    def solve(self, A: Any, b: Any) -> Any:
        return self._jax.numpy.linalg.solve(A, b)

    def solve_upper_triangular(self, R: Any, b: Any) -> Any:
        from jax.scipy.linalg import solve_triangular

        return solve_triangular(R, b, lower=False)

    def solve_spd(self, A: Any, b: Any) -> Any:
        linalg = self._jax.lax.linalg
        # A is symmetric by the caller's word: no (A + Aᵀ)/2 pass (jnp.linalg.cholesky's)
        L = linalg.cholesky(A, symmetrize_input=False)
        y = linalg.triangular_solve(L, b, left_side=True, lower=True)
        return linalg.triangular_solve(L, y, left_side=True, lower=True, transpose_a=True)

    def stop_gradient(self, tree: Any) -> Any:
        return self._jax.lax.stop_gradient(tree)

    def checkpoint(self, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        return self._jax.checkpoint(fn)

    # ---- control flow -------------------------------------------------------------------
    def fori_loop(self, lower: Any, upper: Any, body: Callable[[Any, Any], Any], init: Any) -> Any:
        return self._jax.lax.fori_loop(lower, upper, body, init)

    def switch(self, index: Any, branches: list[Callable[[Any], Any]], operand: Any) -> Any:
        return self._jax.lax.switch(index, branches, operand)

    def sequential_map(self, fn: Callable[[Any], Any], n: int) -> Any:
        return self._jax.lax.map(fn, self._jax.numpy.arange(n))

    def index_update(self, buffer: Any, index: Any, value: Any) -> Any:
        return buffer.at[index].set(value)

    def dynamic_slice(self, buffer: Any, start: Any, size: int, axis: int = 0) -> Any:
        return self._jax.lax.dynamic_slice_in_dim(buffer, start, size, axis=axis)

    def dynamic_update_slice(self, buffer: Any, start: Any, value: Any, axis: int = 0) -> Any:
        return self._jax.lax.dynamic_update_slice_in_dim(buffer, value, start, axis=axis)

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

    def wrap_step(
        self, step: Callable[[Any, Any], Any], reverse: bool
    ) -> Callable[[Any, Any], Any]:
        if self.counter is None:
            return step
        jax = self._jax
        tick = self.tick

        if not reverse:
            # a plain callback on the primal: fires once per application, also inside jvp
            def primal_counted(state: Any, theta: Any) -> Any:
                leaf = jax.tree_util.tree_leaves(state)[0]
                tick("step_evals", leaf)
                if self._jvp_width:
                    tick("jvp_evals", leaf, times=self._jvp_width)
                return step(state, theta)

            return primal_counted

        # A custom VJP that is the step's own VJP plus a counter in each direction; only
        # the counting pass runs it, and only for strategies that differentiate through steps
        # by reverse mode (a custom_vjp cannot be pushed forward by jvp). closure_convert
        # hoists the instance arrays the step closes over into explicit arguments, which
        # custom_vjp needs under jax.checkpoint.
        def counted(state: Any, theta: Any) -> Any:
            closed, consts = jax.closure_convert(step, state, theta)

            @jax.custom_vjp
            def run(state: Any, theta: Any, *consts: Any) -> Any:
                tick("step_evals", jax.tree_util.tree_leaves(state)[0])
                return closed(state, theta, *consts)

            def fwd(state: Any, theta: Any, *consts: Any) -> tuple[Any, Any]:
                out, pullback = jax.vjp(closed, state, theta, *consts)
                tick("step_evals", jax.tree_util.tree_leaves(state)[0])
                return out, pullback

            def bwd(pullback: Any, cotangent: Any) -> tuple:
                tick("vjp_evals", jax.tree_util.tree_leaves(cotangent)[0])
                return pullback(cotangent)

            run.defvjp(fwd, bwd)
            return run(state, theta, *consts)

        return counted


def _count(counter: Any, kind: str, times: int, _dependency: Any) -> None:
    counter.add(kind, times)
