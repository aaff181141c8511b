"""The problem protocol: what a strategy may ask of a problem, and nothing more.

A problem supplies, for parameters θ (``theta``) and an inner solver with state s:

* ``init(θ) → s₀``                 the solver's starting state (may depend on θ),
* ``step(s, θ) → s⁺``              one iteration T of the inner solver,
* ``solution(s, θ) → x``           the variables of the optimality conditions (iterate plus
                                    duals recovered from it; the identity for plain descent),
* ``residual(x, θ) → F``           optimality conditions, F(θ, x*) = 0 at a solution,
* ``loss(x, θ) → ℓ``               the scalar outer objective whose gradient dℓ/dθ is measured,
* ``reference_gradient(K, kind)``  optional: the float64 gradient a strategy is judged
                                    against (without it the suite computes both references,
                                    ``suite.references``).

The math is written once against an array namespace ``xp`` (``jax.numpy``,
``array_api_compat.torch``, or ``array_api_compat.numpy`` for references and residual checks),
so torch and JAX run the same formula on the same numbers. Instance data is generated in
numpy float64 from the seed and converted by the framework adapter. A problem written with one
framework's own calls declares it (``frameworks = ("torch",)``): the other framework's cells
are unsupported, and float64 checks run in the declared framework instead of numpy.

This protocol is public API: problems outside the package (``package.module:Class``,
``path/to/file.py:Class``, entry points ``ift_bench.problems``) implement it; see the README,
"Measuring your own problem".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from suite.plugin.options import Option

ReferenceKind = Literal["k_step", "converged"]
REFERENCE_KINDS: tuple[str, ...] = ("k_step", "converged")
#: the methods every problem implements (``solution``, ``reference_gradient`` and the rest
#: have defaults)
REQUIRED_METHODS: tuple[str, ...] = ("generate", "init", "step", "residual", "loss")
JACOBIAN_STRUCTURES: tuple[str, ...] = ("spd", "symmetric", "general")


@dataclass(frozen=True)
class Instance:
    """One problem instance in numpy float64: θ, the arrays the math reads, static scalars.

    ``arrays`` become framework arrays (traced arguments under ``jax.jit``); ``consts`` stay
    Python scalars and are baked into the program. Both are dumped to ``instance.npz``, with
    ``named``: views of θ under their own names (e.g. qp's ``q, h, b``), dumped only.
    """

    theta: np.ndarray
    arrays: dict[str, np.ndarray]
    consts: dict[str, float | int] = field(default_factory=dict)
    named: dict[str, np.ndarray] = field(default_factory=dict)

    def dump(self, path: Path) -> None:
        payload = {"theta": self.theta, **self.named, **self.arrays}
        payload.update({k: np.asarray(v) for k, v in self.consts.items()})
        np.savez(path, **payload)


class Problem(ABC):
    """A bilevel problem: an inner solver (init, step) and an outer loss, plus F and references.

    Subclasses document θ, x, T, F, ℓ and the reference in their docstring; the README's
    problem reference is written from it.
    """

    name: ClassVar[str]
    title: ClassVar[str] = ""
    #: what the size knob ``n`` means for this problem
    size_meaning: ClassVar[str] = "n: the problem's size knob"
    options: ClassVar[tuple[Option, ...]] = ()
    #: structure of ∂F/∂x at a solution: "spd" (symmetric positive definite, e.g. a Hessian),
    #: "symmetric" (indefinite, e.g. a KKT matrix in symmetric form) or "general"
    jacobian_structure: ClassVar[str] = "general"
    #: ∂F/∂x is symmetric positive definite at every x, not only near a solution (a Hessian of
    #: a convex function, say): ``ift-direct``, which runs at x_K however far K leaves it from
    #: the solution, may then factor it by Cholesky instead of LU (``check`` tests it at x₀)
    jacobian_spd_everywhere: ClassVar[bool] = False
    #: the one framework the math is written for (e.g. ``("torch",)``), or None: written once
    #: against ``xp`` and run by every framework. The other framework's cells are unsupported.
    frameworks: ClassVar[tuple[str, ...] | None] = None
    #: modules ``generate`` imports that are slow to import (a dataset loader): a sweep's fork
    #: server imports them once instead of every point paying for it
    preload: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> Instance:
        """Instance data for size ``n`` drawn from ``seed`` (numpy float64, deterministic)."""

    @abstractmethod
    def init(self, xp: Any, d: Mapping[str, Any], theta: Any) -> Any:
        """s₀: the solver's starting state."""

    @abstractmethod
    def step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        """One solver iteration T(s, θ)."""

    def solution(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        """x(s): the flat vector F is defined on. Default: the state itself."""
        return state

    @abstractmethod
    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        """F(θ, x), a vector of the same length as x."""

    @abstractmethod
    def loss(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        """ℓ(x, θ), a scalar."""

    def reference_gradient(self, instance: Instance, K: int, kind: ReferenceKind) -> np.ndarray:
        """float64 dℓ/dθ of the exact K-step map (``k_step``) or at the solution (``converged``).

        Optional. A problem that does not override it has its references computed by the
        suite (``suite.references``; records say ``reference_source = "suite"``). One that
        cannot compute a kind at this size raises ``suite.plugin.errors.ReferenceUnavailable``
        with the reason: the point is measured without that error.
        """
        raise NotImplementedError(f"{type(self).__name__} supplies no reference_gradient")

    @property
    def has_reference(self) -> bool:
        """Whether the problem supplies its own ``reference_gradient``."""
        return type(self).reference_gradient is not Problem.reference_gradient

    def framework_reason(self, framework: str) -> str | None:
        """Why ``framework`` cannot run this problem (a single-framework problem), or None."""
        if self.frameworks is None or framework in self.frameworks:
            return None
        return (f"problem {self.name} is written for {', '.join(self.frameworks)} only "
                f"(it declares frameworks = {tuple(self.frameworks)!r})")

    def protocol_errors(self) -> list[str]:
        """What is wrong with the declarations of this problem class, in words (empty: none)."""
        out = []
        if self.jacobian_structure not in JACOBIAN_STRUCTURES:
            out.append(f"jacobian_structure = {self.jacobian_structure!r} is not one of "
                       f"{', '.join(JACOBIAN_STRUCTURES)}")
        from suite.frameworks import registry  # the adapters: the names a problem may declare

        fws, names = self.frameworks, list(registry())
        if fws is not None and (not isinstance(fws, tuple | list) or len(fws) != 1
                                or fws[0] not in names):
            out.append(f"frameworks = {fws!r}: declare one framework, "
                       f"{' or '.join(repr((name,)) for name in names)}, or None for both")
        if not isinstance(self.options, tuple | list) or not all(
                isinstance(o, Option) for o in self.options):
            out.append("options must be a tuple of suite.options.Option")
        return out

    def unsupported_reason(self, strategy: str, framework: str) -> str | None:
        """Why this problem cannot be measured with ``strategy`` (None: it can)."""
        return None

    def size_reason(self, strategy: str, framework: str, n: int,
                    options: Mapping[str, Any]) -> str | None:
        """Why this problem cannot be measured with ``strategy`` at size ``n`` with these
        (parsed) options, although it can at others — a cost that outgrows any point's budget,
        e.g. forward mode's dim θ sweeps (None: it can). Checked for every point."""
        return None

    def ift_warnings(self, instance: Instance, x: np.ndarray) -> list[str]:
        """Where the IFT's conditions fail at the solution variables x (float64), in words:
        a singular ∂F/∂x, a non-differentiable F. Reported in IFT records, never hidden."""
        return []

    def neumann_alpha(self, consts: Mapping[str, Any]) -> float | None:
        """A step α with ρ(I − α ∂F/∂x) < 1 near a solution (Neumann series, JFB), if the
        problem knows one — typically the inner solver's own step size."""
        return None

    # ---- optional block structure (used by the IFT family; see README) --------------------
    def blocks(self, consts: Mapping[str, Any]) -> int | None:
        """B when x and F split into B independent blocks of m = dim x / B entries each:
        block b of F(θ, x) reads block b of x only, so ∂F/∂x is block-diagonal (B blocks of
        m × m) once x is viewed through ``to_blocks``. θ may be shared by every block.
        Default None: no structure declared, the IFT treats x as one block."""
        return None

    def to_blocks(self, xp: Any, consts: Mapping[str, Any], v: Any) -> Any:
        """The (…, B, m) block view of vectors (…, dim x) laid out like x (or F), leading axes
        kept. Default: x is block-contiguous, a reshape. Override for an interleaved layout."""
        return xp.reshape(v, (*v.shape[:-1], self.blocks(consts) or 1, -1))

    def from_blocks(self, xp: Any, consts: Mapping[str, Any], V: Any) -> Any:
        """Inverse of ``to_blocks``: (…, B, m) → (…, dim x) in the layout of x."""
        return xp.reshape(V, (*V.shape[:-2], -1))

    def residual_jacobian(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        """∂F/∂x in closed form as its (B, m, m) diagonal blocks in ``to_blocks`` order (B = 1
        without blocks), or None (default): the IFT builds it by forward mode.

        Set ``residual_jacobian_fresh = True`` when every call returns a new array (not
        instance data, not a cached one): ``ift-direct`` then factors it in place."""
        return None

    #: ``residual_jacobian`` returns a new array each call, which a solve may overwrite
    residual_jacobian_fresh: ClassVar[bool] = False


class MomentumDescent(ABC):
    """Mixin for problems whose solver is heavy-ball descent on an inner objective f(w, θ):

        v ← γ v − η ∇_w f(w, θ),   w ← w + v,       state s = (w, v) when γ > 0.

    With γ = 0 this is plain gradient descent and the state is w alone. The mixin implements
    the step, x = w, F = ∇_w f, and reads η and γ from the instance constants ``lr`` and
    ``momentum``; a problem supplies ``init`` and ``inner_gradient``. Strategies that exploit
    this structure (``reversible``) use ``inner_gradient`` and ``descent_rates``.
    """

    @abstractmethod
    def inner_gradient(self, xp: Any, d: Mapping[str, Any], w: Any, theta: Any) -> Any:
        """∇_w f(w, θ)."""

    def descent_rates(self, consts: Mapping[str, Any]) -> tuple[float, float]:
        """(η, γ): step size and momentum of the instance."""
        return float(consts["lr"]), float(consts["momentum"])

    def neumann_alpha(self, consts: Mapping[str, Any]) -> float | None:
        return float(consts["lr"])  # η ≤ 1/L, so ρ(I − η ∂F/∂w) < 1 near a minimum

    def step(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        if d["momentum"] > 0:
            w, v = state
            v = d["momentum"] * v - d["lr"] * self.inner_gradient(xp, d, w, theta)
            return (w + v, v)
        return state - d["lr"] * self.inner_gradient(xp, d, state, theta)

    def solution(self, xp: Any, d: Mapping[str, Any], state: Any, theta: Any) -> Any:
        return state[0] if d["momentum"] > 0 else state

    def residual(self, xp: Any, d: Mapping[str, Any], x: Any, theta: Any) -> Any:
        return self.inner_gradient(xp, d, x, theta)


class Bound:
    """A problem bound to one namespace and one set of (possibly traced) arrays.

    Strategies see only this: ``P.init(θ)``, ``P.step(s, θ)``, ``P.solution``, ``P.residual``,
    ``P.loss``. ``wrap_step`` lets the framework adapter count step applications (and the VJPs
    taken through them) in the counting pass without the strategy knowing.
    """

    def __init__(
        self,
        problem: Problem,
        xp: Any,
        arrays: Mapping[str, Any],
        consts: Mapping[str, Any],
        wrap_step: Callable[[Callable], Callable] | None = None,
    ):
        self.problem = problem
        self.xp = xp
        self.data = {**arrays, **consts}
        self.consts = dict(consts)
        step = self._raw_step
        self._step = wrap_step(step) if wrap_step is not None else step

    def _raw_step(self, state: Any, theta: Any) -> Any:
        return self.problem.step(self.xp, self.data, state, theta)

    def init(self, theta: Any) -> Any:
        return self.problem.init(self.xp, self.data, theta)

    def step(self, state: Any, theta: Any) -> Any:
        return self._step(state, theta)

    def solution(self, state: Any, theta: Any) -> Any:
        return self.problem.solution(self.xp, self.data, state, theta)

    def residual(self, x: Any, theta: Any) -> Any:
        return self.problem.residual(self.xp, self.data, x, theta)

    def loss(self, x: Any, theta: Any) -> Any:
        return self.problem.loss(self.xp, self.data, x, theta)


def numpy_namespace() -> Any:
    """The array-API view of numpy used for float64 references and residual checks."""
    import array_api_compat.numpy as npx

    return npx


def block_matrix(xp: Any, rows: list[list[Any]], like: Any) -> Any:
    """The batched block matrix [[A₁₁, A₁₂, …], …] of (B, rᵢ, cⱼ) blocks (None: zeros).

    Where arrays are mutable (numpy, torch) the result is allocated once and each block
    copied into place, so building a (B, r, r) matrix holds one of it, not two (row strips,
    then their concatenation); JAX arrays are immutable and XLA places the concatenation's
    operands itself.
    """
    from array_api_compat import device as array_device
    from array_api_compat import is_jax_array

    heights = [next(b.shape[-2] for b in row if b is not None) for row in rows]
    widths = [next(row[j].shape[-1] for row in rows if row[j] is not None)
              for j in range(len(rows[0]))]
    batch = tuple(like.shape[:-1])
    zeros = lambda r, c: xp.zeros((*batch, r, c), dtype=like.dtype,  # noqa: E731
                                  device=array_device(like))
    if is_jax_array(like):
        return xp.concat([xp.concat([b if b is not None else zeros(r, c)
                                     for b, c in zip(row, widths, strict=True)], axis=-1)
                          for row, r in zip(rows, heights, strict=True)], axis=-2)
    out = zeros(sum(heights), sum(widths))
    top = 0
    for row, r in zip(rows, heights, strict=True):
        left = 0
        for b, c in zip(row, widths, strict=True):
            if b is not None:
                out[..., top:top + r, left:left + c] = b
            left += c
        top += r
    return out
