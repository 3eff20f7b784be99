"""Interval estimates and calibration for the audit.

- :func:`wilson`: the 95% Wilson score interval of a binomial proportion k/n (Wilson 1927): the centre
  (k + z²/2)/(n + z²) ± z/(n + z²)·√(k(n−k)/n + z²/4), z = 1.95996; it stays inside [0, 1] and is good at
  k = 0 or n (where the normal-approximation interval collapses to a point).
- :func:`calibration`: expected calibration error over ``bins`` equal-width bins of the top-1 confidence
  (Guo et al. 2017): ECE = Σ_b (n_b/n)·|accuracy_b − confidence_b|, and the reliability diagram's bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials (``(nan, nan)`` for n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, min(p, centre - half))     # exact ends at k = 0 and k = n (no rounding)
    hi = 1.0 if k == n else min(1.0, max(p, centre + half))
    return lo, hi


def accuracy(k: int, n: int) -> dict:
    """``{"correct", "n", "accuracy", "ci95": [lo, hi]}`` with the Wilson interval."""
    lo, hi = wilson(k, n)
    return {"correct": int(k), "n": int(n), "accuracy": k / n if n else math.nan, "ci95": [lo, hi]}


def calibration(confidence: Sequence[float], correct: Sequence[bool], bins: int = 15) -> dict:
    """ECE and the reliability bins (``lo``, ``hi``, ``count``, ``accuracy``, ``confidence``; empty bins
    have None) of top-1 ``confidence`` values in [0,1] and whether each prediction was ``correct``."""
    n = len(confidence)
    table = [{"lo": b / bins, "hi": (b + 1) / bins, "count": 0, "acc_sum": 0.0, "conf_sum": 0.0}
             for b in range(bins)]
    for c, ok in zip(confidence, correct):
        row = table[min(int(c * bins), bins - 1)]
        row["count"] += 1
        row["acc_sum"] += float(ok)
        row["conf_sum"] += float(c)
    ece = sum(abs(r["acc_sum"] - r["conf_sum"]) for r in table) / n if n else math.nan
    out = [{"lo": r["lo"], "hi": r["hi"], "count": r["count"],
            "accuracy": r["acc_sum"] / r["count"] if r["count"] else None,
            "confidence": r["conf_sum"] / r["count"] if r["count"] else None} for r in table]
    return {"ece": ece, "bins": out, "n": n, "mean_confidence": sum(confidence) / n if n else math.nan}
