"""Bulkhead, timeout, error_context and error_stats."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

import amulet_native as an
from amulet_native import resilience as rs
from amulet_native.errors import BulkheadFullError, OperationTimeoutError, ValidationError


def test_bulkhead_sync_bounds_concurrency() -> None:
    bh = an.Bulkhead(3, max_wait=0, name="t-bh")
    inside = 0
    peak = 0
    lock = threading.Lock()
    gate = threading.Event()
    full: list[BulkheadFullError] = []

    @bh
    def work() -> None:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        gate.wait(10)
        with lock:
            inside -= 1

    def run() -> None:
        try:
            work()
        except BulkheadFullError as e:
            full.append(e)

    ts = [threading.Thread(target=run) for _ in range(3)]
    for t in ts:
        t.start()
    for _ in range(1000):
        if bh.in_flight == 3:
            break
        threading.Event().wait(0.01)
    run()  # the 4th is refused at once
    gate.set()
    for t in ts:
        t.join(10)
    assert peak == 3 and len(full) == 1
    assert full[0].code == "bulkhead.full" and full[0].name == "t-bh"
    assert bh.in_flight == 0 and bh.rejected == 1


def test_bulkhead_waits_up_to_max_wait() -> None:
    bh = an.Bulkhead(1, max_wait=5.0)
    bh.acquire()
    released = threading.Timer(0.05, bh.release)
    released.start()
    with bh:  # waits for the timer's release
        assert bh.in_flight == 1
    short = an.Bulkhead(1, max_wait=0.01)
    with short, pytest.raises(BulkheadFullError):
        short.acquire()


def test_bulkhead_async() -> None:
    bh = an.Bulkhead(2, max_wait=None)
    peak = 0
    inside = 0

    @bh
    async def work() -> None:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0.001)
        inside -= 1

    async def main() -> None:
        await asyncio.gather(*(work() for _ in range(50)))
        quick = an.Bulkhead(1, max_wait=0.01)
        async with quick:
            with pytest.raises(BulkheadFullError):
                async with quick:
                    pass
        # a cancelled waiter gives its turn away
        b1 = an.Bulkhead(1, max_wait=None)
        await b1.aacquire()
        waiter = asyncio.create_task(b1.aacquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        b1.release()
        await asyncio.wait_for(b1.aacquire(), 5)
        b1.release()

    asyncio.run(main())
    assert peak == 2 and bh.in_flight == 0


def test_bulkhead_bad_arguments() -> None:
    with pytest.raises(ValidationError):
        an.Bulkhead(0)
    with pytest.raises(ValidationError):
        an.Bulkhead(1, max_wait=float("nan"))


def sync_fn() -> None:
    pass


def test_timeout_cancels_and_raises_a_coded_timeout() -> None:
    cancelled = []

    @rs.timeout(0.05)
    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    async def main() -> None:
        with pytest.raises(OperationTimeoutError) as ei:
            await slow()
        assert isinstance(ei.value, TimeoutError) and ei.value.code == "timeout"
        async with rs.timeout(5):
            await asyncio.sleep(0)
        # an outer cancellation is not turned into a timeout
        t = asyncio.create_task(slow())
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    asyncio.run(main())
    assert len(cancelled) == 2
    with pytest.raises(ValidationError):
        rs.timeout(0)
    with pytest.raises(ValidationError):
        rs.timeout(1)(sync_fn)  # type: ignore[arg-type]


def test_error_context_attaches_logs_once_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    an.error_stats(reset=True)
    caplog.set_level(logging.ERROR, logger="amulet_native.resilience")
    with (
        pytest.raises(an.ModelError) as ei,
        an.error_context("request", request_id="r1"),
        an.error_context("predict", image_id=42),  # nested in "request"
    ):
        raise an.ModelError("bad weights")
    assert ei.value.context["operation"] == "predict"
    assert ei.value.context["image_id"] == 42 and ei.value.context["request_id"] == "r1"
    records = [r for r in caplog.records if r.name == "amulet_native.resilience"]
    assert len(records) == 1  # logged once although nested
    r = records[0]
    assert r.operation == "predict" and r.operations == ["request", "predict"]  # type: ignore[attr-defined]
    assert r.error_code == "model" and r.error_context == {"request_id": "r1", "image_id": 42}  # type: ignore[attr-defined]
    with pytest.raises(KeyError) as e2, an.error_context("lookup", key="k"):
        raise KeyError("k")
    assert any("lookup" in n for n in e2.value.__notes__)
    stats = an.error_stats()
    assert stats[("predict", "model")]["count"] == 1
    assert stats[("lookup", "KeyError")]["count"] == 1
    assert stats[("lookup", "KeyError")]["rate"] > 0
    an.error_stats(reset=True)
    assert an.error_stats() == {}


def test_error_context_decorator_async_and_cancellation() -> None:
    an.error_stats(reset=True)

    @an.error_context("job", kind="thumb")
    async def job(fail: bool) -> int:
        await asyncio.sleep(0)
        if fail:
            raise ValueError("x")
        return 1

    @an.error_context("sleeper")
    async def sleeper() -> None:
        await asyncio.sleep(30)

    async def main() -> None:
        assert await job(False) == 1
        with pytest.raises(ValueError):
            await job(True)
        t = asyncio.create_task(sleeper())
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    asyncio.run(main())
    stats = an.error_stats()
    assert list(stats) == [("job", "ValueError")]

    @an.error_context("sync")
    def s() -> None:
        raise an.ValidationError("v")

    with pytest.raises(an.ValidationError):
        s()
    assert an.error_stats()[("sync", "validation")]["count"] == 1


def test_error_context_is_per_task() -> None:
    seen: dict[str, Any] = {}

    async def task(name: str) -> None:
        try:
            with an.error_context(name, who=name):
                await asyncio.sleep(0.01)
                raise an.NetworkError("down")
        except an.NetworkError as e:
            seen[name] = dict(e.context)

    async def main() -> None:
        await asyncio.gather(task("a"), task("b"))

    asyncio.run(main())
    assert seen["a"] == {"operation": "a", "who": "a"}
    assert seen["b"] == {"operation": "b", "who": "b"}
