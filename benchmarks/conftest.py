"""Shared set-up of the benchmarks: inputs built once per session and one
timing helper, so every benchmark in a group is measured the same way.

Timing: each benchmark is warmed up (3 calls, untimed; only 1 for calls slower
than 0.25 s), then run with ``benchmark.pedantic`` for as many rounds as fit in
``AMULET_BENCH_SECONDS`` (default 1.0 s) but never fewer than
``AMULET_BENCH_MIN_ROUNDS`` (default 25; the slow pipeline groups ask for
fewer, see ``measure``).  Calls faster than 1 ms are batched into rounds of
~2 ms so the timer resolution does not matter.  The report uses the median of
the rounds.  Peers are paired with their amulet_native reference round by
round (see ``measure``), and the report's ratios are medians of those paired
ratios.
"""

from __future__ import annotations

import math
import os

# NumPy's OpenBLAS otherwise keeps worker threads that spin on the second of
# the two cores; no benchmark uses BLAS.  Must be set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
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
SLOW_CALL_SECONDS = 0.25  # a first call this slow is the only warm-up


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
    ref: Callable[[Any], Any] | None = None,
    min_rounds: int | None = None,
) -> Any:
    """Warm up fn(arg), calibrate, and time it; returns fn(arg)'s last result.

    With ``ref`` (the like-for-like amulet_native call), every round first runs
    ref(arg) untimed by pytest-benchmark but timed here, so the report can take
    the ratio within each round: interleaved A/B pairs, robust to load bursts
    from neighbours on this shared machine.

    A first call slower than SLOW_CALL_SECONDS (PNG-encoding the mosaic takes
    ~2 s) is the only warm-up and calibration.  For calls so slow that the
    defaults would make the suite too long, ``min_rounds`` lowers
    AMULET_BENCH_MIN_ROUNDS (never raises it, so a smoke run with
    AMULET_BENCH_MIN_ROUNDS=5 stays quick).
    """
    t0 = time.perf_counter()
    result = fn(arg)
    per_call = time.perf_counter() - t0
    slow = per_call > SLOW_CALL_SECONDS  # that call was warm-up enough
    if not slow:
        for _ in range(2):
            fn(arg)
        t0 = time.perf_counter()
        calls = 0
        while calls < 3 or time.perf_counter() - t0 < 0.02:
            fn(arg)
            calls += 1
        per_call = (time.perf_counter() - t0) / calls
    iterations = max(1, math.ceil(ROUND_SECONDS / per_call)) if per_call < 0.001 else 1
    if ref is not None:
        iterations = 1  # pairs need one call per round
    round_cost = per_call * iterations * (2 if ref is not None else 1)
    floor = MIN_ROUNDS if min_rounds is None else min(min_rounds, MIN_ROUNDS)
    rounds = max(floor, min(MAX_ROUNDS, int(BUDGET_SECONDS / round_cost)))
    benchmark.group = group
    benchmark.extra_info.update({"peer": peer, "kind": kind, "pixels": pixels})
    ref_times: list[float] = []

    def time_ref() -> None:
        assert ref is not None
        t = time.perf_counter()
        ref(arg)
        ref_times.append(time.perf_counter() - t)

    setup = time_ref if ref is not None else None
    benchmark.pedantic(
        fn,
        args=(arg,),
        setup=setup,
        rounds=rounds,
        iterations=iterations,
        warmup_rounds=0 if slow else 1,
    )
    if ref is not None:
        benchmark.extra_info["ref_times"] = ref_times[-rounds:]
    return result


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    """Store machine and library versions in the JSON, so the report states
    what was actually measured."""
    from _versions import collect

    machine_info["amulet_bench"] = collect()
