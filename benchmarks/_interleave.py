"""The timing loop of the diagnostic scripts (breakdown.py, thumb_breakdown.py,
png_strategy.py): every function once untimed, then ``rounds`` rounds that run
each function once in a fresh random order, so load bursts from neighbours on
this shared machine hit all of them alike.  Ratios are then taken per round."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each function, one entry per round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    order = list(fns)
    for _ in range(rounds):
        random.shuffle(order)
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times
