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

from suite.frameworks.base import Framework, first_leaf


class _Saved:
    """What autograd holds instead of a saved tensor, so we learn when it lets go of it."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: Any):
        self.tensor = tensor


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

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live_bytes -= entry[1]
            del self.live[key]

    @staticmethod
    def unpack(holder: _Saved) -> Any:
        return holder.tensor


class TorchFramework(Framework):
    name = "torch"

    def __init__(self, device: str, dtype: str):
        super().__init__(device, dtype)
        import array_api_compat.torch as xp_torch
        import torch

        self._torch = torch
        self._xp = xp_torch
        self._device = torch.device(device)
        self._dtype = getattr(torch, dtype)

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
    def versions(cls) -> dict[str, str]:
        try:
            import torch
        except ImportError:
            return {}
        return {"torch": torch.__version__}

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
        return a.detach().to("cpu", self._torch.float64).numpy()

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
        (grad,) = torch.autograd.grad(value, leaf)
        return value.detach(), grad

    def vjp(
        self, f: Callable[..., Any], *primals: Any, count: str = "vjp_evals"
    ) -> tuple[Any, Callable[[Any], tuple]]:
        torch = self._torch
        leaves = [p.detach().requires_grad_(True) for p in primals]
        with torch.enable_grad():
            out = f(*leaves)

        def pullback(cotangent: Any) -> tuple:
            self.tick(count, cotangent)
            grads = torch.autograd.grad(out, leaves, cotangent, retain_graph=True,
                                        allow_unused=True)
            return tuple(torch.zeros_like(p) if g is None else g
                         for p, g in zip(leaves, grads, strict=True))

        return out.detach(), pullback

    def jacobian(self, f: Callable[[Any], Any], x: Any) -> Any:
        self.tick("jvp_evals", x, times=x.numel())
        return self._torch.func.jacfwd(f)(x)

    def solve(self, A: Any, b: Any) -> Any:
        return self._torch.linalg.solve(A, b)

    # ---- meters -------------------------------------------------------------------------
    def trace_bytes(self, program: Callable, *args: Any) -> int:
        torch = self._torch
        inputs: set[int] = set()
        for a in _leaves(args):
            if isinstance(a, torch.Tensor):
                inputs.add(a.untyped_storage().data_ptr())
        meter = SavedTensorMeter(inputs)
        with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
            out = program(*args)
            self.synchronize(out)
        del out
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

    def wrap_step(self, step: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        counter = self.counter
        if counter is None:
            return step

        def counted(state: Any, theta: Any) -> Any:
            counter.add("step_evals")
            out = step(state, theta)
            leaf = first_leaf(out)
            if leaf.requires_grad:
                # fires once per backward pass through this application of T
                leaf.register_hook(lambda grad: counter.add("vjp_evals"))
            return out

        return counted


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in _leaves(v)]
    if isinstance(tree, tuple | list):
        return [leaf for v in tree for leaf in _leaves(v)]
    return [tree]
