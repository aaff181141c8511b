"""``ift-bench pair``: the interval of the median is the exact order-statistic one; the ABBA
blocks, on a deterministic clock, give the ratios the programs' costs imply (a strategy
against itself: 1 exactly, its interval contains 1; against one doing twice the backward
work: a backward ratio of 2 and a verdict); the command pairs two strategies on one instance in
an isolated process and prints the numbers its JSON holds; bad input is one line, exit 2."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from suite import references
from suite.cli import main
from suite.pair import Interval, abba_blocks, combine, median_interval, paired_blocks
from suite.point import Point
from suite.program import ReplayedForward, prepare

from .helpers import rel, require_peer


def _coverage(n: int, k: int) -> float:
    """1 − 2·P(Bin(n, ½) ≤ k − 1), by counting."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n


def test_the_interval_of_the_median_is_the_exact_order_statistic_one():
    samples = [float(x) for x in range(21, 0, -1)]  # 21 … 1: sorted inside
    iv = median_interval(samples)
    assert (iv.median, iv.low, iv.high, iv.samples) == (11.0, 6.0, 16.0, 21)
    assert iv.coverage == pytest.approx(_coverage(21, 6)) and iv.coverage >= 0.95
    assert _coverage(21, 7) < 0.95  # the narrower one would not hold 95 %
    eleven = median_interval([float(x) for x in range(1, 12)])
    assert (eleven.low, eleven.high) == (2.0, 10.0)
    assert eleven.coverage == pytest.approx(_coverage(11, 2))
    # five samples cannot reach 95 %: the whole range, and its coverage says so
    five = median_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (five.low, five.high, five.coverage) == (1.0, 5.0, pytest.approx(1 - 2 / 32))


def test_a_verdict_only_when_the_whole_interval_is_on_one_side_of_1():
    assert Interval(0.9, 0.8, 0.99, 0.97, 21).verdict("a", "b") == "a faster than b"
    assert Interval(1.2, 1.01, 1.3, 0.97, 21).verdict("a", "b") == "b faster than a"
    assert Interval(0.9, 0.8, 1.0, 0.97, 21).verdict("a", "b") == \
        "no verdict: the interval contains 1"
    # too few samples for 95 % (five blocks, or two processes): no verdict either way
    assert Interval(0.9, 0.8, 0.95, 0.9375, 5).verdict("a", "b") == \
        "no verdict: 5 samples give only a 93.8% interval"


def _clocked(costs: dict[str, float], calls: list[str]):
    """Programs that cost ``costs[name]`` seconds on a clock that only they advance."""
    def program(name):
        def call():
            calls.append(name)
            return costs[name]
        return call

    return program("a"), program("b"), program("forward"), lambda fn: fn()


@pytest.mark.parametrize("a_cost, whole, backward", [
    (1.2, 1.0, 1.0),          # B against itself: exactly 1
    (1.4, 1.4 / 1.2, 2.0),    # twice the backward work on the same forward
])
def test_abba_blocks_give_the_ratios_the_costs_imply(a_cost, whole, backward):
    calls: list[str] = []
    a, b, forward, clock = _clocked({"a": a_cost, "b": 1.2, "forward": 1.0}, calls)
    ratios, back, t_a, t_b, t_f = paired_blocks(a, b, forward, 7, clock)
    assert ratios == pytest.approx([whole] * 7) and back == pytest.approx([backward] * 7)
    # per block B A A B, each gradient right after a forward
    assert calls[:8] == ["forward", "b", "forward", "a", "forward", "a", "forward", "b"]
    assert (len(t_a), len(t_b), len(t_f)) == (14, 14, 28)
    iv = median_interval(back)
    assert iv.low <= backward <= iv.high
    assert (iv.verdict("A", "B") == "no verdict: the interval contains 1") is (backward == 1.0)


def _pairing(gradient: float, backward: float | None, seconds: float) -> dict:
    def iv(m):
        return None if m is None else {"median": m, "low": m, "high": m, "coverage": 0.9,
                                       "samples": 21}
    return {"point": {"backend": "a"}, "other": "b", "gradient": iv(gradient),
            "backward": iv(backward), "gradient_s": [seconds, 2 * seconds],
            "backward_s": None, "forward_s": seconds, "agreement": 0.0}


def test_processes_combine_into_the_interval_of_their_medians():
    """``pair --processes 6``: the ratio is the median of the six processes' medians, its
    interval their range (coverage 1 − 2/64), the verdict from that interval."""
    medians = [0.91, 0.95, 0.97, 0.93, 0.99, 0.96]
    out = combine([_pairing(m, m - 0.1, 1.0 + i) for i, m in enumerate(medians)])
    assert out["processes"] == 6 and out["gradient_per_process"] == medians
    g = out["gradient"]
    assert (g["median"], g["low"], g["high"], g["samples"]) == (
        pytest.approx(0.955), 0.91, 0.99, 6)
    assert g["coverage"] == pytest.approx(1 - 2 / 64)
    assert out["verdict"]["gradient"] == "a faster than b"
    assert out["backward"]["median"] == pytest.approx(0.855)
    assert out["gradient_s"] == [pytest.approx(3.5), pytest.approx(7.0)]
    # a process without a backward ratio leaves the combined one undefined, not biased
    some = combine([_pairing(1.0, None, 1.0), _pairing(1.1, 0.9, 1.0)])
    assert some["backward"] is None and some["verdict"]["backward"] is None
    assert some["verdict"]["gradient"] == "no verdict: 2 samples give only a 50.0% interval"


def test_abba_blocks_alone_give_the_cost_ratio():
    calls: list[str] = []
    a, b, _, clock = _clocked({"a": 0.3, "b": 0.2, "forward": 1.0}, calls)
    ratios, t_a, t_b = abba_blocks(a, b, 5, clock)
    assert ratios == pytest.approx([1.5] * 5) and calls[:4] == ["b", "a", "a", "b"]
    assert (len(t_a), len(t_b)) == (10, 10)


@pytest.mark.parametrize("framework, backend", [
    ("torch", "torchopt-cg"), ("jax", "ift-direct"), ("jax", "jaxopt-cg")])
def test_the_backward_program_is_the_gradient_from_the_forward_state(framework, backend):
    """What ``pair`` times as the backward alone: the strategy's gradient with its K-step
    forward replaced by the final state computed beforehand — the same gradient."""
    require_peer(backend)
    prep = prepare(Point("gd", backend, framework, n=10, K=200, options={"momentum": 0.5}))
    fw = prep.fw
    whole, _ = fw.compile(prep.gradient_program())(prep.theta, prep.arrays)
    state = fw.compile(prep.final_state_program())(prep.theta, prep.arrays)
    assert isinstance(state, tuple) and len(state) == 2  # heavy ball: (w, v)
    alone, _ = fw.compile(prep.backward_program())(prep.theta, prep.arrays, state)
    assert rel(fw.to_numpy(alone), fw.to_numpy(whole)) < 1e-13


def test_a_strategy_with_a_tape_through_the_steps_has_no_backward_alone():
    prep = prepare(Point("gd", "unrolled", "torch", n=6, K=8))
    with pytest.raises(ValueError, match="unrolled does not read the forward only"):
        prep.backward_program()
    # a strategy that iterates again (or another K) under the replay is caught, not timed
    replay = ReplayedForward(prep.fw, prep.fw.asarray(np.zeros(6)), K=8)
    replay.iterate(lambda s: s, None, 8)
    with pytest.raises(RuntimeError, match="iterates more than the one 8-step forward"):
        replay.iterate(lambda s: s, None, 8)
    with pytest.raises(RuntimeError):
        ReplayedForward(prep.fw, None, K=8).iterate(lambda s: s, None, 7)


@pytest.mark.slow
def test_pair_prints_the_ratios_and_the_gradients_its_json_holds(capsys):
    argv = ["pair", "--problem", "gd", "--n", "12", "--K", "64", "--framework", "torch",
            "--blocks", "6", "--option", "momentum=0.9", "--option", "restart=4"]
    assert main([*argv, "--json", "ift-cg", "ift-gmres"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["blocks"] == 6 and out["other"] == "ift-gmres"
    assert out["gradient"]["samples"] == 6
    # both read the forward only through x_K: each backward is timed alone, in its own 6
    # blocks, from the same state, and computes the gradient the whole call does
    assert out["backward_method"] == "timed alone" and out["backward_note"] is None
    assert out["backward"]["samples"] == 6 and out["backward_agreement"] < 1e-12
    assert min(out["backward_s"]) > 0
    assert out["gradient"]["low"] <= out["gradient"]["median"] <= out["gradient"]["high"]
    # the gradients, computed here independently: the same instance, each strategy's own
    point = Point("gd", "ift-cg", "torch", n=12, K=64, options={"momentum": 0.9})
    grads = {}
    for backend, opts in (("ift-cg", {}), ("ift-gmres", {"restart": 4})):
        prep = prepare(Point("gd", backend, "torch", n=12, K=64,
                             options={"momentum": 0.9, **opts}))
        g, _ = prep.fw.compile(prep.gradient_program())(prep.theta, prep.arrays)
        grads[backend] = prep.fw.to_numpy(g)
    ref = references.reference_gradient(prepare(point).problem, prepare(point).instance, 64,
                                        "converged")
    g_a, g_b = grads["ift-cg"], grads["ift-gmres"]
    assert out["agreement"] == pytest.approx(np.linalg.norm(g_a - g_b) / np.linalg.norm(g_b),
                                             rel=1e-6, abs=1e-15)
    assert out["error_a"] == pytest.approx(np.linalg.norm(g_a - ref) / np.linalg.norm(ref))
    assert out["error_b"] == pytest.approx(np.linalg.norm(g_b - ref) / np.linalg.norm(ref))
    assert out["point"]["options"] == {"momentum": "0.9"}  # as typed; restart is B's alone
    # the text prints the same numbers
    assert main([*argv[:-2], "ift-cg", "ift-cg"]) == 0  # restart: neither side's option
    text = capsys.readouterr().out
    assert "A = ift-cg, B = ift-cg; 6 ABBA blocks (24 gradient calls)" in text
    assert "gradients: ‖g_A − g_B‖/‖g_B‖ = 0; error against the converged reference: " \
           f"A {out['error_a']:.3g}, B {out['error_a']:.3g}" in text
    assert "96.9% interval" in text  # 6 blocks: the whole range, 1 − 2/64
    calls = out["backward_calls"]
    assert calls >= 1 and (f"backward timed alone, from the forward's final state (its own 6 "
                           f"ABBA blocks, {calls} backward calls per timed call)") in text


@pytest.mark.parametrize("args, line", [
    (["ift-cg", "nope"], "ift-bench: error: B: unknown strategy 'nope' (allowed: "),
    (["nope", "ift-cg"], "ift-bench: error: A: unknown strategy 'nope' (allowed: "),
    (["--option", "restart=3", "ift-cg", "ift-direct"],
     "ift-bench: error: option 'restart': not an option of problem gd, ift-cg or ift-direct "
     "(allowed: maxiter, momentum, tol)"),
    (["--blocks", "5", "ift-cg", "ift-direct"],
     "ift-bench: error: --blocks: '5' is out of range (allowed: an integer >= 6 and <= 1000)"),
    (["--processes", "0", "ift-cg", "ift-direct"],
     "ift-bench: error: --processes: '0' is out of range (allowed: an integer >= 1 and <= 100)"),
])
def test_bad_input_is_one_line_and_exit_2(args, line, capsys):
    assert main(["pair", "--problem", "gd", "--n", "12", "--K", "8", "--framework", "torch",
                 *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(line) and "\n" not in err
