"""Exact fixed-point arithmetic and the information buffer of reversible learning.

Maclaurin, Duvenaud & Adams (2015) make momentum descent exactly invertible by holding the
state in fixed point and multiplying by the decay γ = num/den without losing a bit: the low
digits that ``v ← γ v`` would discard go into an arbitrary-precision integer B per parameter,

    multiply:  B ← B·den + (v mod den),  v ← ⌊v / den⌋·num,  v ← v + (B mod num),  B ← ⌊B / num⌋
    divide:    the same four moves inverted, in reverse order,

so B grows by log₂(den/num) = log₂(1/γ) bits per multiplication — the information the
multiplication destroys, and no more.

B is stored as a little-endian array of limbs in radix R = (num·den)^j (R ≤ 2⁶²/max(num, den)),
shape (limbs, parameters), int64, vectorised over parameters. Because R is divisible by both
num and den, popping a base-q digit needs no carry chain,

    digit = B₀ mod q,    Bᵢ ← ⌊Bᵢ / q⌋ + (Bᵢ₊₁ mod q)·(R / q),

and pushing (B·q + digit) is one multiply plus carry passes that stop as soon as every limb is
below R (two, almost always).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

RADIX_BITS = 52  # fixed point: x ↦ round(x · 2⁵²) in int64, so |x| < 2¹¹
SCALE = float(2**RADIX_BITS)


def to_fixed(xp: Any, x: Any) -> Any:
    return xp.astype(xp.round(x * SCALE), xp.int64)


def to_float(xp: Any, i: Any, dtype: Any) -> Any:
    return xp.astype(i, dtype) / SCALE


def as_fraction(gamma: float, max_denominator: int = 2**16) -> tuple[int, int]:
    """γ as num/den (0.9 → 9/10)."""
    frac = Fraction(gamma).limit_denominator(max_denominator)
    if not 0 < frac < 1:
        raise ValueError(f"momentum γ must lie in (0, 1), got {gamma}")
    return frac.numerator, frac.denominator


@dataclass(frozen=True)
class InformationBuffer:
    """The static layout of B: γ = num/den, radix R, and a capacity in limbs."""

    num: int
    den: int
    radix: int
    limbs: int

    @classmethod
    def for_run(cls, gamma: float, multiplications: int) -> InformationBuffer:
        num, den = as_fraction(gamma)
        base = num * den
        radix = base
        while radix * base <= 2**62 // max(num, den):
            radix *= base
        bits = multiplications * math.log2(den / num)
        # +2 limbs: the head of the last push and one that must stay zero (overflow guard)
        return cls(num, den, radix, math.ceil(bits / math.log2(radix)) + 2)

    @property
    def bits_per_multiplication(self) -> float:
        return math.log2(self.den / self.num)

    def capacity_bytes(self, parameters: int) -> int:
        return self.limbs * parameters * 8

    def empty(self, xp: Any, parameters: int) -> Any:
        return xp.zeros((self.limbs, parameters), dtype=xp.int64)

    # ---- base-q digits ------------------------------------------------------------------
    def push(self, fw: Any, B: Any, digit: Any, base: int) -> Any:
        """B·base + digit (digit ∈ [0, base))."""
        xp = fw.xp
        zero_row = xp.zeros_like(B[:1])
        t = B * base + xp.concat([digit[None, :], xp.zeros_like(B[1:])], axis=0)

        def out_of_range(t: Any) -> Any:
            return xp.any(t >= self.radix)

        def carry(t: Any) -> Any:
            high = t // self.radix
            return t % self.radix + xp.concat([zero_row, high[:-1]], axis=0)

        return fw.while_loop(out_of_range, carry, t)

    def pop(self, fw: Any, B: Any, base: int) -> tuple[Any, Any]:
        """(⌊B / base⌋, B mod base)."""
        xp = fw.xp
        low = B % base
        shifted = xp.concat([low[1:], xp.zeros_like(low[:1])], axis=0)
        return B // base + shifted * (self.radix // base), low[0]

    # ---- exact multiplication by γ and its inverse --------------------------------------
    def multiply(self, fw: Any, B: Any, v: Any) -> tuple[Any, Any]:
        """(B', v') with v' = γ·v rounded down and B' holding what the rounding lost."""
        B = self.push(fw, B, v % self.den, self.den)
        v = (v // self.den) * self.num
        B, digit = self.pop(fw, B, self.num)
        return B, v + digit

    def divide(self, fw: Any, B: Any, v: Any) -> tuple[Any, Any]:
        """Exact inverse of :meth:`multiply`."""
        digit = v % self.num
        B = self.push(fw, B, digit, self.num)
        v = (v - digit) // self.num * self.den
        B, rest = self.pop(fw, B, self.den)
        return B, v + rest

    def bits(self, xp: Any, B: Any) -> Any:
        """Bits held per parameter: the position of the highest nonzero limb plus its width."""
        index = xp.astype(xp.arange(B.shape[0]), xp.float64)[:, None]
        width = index * math.log2(self.radix) + xp.log2(xp.astype(B, xp.float64) + 1.0)
        return xp.max(xp.where(B > 0, width, 0.0), axis=0)

    def overflowed(self, xp: Any, B: Any) -> Any:
        return xp.any(B[-1] != 0)
