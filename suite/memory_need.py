"""The bytes a point that hit the memory cap would have needed, predicted from its series.

A series is one problem, strategy, framework, n and options with K varying. When its point at
some K runs out of memory (``oom``; the larger K are then ``skipped``), its ok points at smaller
K say what each step costs: the strategy's theory gives the exponent e of its memory in K
(``Theory.memory_K``: 1 for unrolled, ½ for √K checkpointing, 0 for the IFT family), the
peaks of the measured points are fitted by

    peak(K) = a + b·K^e                      (least squares over the measured K, two at least),

and the need at K is the peak measured at the largest K₀ plus the growth from there:

    need(K) = peak(K₀) + b·(K^e − K₀^e).

So "unrolled at n = 16384, K = 300 needs ≈ 29 GiB" is the measured peak at K = 100 plus 200
steps of the measured bytes per step. The peak's own growth, not the trace's, is extrapolated:
beside the saved tensors the trace counts, torch's autograd allocates its graph and bookkeeping
per operation, which dominate at small states (gd, n = 8, torch: 256 B of saved tensors per
step, 14.6 kB of peak; the trace's slope predicted 302 kB at K = 40, 589 kB were measured),
while at the scale config's sizes the two slopes agree to 7 %.
Where fewer than two K were measured, or the strategy predicts no growth in K, nothing is
predicted (None): a prediction is never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Measured:
    """One ok point of a series: its K, trace bytes and peak bytes."""

    K: int
    trace_bytes: int
    peak_bytes: int


@dataclass(frozen=True)
class Need:
    """The predicted peak at K, and the measured K it was predicted from."""

    bytes: int
    from_K: tuple[int, ...]
    exponent: float


def predict_need(points: list[Measured], K: int, exponent: float) -> Need | None:
    """need(K) by the module's law from the series' ``points`` below K (None: too few, or the
    trace does not grow)."""
    below = sorted((p for p in points if p.K < K), key=lambda p: p.K)
    if exponent <= 0 or len({p.K for p in below}) < 2:
        return None
    x = np.array([float(p.K) ** exponent for p in below])
    y = np.array([float(p.peak_bytes) for p in below])
    slope, _ = np.polyfit(x, y, 1)
    if slope * (x.max() - x.min()) < 1.0:  # not one byte of growth over the measured K
        return None
    last = below[-1]
    need = last.peak_bytes + slope * (float(K) ** exponent - float(last.K) ** exponent)
    return Need(int(round(need)), tuple(p.K for p in below), exponent)
