"""Checkpointing: keep a few states, recompute the rest in the backward pass.

* ``checkpoint-sqrt``: K steps in S ≈ √K segments of L = ⌈K/S⌉ steps. Only each segment's
  input is kept; the backward pass recomputes one segment at a time under the tape. Memory
  Θ(S + L) states = Θ(√K); T is applied 2K times. torch: reentrant ``torch.utils.checkpoint``
  per segment; JAX: ``jax.checkpoint`` on the inner scan of a nested scan.
* ``checkpoint-binomial``: Revolve's binomial schedule with s snapshot slots (x₀'s among them),
  run by a small action interpreter written once against the adapter (a ``switch`` inside the
  solver loop under JAX). Memory Θ(s) states whatever K; T is applied K + p(K, s) times,
  p(K, s) = t·K − β(s+1, t−1) (see ``backends.binomial_schedule``).

Both are exact for the K-step map (``k_step`` reference).
"""

from __future__ import annotations

import math
import os
from typing import Any

from backends.base import Strategy, Theory
from backends.binomial_schedule import ADVANCE, BACK, FIRST, LOAD, SAVE, schedule
from suite.plugin.options import Option

#: test-only switch (issue 6's gate test): run checkpoint-sqrt without checkpointing
DISABLE_ENV = "IFT_BENCH_DISABLE_CHECKPOINT"


class CheckpointSqrt(Strategy):
    name = "checkpoint-sqrt"
    theory = Theory((0.5, 0.5), (1, 1), (1, 1), "Θ(√K·n)", "≈ 2 forward passes")
    summary = "√K segments, each recomputed in backward (memory Θ(√K), ≈ 2K steps)"
    reference = "k_step"
    reverse_through_steps = True
    options = (Option("segments", int, None, "number of segments (default ⌈√K⌉)", minimum=1),)

    def resolve_defaults(self, opts, K, dtype, dim_x):
        segments = opts.get("segments") or math.ceil(math.sqrt(K))
        return {**opts, "segments": min(segments, K)}

    def gradient(self, fw, P, theta, K, opts) -> tuple[Any, dict[str, Any]]:
        length = math.ceil(K / opts["segments"])
        full, rest = divmod(K, length)
        remat = (lambda f: f) if os.environ.get(DISABLE_ENV) else fw.checkpoint

        def segment_of(steps: int):
            return remat(lambda s, th: fw.iterate(lambda z: P.step(z, th), s, steps))

        segment = segment_of(length)
        tail = segment_of(rest) if rest else None

        def outer(th: Any) -> Any:
            state = fw.iterate(lambda s: segment(s, th), P.init(th), full)
            if tail is not None:
                state = tail(state, th)
            return P.loss(P.solution(state, th), th)

        _, grad = fw.value_and_grad(outer, theta)
        return grad, {}


class CheckpointBinomial(Strategy):
    name = "checkpoint-binomial"
    theory = Theory((0, 0.25), (1, 1), (1, 1.3), "Θ(s·n), s = ⌈log₂ K⌉ by default",
                    "K + t·K − β(s+1, t−1) steps")
    summary = "Revolve with s snapshots (memory Θ(s), K + p(K, s) steps)"
    reference = "k_step"
    options = (Option("snapshots", int, None,
                      "snapshot slots s, x₀'s included (default ⌈log₂ K⌉, at least 1)",
                      minimum=1),)

    def resolve_defaults(self, opts, K, dtype, dim_x):
        s = opts.get("snapshots") or max(1, math.ceil(math.log2(K)) if K > 1 else 1)
        return {**opts, "snapshots": s}

    def gradient(self, fw, P, theta, K, opts) -> tuple[Any, dict[str, Any]]:
        xp = fw.xp
        actions = schedule(K, opts["snapshots"])
        ops, args = xp.asarray(actions[:, 0]), xp.asarray(actions[:, 1])

        def terminal(state: Any, th: Any) -> Any:
            return P.loss(P.solution(state, th), th)

        state0 = P.init(theta)
        slots = fw.tree_map(
            lambda leaf: xp.zeros((opts["snapshots"], *leaf.shape), dtype=leaf.dtype), state0)
        fw.hold_for_backward(*_leaves(slots))
        zero_adjoint = fw.tree_map(xp.zeros_like, state0)
        carry0 = (state0, slots, zero_adjoint, xp.zeros_like(theta), xp.asarray(0))

        def advance(c: tuple) -> tuple:
            (state, slots, adj, grad, pc), count = c, args[c[4]]
            state = fw.repeat(lambda s: P.step(s, theta), state, count)
            return state, slots, adj, grad, pc

        def save(c: tuple) -> tuple:
            state, slots, adj, grad, pc = c
            slot = args[pc]
            slots = fw.tree_map(lambda buf, leaf: fw.index_update(buf, slot, leaf), slots, state)
            fw.hold_for_backward(*_leaves(slots))
            return state, slots, adj, grad, pc

        def load(c: tuple) -> tuple:
            state, slots, adj, grad, pc = c
            slot = args[pc]
            return fw.tree_map(lambda buf: buf[slot], slots), slots, adj, grad, pc

        def first(c: tuple) -> tuple:
            state, slots, adj, grad, pc = c
            out, step_pullback = fw.vjp(P.step, state, theta)
            value, loss_pullback = fw.vjp(terminal, out, theta)
            adj_out, grad_loss = loss_pullback(xp.ones_like(value))
            adj, grad_step = step_pullback(adj_out)
            return state, slots, adj, grad_loss + grad_step, pc

        def back(c: tuple) -> tuple:
            state, slots, adj, grad, pc = c
            _, step_pullback = fw.vjp(P.step, state, theta)
            adj, grad_step = step_pullback(adj)
            return state, slots, adj, grad + grad_step, pc

        branches = [None] * 5
        branches[ADVANCE], branches[SAVE], branches[LOAD] = advance, save, load
        branches[FIRST], branches[BACK] = first, back

        def interpret(c: tuple) -> tuple:
            state, slots, adj, grad, pc = fw.switch(ops[c[4]], branches, c)
            return state, slots, adj, grad, pc + 1

        _, _, adj, grad, _ = fw.iterate(interpret, carry0, len(actions))
        _, init_pullback = fw.vjp(P.init, theta)
        (grad_init,) = init_pullback(adj)
        return grad + grad_init, {}


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, tuple | list):
        return [leaf for part in tree for leaf in _leaves(part)]
    return [tree]
