"""Argument types for the command line: a number in a range, or one line saying what was expected.

    --epochs     whole(1)            --seed    whole(0)
    --lr         real(above=0)       --length  whole(0, 100_000)
    --temperature real(0)

Every real number must also be finite: ``inf`` and ``nan`` are never a sensible flag value.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def whole(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """A whole number in ``[low, high]`` (either end open when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        _check(value, low, high, above=None)
        return value

    return parse


def real(low: float | None = None, high: float | None = None, *, above: float | None = None) -> Callable[[str], float]:
    """A finite number in ``[low, high]``, or strictly greater than ``above``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
        _check(value, low, high, above=above)
        return value

    return parse


def _check(value: float, low: float | None, high: float | None, *, above: float | None) -> None:
    if above is not None and not value > above:
        raise argparse.ArgumentTypeError(f"expected a number above {above:g}, got {value:g}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"{low:,} to {high:,}" if low is not None and high is not None else (
            f"at least {low:,}" if low is not None else f"at most {high:,}")
        raise argparse.ArgumentTypeError(f"expected {span}, got {value:,}")
