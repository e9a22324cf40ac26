"""Order statistics for small samples, and how to print them."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linearly interpolated between ranks.

    The same definition as ``numpy.percentile``'s default (and ``statistics.quantiles`` with
    ``method="inclusive"``): p50 of an even-sized sample is the mean of the middle two.

    Raises:
        ValueError: ``values`` is empty or ``q`` is outside 0..100.
    """
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float | None, digits: int = 1) -> str:
    """``seconds`` as milliseconds for a table cell (``—`` when unknown)."""
    if seconds is None or math.isnan(seconds):
        return "—"
    return f"{seconds * 1000:.{digits}f} ms"


def p50_max(values: Sequence[float], digits: int = 1) -> str:
    """``p50 / max`` of ``values`` in milliseconds."""
    if not values:
        return "—"
    return f"{ms(percentile(values, 50), digits)} / {ms(max(values), digits)}"


def latency_cells(values: Sequence[float], digits: int = 2) -> tuple[str, str, str, int]:
    """``p50``, ``p99``, ``max`` (milliseconds) and ``n`` of ``values``, for a table row."""
    return (
        ms(percentile(values, 50), digits),
        ms(percentile(values, 99), digits),
        ms(max(values), digits),
        len(values),
    )
