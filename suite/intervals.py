"""The exact distribution-free confidence interval of a median, for paired time ratios.

From n independent samples (ABBA blocks' ratios), the k-th smallest and the k-th largest hold
the population median with probability 1 − 2·P(Bin(n, ½) < k), whatever the distribution:
``ift-bench pair`` prints it, and a sweep that pairs points records it (``time_ratio_low``,
``time_ratio_high``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """The median of ``samples`` and an interval that holds the population median with
    probability ≥ ``coverage`` (exact, distribution-free), from ``samples`` blocks."""

    median: float
    low: float
    high: float
    coverage: float
    samples: int

    def verdict(self, a: str, b: str) -> str:
        if self.coverage < CONFIDENCE:
            return (f"no verdict: {self.samples} samples give only a {self.coverage:.1%} "
                    "interval")
        if self.high < 1:
            return f"{a} faster than {b}"
        if self.low > 1:
            return f"{b} faster than {a}"
        return "no verdict: the interval contains 1"


def median_interval(samples: list[float], confidence: float = CONFIDENCE) -> Interval:
    """The exact distribution-free interval for the median: the k-th smallest and k-th largest
    of n samples, with the largest k whose coverage 1 − 2·P(Bin(n, ½) < k) is ≥
    ``confidence`` (the whole range when even k = 1 falls short: n < 6 at 95 %)."""
    from scipy.stats import binom

    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        raise ValueError("no samples")
    k = 1
    while k + 1 <= n // 2 and 1 - 2 * binom.cdf(k, n, 0.5) >= confidence:
        k += 1
    coverage = 1 - 2 * binom.cdf(k - 1, n, 0.5)
    return Interval(float(np.median(xs)), xs[k - 1], xs[n - k], float(coverage), n)
