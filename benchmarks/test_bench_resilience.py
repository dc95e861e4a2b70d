"""Resilience wrappers against their usual peers (pytest-benchmark suite).

Every timed call makes OPS calls through the wrapper (``ident(x) -> x``
decorated the way each library documents), paired round by round with the
amulet_native wrapper (``measure(ref=...)``).  Groups:

- @retry success path: tenacity, stamina, backoff, a hand-written
  for/try/except decorator, and the bare call;
- closed breaker: pybreaker, circuitbreaker, purgatory (its sync factory);
- open breaker: the refusal, exception caught;
- bulkhead acquire/release: threading.BoundedSemaphore; asyncio.Semaphore.

The per-call overhead in nanoseconds (the number the issue's targets are set
in) comes from resilience_overhead.py, which subtracts the bare call round by
round; the failing-dependency simulation is resilience_simulation.py.  Both
write into benchmarks/results/resilience.md.  No timing assertions here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import _resilience_peers as peers
import pytest
from conftest import measure

OPS = 1000
R = range(OPS)


def batch(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run(_: Any) -> None:
        for i in R:
            fn(i)

    return run


def _group(name: str, group: dict[str, Callable[[Any], Any] | None], ref: str) -> list[Any]:
    return [pytest.param(name, group, peer, ref, id=peer) for peer in group]


RETRY = peers.retry_peers()
CLOSED = peers.breaker_peers(open_=False)
OPEN = peers.breaker_peers(open_=True)
BULK = peers.bulkhead_peers()


@pytest.mark.parametrize(
    ("group_name", "group", "peer", "ref"),
    _group(f"@retry success path (x{OPS})", RETRY, "amulet_native retry")
    + _group(f"closed breaker call (x{OPS})", CLOSED, "amulet_native CircuitBreaker")
    + _group(f"open breaker refusal (x{OPS})", OPEN, "amulet_native CircuitBreaker")
    + _group(f"bulkhead acquire+release (x{OPS})", BULK, "amulet_native Bulkhead"),
)
def test_wrapper(
    benchmark: Any, group_name: str, group: dict[str, Any], peer: str, ref: str
) -> None:
    fn = group[peer]
    if fn is None:
        pytest.skip(f"{peer} is not installed (pip install '.[bench]')")
    measure(
        benchmark,
        batch(fn),
        None,
        group=group_name,
        peer=peer,
        kind="ours" if peer == ref else "peer",
        ref=None if peer == ref else batch(group[ref]),
    )


ASYNC = peers.async_bulkhead_peers(OPS)


@pytest.mark.parametrize("peer", list(ASYNC))
def test_async_bulkhead(benchmark: Any, peer: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        ref = ASYNC["amulet_native Bulkhead"]
        measure(
            benchmark,
            lambda _: loop.run_until_complete(ASYNC[peer]()),
            None,
            group=f"async bulkhead acquire+release (x{OPS})",
            peer=peer,
            kind="ours" if peer == "amulet_native Bulkhead" else "peer",
            ref=None
            if peer == "amulet_native Bulkhead"
            else (lambda _: loop.run_until_complete(ref())),
        )
    finally:
        loop.close()
