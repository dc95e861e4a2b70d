"""The decorated functions the resilience benchmarks compare, built the way
each library's documentation shows (shared by test_bench_resilience.py and
resilience_overhead.py).

Every builder returns a callable of one argument (or None when the peer is
not installed).  The wrapped function is ``ident(x) -> x``: what is measured
is the wrapper's overhead over a bare call."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import amulet_native as an
from amulet_native import resilience as rs


def ident(x: Any) -> Any:
    return x


class DependencyDown(ConnectionError):
    pass


def fail(x: Any) -> Any:
    raise DependencyDown


# ---- retry, success path ---------------------------------------------------------------


def handwritten_retry(fn: Callable[..., Any], attempts: int = 3) -> Callable[..., Any]:
    """What a user writes without a library: a generic decorator with a
    for/try/except loop (no waits on the success path)."""
    import random
    import time

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(attempts):
            try:
                return fn(*args, **kwargs)
            except ConnectionError:
                if attempt == attempts - 1:
                    raise
                time.sleep(random.uniform(0, 0.1 * 2**attempt))
        raise AssertionError("unreachable")

    return wrapper


def retry_peers() -> dict[str, Callable[[Any], Any] | None]:
    peers: dict[str, Callable[[Any], Any] | None] = {
        "bare call": ident,
        "amulet_native retry": an.retry(on=ConnectionError, attempts=3)(ident),
        "hand-written loop": handwritten_retry(ident),
    }
    try:
        import tenacity

        peers["tenacity"] = tenacity.retry(
            stop=tenacity.stop_after_attempt(3),
            retry=tenacity.retry_if_exception_type(ConnectionError),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=10),
        )(ident)
    except ImportError:
        peers["tenacity"] = None
    try:
        import stamina

        peers["stamina"] = stamina.retry(on=ConnectionError, attempts=3)(ident)
    except ImportError:
        peers["stamina"] = None
    try:
        import backoff

        peers["backoff"] = backoff.on_exception(backoff.expo, ConnectionError, max_tries=3)(ident)
    except ImportError:
        peers["backoff"] = None
    return peers


# ---- breaker, closed and open ----------------------------------------------------------


def breaker_peers(open_: bool) -> dict[str, Callable[[Any], Any] | None]:
    """Closed: ident through each breaker.  Open: a call refused by an open
    breaker, exception caught (what a caller pays to fail fast)."""
    fn = fail if open_ else ident
    peers: dict[str, Callable[[Any], Any] | None] = {"bare call": ident}
    suffix = "open" if open_ else "closed"
    brk = rs.CircuitBreaker(f"bench-{suffix}", window=100, minimum_calls=5, wait_in_open=3600)
    peers["amulet_native CircuitBreaker"] = brk(fn)
    try:
        import pybreaker

        pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=3600)
        peers["pybreaker"] = pb(fn)
    except ImportError:
        peers["pybreaker"] = None
    try:
        import circuitbreaker

        peers["circuitbreaker"] = circuitbreaker.circuit(
            failure_threshold=5, recovery_timeout=3600, expected_exception=DependencyDown
        )(fn)
    except ImportError:
        peers["circuitbreaker"] = None
    try:
        import purgatory

        factory = purgatory.SyncCircuitBreakerFactory(default_threshold=5, default_ttl=3600)
        peers["purgatory"] = factory(f"bench-{suffix}")(fn)
    except ImportError:
        peers["purgatory"] = None
    if not open_:
        return peers
    # trip every breaker, then measure the refusal (exception caught)
    out: dict[str, Callable[[Any], Any] | None] = {"bare call": _raise_and_catch}
    for name, f in peers.items():
        if f is None or name == "bare call":
            out[name] = f
            continue
        for _ in range(10):
            try:
                f(0)
            except Exception:  # noqa: BLE001, S112 - tripping the breaker
                continue
        out[name] = _catching(f)
    return out


def _raise_and_catch(x: Any) -> Any:
    try:
        raise DependencyDown
    except DependencyDown:
        return None


def _catching(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def call(x: Any) -> Any:
        try:
            return f(x)
        except Exception:  # noqa: BLE001 - every library's refusal type
            return None

    return call


# ---- bulkhead --------------------------------------------------------------------------


def bulkhead_peers() -> dict[str, Callable[[Any], Any]]:
    bh = an.Bulkhead(8, max_wait=0)
    sem = threading.BoundedSemaphore(8)

    def amulet(x: Any) -> Any:
        with bh:
            return x

    def bounded(x: Any) -> Any:
        with sem:
            return x

    return {
        "bare call": ident,
        "amulet_native Bulkhead": amulet,
        "threading.BoundedSemaphore": bounded,
    }


def async_bulkhead_peers(n: int) -> dict[str, Callable[[], Any]]:
    """Coroutine factories doing n acquire/release pairs each."""

    async def amulet() -> None:
        bh = an.Bulkhead(8, max_wait=None)
        for _ in range(n):
            async with bh:
                pass

    async def semaphore() -> None:
        sem = asyncio.Semaphore(8)
        for _ in range(n):
            async with sem:
                pass

    async def bare() -> None:
        for _ in range(n):
            pass

    return {"bare loop": bare, "amulet_native Bulkhead": amulet, "asyncio.Semaphore": semaphore}
