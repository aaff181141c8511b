"""The Revolve schedule: valid reversal, within its slots, attaining Griewank's bound."""

from __future__ import annotations

from functools import cache

import pytest

from backends.binomial_schedule import (
    ADVANCE,
    BACK,
    FIRST,
    LOAD,
    SAVE,
    minimal_advances,
    repetition_number,
    schedule,
    step_applications,
)


@cache
def _dp(n: int, s: int) -> int:
    """Brute-force minimal advances by dynamic programming over every split point."""
    if n <= 1:
        return 0
    if s == 1:
        return n * (n - 1) // 2
    return min(m + (_dp(n - m, s - 1) if n - m > 1 else 0) + _dp(m, s) for m in range(1, n))


def _simulate(K: int, s: int) -> tuple[list[int], int]:
    """Run a schedule on step indices; return the order steps were taped in, and advances."""
    state, slots, taped, advances = 0, {}, [], 0
    for op, arg in schedule(K, s):
        if op == ADVANCE:
            state += arg
            advances += arg
            assert state <= K - 1
        elif op == SAVE:
            assert 0 <= arg < s
            slots[arg] = state
        elif op == LOAD:
            state = slots[arg]
        else:
            assert (op == FIRST) == (state == K - 1)
            taped.append(state)
    return taped, advances


@pytest.mark.parametrize("s", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("K", [1, 2, 3, 10, 57, 200])
def test_schedule_reverses_every_step_once_in_order(K, s):
    taped, advances = _simulate(K, s)
    assert taped == list(range(K - 1, -1, -1))
    assert advances == minimal_advances(K, s)


@pytest.mark.parametrize("s", [2, 3, 4, 6])
def test_closed_form_equals_brute_force_optimum(s):
    for K in range(1, 90):
        assert minimal_advances(K, s) == _dp(K, s)


def test_worked_values_from_the_issue():
    assert repetition_number(100, 5) == 4 and minimal_advances(100, 5) == 316
    assert repetition_number(1000, 10) == 4 and minimal_advances(1000, 10) == 3636
    assert repetition_number(1000, 44) == 2 and minimal_advances(1000, 44) == 1954


def test_large_schedule_is_cheap_and_exact():
    actions = schedule(10000, 14)
    assert step_applications(actions) == 10000 + minimal_advances(10000, 14)
    assert (actions[:, 0] == BACK).sum() == 9999
