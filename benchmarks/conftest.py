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

import json
import math
import os
import statistics
import subprocess
import sys

# NumPy's OpenBLAS otherwise keeps worker threads that spin on the second of
# the two cores; no benchmark uses BLAS.  Must be set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import time
from collections.abc import Callable
from pathlib import Path
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


MEMORY_REPEATS = 3  # fresh processes per memory operation and run; the median is kept


def _memory_run(script: Path, op: str, warm: Path, data: Path) -> dict[str, Any]:
    """One fresh ``script OP WARM DATA`` process (``_memory.py`` or
    ``_stream_memory.py``); an operation whose peer is not installed skips."""
    proc = subprocess.run(
        [sys.executable, str(script), op, str(warm), str(data)],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, OPENBLAS_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="131072"),
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        if "Unavailable" in proc.stderr or "not available" in proc.stderr:
            pytest.skip(f"{op}: {last}")
        raise RuntimeError(f"{script.name} {op} failed: {proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def measure_memory(
    benchmark: Any, group: str, script: Path, op: str, warm: Path, data: Path, **extra: Any
) -> None:
    """Peak memory of ``op`` in MEMORY_REPEATS fresh processes, medians stored in
    ``extra_info`` (with ``extra``); the timing pytest-benchmark records here is
    that of the subprocesses and is not reported."""
    benchmark.group = group
    samples = benchmark.pedantic(
        lambda: [_memory_run(script, op, warm, data) for _ in range(MEMORY_REPEATS)],
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info.update(
        {
            "peer": op,
            "kind": "memory",
            "rss_peak_kib": statistics.median(s["rss_peak_kib"] for s in samples),
            "rss_peak_kib_samples": [s["rss_peak_kib"] for s in samples],
            "tracemalloc_peak_bytes": statistics.median(
                s["tracemalloc_peak_bytes"] for s in samples
            ),
            "method": samples[0]["method"],
            "shape": samples[0]["shape"],
            **extra,
        }
    )
