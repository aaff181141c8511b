"""PyTorch adapter: eager autograd, Python loops, ``torch.func.jacfwd`` for dense Jacobians.

Reverse mode uses ``torch.autograd`` rather than ``torch.func`` on purpose: ``torch.func``
transforms disable saved-tensor hooks, and those hooks are how ``trace_bytes`` is measured.
torch is imported lazily so that ``list`` works (and says why) where torch is not installed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from suite.plugin.framework import Framework, first_leaf


class _Saved:
    """What autograd holds instead of a saved tensor, so we learn when it lets go of it.

    It keeps a detached alias (same storage, no ``grad_fn``): holding the tensor itself would,
    for a saved *output*, close a cycle tensor → grad_fn → saved variable → holder → tensor
    that runs through C++ where the garbage collector cannot see, and a graph kept for
    several backward passes (``retain_graph``) would then never be freed.
    """

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: Any):
        self.tensor = tensor.detach()


class SavedTensorMeter:
    """High-water mark of bytes autograd holds for backward, de-duplicated by storage.

    A storage counts from the first time a tensor on it is saved until the last saved
    reference to it is released (the graph is freed). Storages of the program's inputs
    (θ and instance data) are excluded: saving an input keeps no new memory.
    """

    def __init__(self, exclude_storages: set[int]):
        self.exclude = exclude_storages
        self.live: dict[int, list[int]] = {}
        self.live_bytes = 0
        self.peak_bytes = 0

    def pack(self, tensor: Any) -> _Saved:
        holder = _Saved(tensor)
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse / meta tensors have no storage
            return holder
        key = storage.data_ptr()
        if key == 0 or key in self.exclude:
            return holder
        entry = self.live.get(key)
        if entry is None:
            self.live[key] = [1, storage.nbytes()]
            self.live_bytes += storage.nbytes()
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        else:
            entry[0] += 1
        weakref.finalize(holder, self._release, key)
        return holder

    def hold(self, tensor: Any) -> None:
        """Count a tensor a strategy keeps outside autograd until it is garbage."""
        holder = self.pack(tensor)
        weakref.finalize(tensor, lambda h=holder: h)  # keeps the holder alive as long as tensor

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live_bytes -= entry[1]
            del self.live[key]

    @staticmethod
    def unpack(holder: _Saved) -> Any:
        return holder.tensor


#: bytes of tangents one eager vmap of jvp pushes at once (see ``jvp_columns``)
JVP_CHUNK_BYTES = 64 * 1024
#: … in at most this many pushes: each push reads every operand of f again (gd, n = 2000: its
#: 4000 × 2000 data, 64 MB), so 500 pushes of 4 tangents made a dense ∂F/∂x cost ≈ 70 s
MAX_JVP_PUSHES = 16


class TorchFramework(Framework):
    name = "torch"
    order = 0  # listed first, and the first adapter references try (eager: no tracing limits)
    packages = ("torch",)
    # torch._dynamo and the JVP decompositions load (with sympy) on the first checkpointed or
    # forward-mode gradient: 1.4 s that every such point would pay again
    preload = ("torch", "array_api_compat.torch", "torch._dynamo",
               "torch._decomp.decompositions_for_jvp")

    def __init__(self, device: str, dtype: str):
        super().__init__(device, dtype)
        import array_api_compat.torch as xp_torch
        import torch

        self._torch = torch
        self._xp = xp_torch
        self._device = torch.device(device)
        self._dtype = getattr(torch, dtype)
        self._meter: SavedTensorMeter | None = None
        self._jvp_width = 0  # tangent directions of the jvp in progress (0: none)

    @classmethod
    def unavailable_reason(cls, device: str = "cpu") -> str | None:
        try:
            import torch
        except ImportError:
            return "torch is not installed (make setup installs TORCH_SPEC)"
        if device == "cuda" and not torch.cuda.is_available():
            return "torch was built without CUDA or no CUDA device is visible"
        return None

    @classmethod
    def configure_threads(cls, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already fixed once parallel work ran; the env var covers it
            pass

    # ---- arrays -------------------------------------------------------------------------
    @property
    def xp(self) -> Any:
        return self._xp

    def asarray(self, a: np.ndarray) -> Any:
        a = np.asarray(a)
        dtype = self._dtype if np.issubdtype(a.dtype, np.floating) else None
        return self._torch.as_tensor(a, dtype=dtype, device=self._device).contiguous()

    def to_numpy(self, a: Any) -> np.ndarray:
        a = a.detach().to("cpu")
        return (a.to(self._torch.float64) if a.is_floating_point() else a).numpy()

    # ---- execution ----------------------------------------------------------------------
    def compile(self, fn: Callable) -> Callable:
        return fn

    def synchronize(self, tree: Any) -> None:
        if self._device.type == "cuda":
            self._torch.cuda.synchronize(self._device)

    def iterate(self, step: Callable[[Any], Any], state: Any, K: int) -> Any:
        for _ in range(K):
            state = step(state)
        return state

    def while_loop(self, cond: Callable[[Any], Any], body: Callable[[Any], Any], init: Any) -> Any:
        state = init
        while bool(cond(state)):
            state = body(state)
        return state

    # ---- derivatives --------------------------------------------------------------------
    def value_and_grad(self, f: Callable[[Any], Any], theta: Any) -> tuple[Any, Any]:
        torch = self._torch
        leaf = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            value = f(leaf)
        # .backward() rather than autograd.grad: reentrant checkpointing supports only the former
        value.backward()
        grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        return value.detach(), grad

    def vjp(
        self, f: Callable[..., Any], *primals: Any, count: str = "vjp_evals"
    ) -> tuple[Any, Callable[[Any], tuple]]:
        torch = self._torch
        flat_in, rebuild_in = _flatten(primals)
        leaves = [p.detach().requires_grad_(True) for p in flat_in]
        with torch.enable_grad():
            out = f(*rebuild_in(leaves))
        flat_out, rebuild_out = _flatten(out)

        def pullback(cotangent: Any) -> tuple:
            self.tick(count, cotangent)
            flat_ct, _ = _flatten(cotangent)
            # outputs that do not depend on the inputs (a constant s₀, say) contribute nothing
            live = [(o, c) for o, c in zip(flat_out, flat_ct, strict=True) if o.requires_grad]
            grads: Any = [None] * len(leaves)
            if live:
                grads = torch.autograd.grad([o for o, _ in live], leaves, [c for _, c in live],
                                            retain_graph=True, allow_unused=True)
            return rebuild_in([torch.zeros_like(p) if g is None else g
                               for p, g in zip(leaves, grads, strict=True)])

        return rebuild_out([o.detach() for o in flat_out]), pullback

    def jvp(
        self, f: Callable[..., Any], primals: tuple, tangents: tuple, batched: bool = False
    ) -> tuple[Any, Any]:
        torch = self._torch
        width = int(tangents[0].shape[0]) if batched else 1
        previous, self._jvp_width = self._jvp_width, width
        try:
            if batched:
                # functorch: vmap over tangent directions of a jvp; the primal is computed once
                def one(*t: Any) -> tuple[Any, Any]:
                    return torch.func.jvp(f, primals, t)

                with _forward_fast_paths():
                    return torch.func.vmap(one, out_dims=(None, 0))(*tangents)
            import torch.autograd.forward_ad as fwAD

            # dual tensors: the cheapest forward mode in eager torch (no functorch wrapping)
            with fwAD.dual_level(), _forward_fast_paths():
                duals = [fwAD.make_dual(p, t) for p, t in zip(primals, tangents, strict=True)]
                out = fwAD.unpack_dual(f(*duals))
                tangent = out.tangent if out.tangent is not None else torch.zeros_like(out.primal)
                return out.primal, tangent
        finally:
            self._jvp_width = previous

    def jacobian(self, f: Callable[[Any], Any], x: Any) -> Any:
        self.tick("jvp_evals", x, times=x.numel())
        return self._torch.func.jacfwd(f)(x)

    def jvp_columns(self, f: Callable[[Any], Any], x: Any, tangents: Any) -> Any:
        # as jacfwd does it (vmap of jvp), without the eager fast paths of ``jvp``: they are
        # written for dual tensors and do not compose with functorch's batched tangents.
        # JVP_CHUNK_BYTES of tangents at a time: eager vmap holds every intermediate for all
        # the tangents it pushes at once (qp, n = 50, batch 4: 112 tangents, 10.1 MB peak);
        # below that, one push, since splitting and re-joining the columns costs a copy; and at
        # most MAX_JVP_PUSHES pushes, whose intermediates are then 1/16 of all the tangents'
        # (gd, n = 2000: 125 tangents a push, ≈ 6 MB beside the 32 MB Jacobian they build)
        torch = self._torch
        count = tangents.shape[0]
        chunk = max(1, JVP_CHUNK_BYTES // max(1, tangents[0].numel() * tangents.element_size()),
                    -(-count // MAX_JVP_PUSHES))
        return torch.func.vmap(lambda t: torch.func.jvp(f, (x,), (t,))[1],
                               chunk_size=chunk if chunk < count else None)(tangents)

    def solve(self, A: Any, b: Any) -> Any:
        return self._torch.linalg.solve(A, b)

    def solve_upper_triangular(self, R: Any, b: Any) -> Any:
        return self._torch.linalg.solve_triangular(R, b, upper=True)

    def solve_spd(self, A: Any, b: Any) -> Any:
        return self._torch.cholesky_solve(b, self._torch.linalg.cholesky(A))

    def solve_spd_in_place(self, A: Any, b: Any) -> Any:
        # potrf overwrites its input; for a symmetric A either memory layout is the same
        # matrix, so the factor is written where A lies (out= aliasing A)
        torch = self._torch
        if A.requires_grad:
            return self.solve_spd(A, b)
        info = torch.empty(A.shape[:-2], dtype=torch.int32, device=A.device)
        L, _ = torch.linalg.cholesky_ex(A, check_errors=True, out=(A, info))
        return torch.cholesky_solve(b, L)

    def solve_in_place(self, A: Any, b: Any) -> Any:
        # torch.linalg.solve factors a column-major copy of A; LAPACK's getrf overwrites
        # its input, so A stored column-major is factored where it lies (out= aliasing A)
        torch = self._torch
        if A.requires_grad:  # out= does not differentiate
            return self.solve(A, b)
        adjoint = not A.mT.is_contiguous()
        if adjoint:  # A row-major: factor the column-major Aᵀ in its memory, solve Aᵀᵀ
            A = A.contiguous().mT
        pivots = torch.empty(A.shape[:-1], dtype=torch.int32, device=A.device)
        info = torch.empty(A.shape[:-2], dtype=torch.int32, device=A.device)
        # check_errors: a singular block raises, as torch.linalg.solve does
        LU, pivots, _ = torch.linalg.lu_factor_ex(A, check_errors=True, out=(A, pivots, info))
        return torch.linalg.lu_solve(LU, pivots, b, adjoint=adjoint)

    def stop_gradient(self, tree: Any) -> Any:
        return self.tree_map(lambda a: a.detach(), tree)

    def checkpoint(self, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        torch = self._torch

        def run(state: Any, theta: Any) -> Any:
            leaves, rebuild = _flatten(state)
            holder: dict[str, Any] = {}

            def inner(*args: Any) -> tuple:
                out = fn(rebuild(list(args[:-1])), args[-1])
                out_leaves, holder["rebuild"] = _flatten(out)
                return tuple(out_leaves)

            # Reentrant checkpoint is an autograd.Function: it saves its inputs through
            # ctx.save_for_backward and recomputes under grad in backward, so the saved-tensor
            # meter sees both. (The non-reentrant variant hides both behind its own hooks.)
            out = torch.utils.checkpoint.checkpoint(inner, *leaves, theta, use_reentrant=True,
                                                    preserve_rng_state=False)
            return holder["rebuild"](list(out))

        return run

    # ---- control flow -------------------------------------------------------------------
    def fori_loop(self, lower: Any, upper: Any, body: Callable[[Any, Any], Any], init: Any) -> Any:
        state = init
        for i in range(int(lower), int(upper)):
            state = body(i, state)
        return state

    def switch(self, index: Any, branches: list[Callable[[Any], Any]], operand: Any) -> Any:
        return branches[int(index)](operand)

    def sequential_map(self, fn: Callable[[Any], Any], n: int) -> Any:
        torch = self._torch
        return torch.stack([fn(torch.tensor(j, device=self._device)) for j in range(n)])

    def index_update(self, buffer: Any, index: Any, value: Any) -> Any:
        # functional, like JAX: an in-place write would also change every view taken of the
        # buffer earlier (h[i] read before h[i] is rotated, say), which generic code relies on
        out = buffer.clone()
        out[int(index)] = value
        return out

    def hold_for_backward(self, *arrays: Any) -> None:
        if self._meter is not None:
            for a in arrays:
                self._meter.hold(a)

    # ---- meters -------------------------------------------------------------------------
    counts_while_tracing = True

    def trace_bytes(self, program: Callable, *args: Any) -> int:
        torch = self._torch
        inputs: set[int] = set()
        for a in _leaves(args):
            if isinstance(a, torch.Tensor):
                inputs.add(a.untyped_storage().data_ptr())
        meter = SavedTensorMeter(inputs)
        self._meter = meter
        try:
            with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
                out = program(*args)
                self.synchronize(out)
            del out
        finally:
            self._meter = None
        return meter.peak_bytes

    def device_peak_bytes(self, fn: Callable[[], Any]) -> int | None:
        if self._device.type != "cuda":
            return None
        torch = self._torch
        torch.cuda.synchronize(self._device)
        torch.cuda.reset_peak_memory_stats(self._device)
        base = torch.cuda.memory_allocated(self._device)
        out = fn()
        torch.cuda.synchronize(self._device)
        peak = torch.cuda.max_memory_allocated(self._device) - base
        del out
        return int(peak)

    # ---- counting pass ------------------------------------------------------------------
    def tick(self, kind: str, like: Any, times: int = 1) -> None:
        if self.counter is not None:
            self.counter.add(kind, times)

    def wrap_step(
        self, step: Callable[[Any, Any], Any], reverse: bool
    ) -> Callable[[Any, Any], Any]:
        counter = self.counter
        if counter is None:
            return step

        def counted(state: Any, theta: Any) -> Any:
            counter.add("step_evals")
            if self._jvp_width:
                counter.add("jvp_evals", self._jvp_width)
            out = step(state, theta)
            leaf = first_leaf(out)
            if reverse and leaf.requires_grad:
                # fires once per backward pass through this application of T
                leaf.register_hook(lambda grad: counter.add("vjp_evals"))
            return out

        return counted


def _forward_fast_paths() -> Any:
    """A TorchFunctionMode that keeps eager forward-mode AD off torch's slow paths.

    In torch 2.13, forward-mode AD sends two common elementwise cases through a Python
    decomposition (≈ 140 µs per op instead of ≈ 3 µs): arithmetic between a dual tensor and a
    Python number, and between a dual tensor and a plain tensor (instance data, which has no
    tangent). On ``gd`` that made a forward sweep ≈ 25× slower than the solve. The mode routes
    the first case to aten's ``.Scalar`` overloads and applies the (linear) tangent rule of
    +, −, ×, ÷ itself in the second. Same math; without it ``forward`` would measure the slow
    path rather than forward mode.
    """
    import torch
    import torch.autograd.forward_ad as fwAD
    from torch.overrides import TorchFunctionMode

    T, aten = torch.Tensor, torch.ops.aten
    kinds: dict[Any, str] = {}
    for kind, funcs in (
        ("mul", (T.__mul__, T.__rmul__, T.mul, torch.mul, torch.multiply)),
        ("add", (T.__add__, T.__radd__, T.add, torch.add)),
        ("sub", (T.__sub__, T.sub, torch.sub, torch.subtract)),
        ("rsub", (T.__rsub__,)),
        ("div", (T.__truediv__, T.div, torch.div, torch.true_divide, torch.divide)),
        ("rdiv", (T.__rtruediv__,)),
    ):
        for func in funcs:
            kinds[func] = kind
    scalar_overload = {"mul": aten.mul.Scalar, "add": aten.add.Scalar, "sub": aten.sub.Scalar,
                       "rsub": aten.rsub.Scalar, "div": aten.div.Scalar}

    def parts(x: Any) -> tuple[Any, Any]:
        unpacked = fwAD.unpack_dual(x)
        return unpacked.primal, unpacked.tangent

    def rule(kind: str, a: Any, b: Any) -> Any:
        """a ∘ b with exactly one of a, b dual; returns a dual tensor."""
        (pa, ta), (pb, tb) = parts(a), parts(b)
        if kind in ("rsub", "rdiv"):  # b ∘ a with the roles of T.__rsub__ / __rtruediv__
            kind, (pa, ta), (pb, tb) = kind[1:], (pb, tb), (pa, ta)
        if kind == "mul":
            out = pa * pb
            tangent = ta * pb if ta is not None else pa * tb
        elif kind == "add":
            out = pa + pb
            tangent = ta if ta is not None else tb
        elif kind == "sub":
            out = pa - pb
            tangent = ta if ta is not None else -tb
        else:  # div
            out = pa / pb
            tangent = ta / pb if ta is not None else -(pa * tb) / (pb * pb)
        return fwAD.make_dual(out, torch.broadcast_to(tangent, out.shape).contiguous())

    class ForwardFastPaths(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kind = kinds.get(func)
            if kind is not None and not kwargs and len(args) == 2 and isinstance(args[0], T):
                a, b = args
                if not a.dtype.is_floating_point:
                    return func(*args)
                if isinstance(b, int | float) and not isinstance(b, bool):
                    if kind in scalar_overload:
                        return scalar_overload[kind](a, b)
                elif isinstance(b, T) and b.dtype == a.dtype:
                    a_dual, b_dual = parts(a)[1] is not None, parts(b)[1] is not None
                    if a_dual != b_dual:
                        return rule(kind, a, b)
            return func(*args, **(kwargs or {}))

    return ForwardFastPaths()


def _first(flat: list[Any]) -> Any:
    return flat[0]


def _flatten(tree: Any) -> tuple[list[Any], Callable[[list[Any]], Any]]:
    """Leaves of an array-or-nested-tuple state, and the inverse."""
    if isinstance(tree, tuple | list):
        parts = [_flatten(t) for t in tree]
        # the rebuild closure keeps the structure only, never the leaves: it can outlive them
        # (reentrant checkpoint stores it with the recomputed segment, whose graph it would
        # otherwise keep alive until the whole backward pass ends)
        subs, sizes, kind = [sub for _, sub in parts], [len(leaves) for leaves, _ in parts], \
            type(tree)
        leaves = [leaf for part_leaves, _ in parts for leaf in part_leaves]
        del parts

        def rebuild(flat: list[Any]) -> Any:
            out, i = [], 0
            for sub, size in zip(subs, sizes, strict=True):
                out.append(sub(flat[i:i + size]))
                i += size
            return kind(out)

        return leaves, rebuild
    return [tree], _first


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in _leaves(v)]
    if isinstance(tree, tuple | list):
        return [leaf for v in tree for leaf in _leaves(v)]
    return [tree]
