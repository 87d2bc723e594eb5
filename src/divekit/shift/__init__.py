"""Distribution shift: detect, estimate and correct covariate, label and concept shift.

    covariate   p(x) moves, p(y|x) fixed: domain-classifier importance weights, weighted training
    label       p(y) moves, p(x|y) fixed: black-box shift estimation, EM prior adjustment
    concept     p(y|x) moves over time: a drifting stream, online and windowed learners, a drift detector

All tensors are batch-first: inputs ``(n, d)`` or images ``(n, 28, 28)``, labels ``(n,)``, class
vectors ``(classes,)``. Results over several seeds are summarised by :func:`mean_ci`; the shift
experiments run their small models under :func:`divekit.cpu.single_thread`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Two-sided 95% Student t quantiles t_{0.975, df} for df = 1..30 (standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}; beyond 30 degrees of freedom the normal 1.96 (off by under 2%)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval, t_{0.975, n-1} * sd / sqrt(n) (sd with n - 1).

    With a single value the half-width is NaN: one seed says nothing about the spread.
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile_975(n - 1) * sd / math.sqrt(n)


def format_ci(values: Sequence[float], *, percent: bool = False, digits: int = 3) -> str:
    """``"0.812 ± 0.011"`` (or ``"81.2% ± 1.1"`` with ``percent``) for the mean and its 95% t interval."""
    mean, half = mean_ci(values)
    if percent:
        return f"{100 * mean:.1f}% ± {100 * half:.1f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


