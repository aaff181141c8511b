"""Binomial checkpointing (Griewank 1992; Griewank & Walther's Revolve) as a list of actions.

Reversing K steps with s snapshot slots (the slot holding x₀ among them) needs at least

    p(K, s) = t·K − β(s+1, t−1)      untaped forward steps, β(s, t) = C(s + t, s),

where the repetition number t is the unique integer with β(s, t−1) < K ≤ β(s, t); each of the
K steps is also taped once, so a reversal applies T exactly K + p(K, s) times. The recursion
below attains the bound: to reverse steps [i, j) from a snapshot of x_i with s slots, advance
m steps, snapshot x_{i+m}, reverse [i+m, j) with s − 1 slots, restore x_i, reverse [i, i+m)
with s slots. Any m in [max(n − β(s−1, t), β(s, t−2)), min(β(s, t−1), n − β(s−1, t−1))] is
optimal (n = j − i; checked against brute-force dynamic programming in the tests).
"""

from __future__ import annotations

from functools import cache
from math import comb

import numpy as np

ADVANCE, SAVE, LOAD, FIRST, BACK = range(5)
ACTION_NAMES = ("advance", "save", "load", "first", "back")


def beta(s: int, t: int) -> int:
    """β(s, t) = C(s + t, s): the most steps s snapshots reverse with repetition number t."""
    return comb(s + t, s) if t >= 0 else 0


def repetition_number(K: int, s: int) -> int:
    """The unique t with β(s, t−1) < K ≤ β(s, t)."""
    t = 0
    while beta(s, t) < K:
        t += 1
    return t


def minimal_advances(K: int, s: int) -> int:
    """p(K, s) = t·K − β(s+1, t−1): untaped steps of an optimal reversal (0 when K ≤ 1)."""
    if K <= 1:
        return 0
    t = repetition_number(K, s)
    return t * K - beta(s + 1, t - 1)


def _split(n: int, s: int) -> int:
    t = repetition_number(n, s)
    low = max(1, n - beta(s - 1, t), beta(s, t - 2))
    high = min(beta(s, t - 1), n - beta(s - 1, t - 1), n - 1)
    assert low <= high, (n, s)
    return high


@cache
def schedule(K: int, snapshots: int) -> np.ndarray:
    """Actions (op, arg) reversing K steps with ``snapshots`` slots, slot 0 holding x₀.

    Built once per (K, s) and cached, like a compiled program: the gradient call reads it
    (torch shares the array's memory, JAX embeds it as a constant). Its O(K·t) integers are
    plan, not per-gradient memory; Revolve proper generates the same actions on the fly.

    ``ADVANCE c``: apply T c times untaped. ``SAVE k`` / ``LOAD k``: copy the state to / from
    slot k. ``FIRST``: tape the last step, seed the adjoint with ∇ℓ, reverse that step.
    ``BACK``: tape one step from the current state and reverse it.
    """
    if K < 1 or snapshots < 1:
        raise ValueError("K and snapshots must be positive")
    actions: list[tuple[int, int]] = []
    free = list(range(snapshots - 1, 0, -1))

    def tape(k: int) -> None:
        actions.append((FIRST, 0) if k == K - 1 else (BACK, 0))

    def reverse(i: int, j: int, slot: int, s: int) -> None:
        # on entry the current state is x_i, and x_i is kept in ``slot`` when j − i > 1
        n = j - i
        if n == 1:
            tape(i)
            return
        if s == 1:  # no room: re-advance from x_i for every step, last to first
            for k in range(j - 1, i - 1, -1):
                if k > i:
                    actions.append((ADVANCE, k - i))
                tape(k)
                if k > i:
                    actions.append((LOAD, slot))
            return
        m = _split(n, s)
        actions.append((ADVANCE, m))
        if n - m > 1:
            right = free.pop()
            actions.append((SAVE, right))
            reverse(i + m, j, right, s - 1)
            free.append(right)
        else:
            tape(i + m)
        actions.append((LOAD, slot))
        reverse(i, i + m, slot, s)

    actions.append((SAVE, 0))
    reverse(0, K, 0, snapshots)
    return np.asarray(actions, dtype=np.int64).reshape(-1, 2)  # shared: never mutate


def step_applications(actions: np.ndarray) -> int:
    """How many times the schedule applies T (advances plus taped steps)."""
    ops, args = actions[:, 0], actions[:, 1]
    return int(args[ops == ADVANCE].sum() + np.isin(ops, (FIRST, BACK)).sum())
