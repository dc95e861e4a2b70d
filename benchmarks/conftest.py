"""Shared set-up of the decode benchmarks: inputs built once per session and one
timing helper, so every benchmark in a group is measured the same way.

Timing: each benchmark is warmed up (3 calls, untimed), then run with
``benchmark.pedantic`` for as many rounds as fit in ``AMULET_BENCH_SECONDS``
(default 1.0 s) but never fewer than ``AMULET_BENCH_MIN_ROUNDS`` (default 25).
Calls faster than 1 ms are batched into rounds of ~2 ms so the timer
resolution does not matter.  The report uses the median of the rounds.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from _inputs import InputSet, build_inputs
from _peers import Unavailable

BUDGET_SECONDS = float(os.environ.get("AMULET_BENCH_SECONDS", "1.0"))
MIN_ROUNDS = int(os.environ.get("AMULET_BENCH_MIN_ROUNDS", "25"))
MAX_ROUNDS = 2000
ROUND_SECONDS = 0.002


@pytest.fixture(scope="session")
def inputs() -> InputSet:
    return build_inputs()


def make_peer(factory: Callable[[str], Any], peer: str) -> Any:
    """The peer's decoder, or a clean skip naming why it cannot run here."""
    try:
        return factory(peer)
    except Unavailable as exc:
        pytest.skip(str(exc))


def measure(
    benchmark: Any,
    fn: Callable[[Any], Any],
    arg: Any,
    *,
    group: str,
    peer: str,
    kind: str,
    pixels: int = 0,
) -> Any:
    """Warm up fn(arg), calibrate, and time it; returns fn(arg)'s last result."""
    result = fn(arg)
    for _ in range(2):
        fn(arg)
    t0 = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - t0 < 0.02:
        fn(arg)
        calls += 1
    per_call = (time.perf_counter() - t0) / calls
    iterations = max(1, math.ceil(ROUND_SECONDS / per_call)) if per_call < 0.001 else 1
    rounds = int(BUDGET_SECONDS / (per_call * iterations))
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, rounds))
    benchmark.group = group
    benchmark.extra_info.update({"peer": peer, "kind": kind, "pixels": pixels})
    benchmark.pedantic(fn, args=(arg,), rounds=rounds, iterations=iterations, warmup_rounds=1)
    return result


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    """Store machine and library versions in the JSON, so the report states
    what was actually measured."""
    from _versions import collect

    machine_info["amulet_bench"] = collect()
