"""The model path of a request: bulkhead -> micro-batching queue -> circuit breaker -> model.

:class:`MicroBatcher` collects requests that arrive together into one model
call.  Requests go into an ``an.ThreadSafeQueue`` from the event loop
(``aput``: the loop never blocks); ``threads`` batch threads each take the
first waiting request, then keep taking for up to ``max_wait`` seconds or
until ``max_batch`` requests are in hand, call the model once through the
circuit breaker, and resolve each request's future on its loop.  With
``max_wait=0`` a batch holds whatever was already queued (no added latency).

The bulkhead bounds how many requests may wait for the model at once (503
``bulkhead.full`` beyond it, instead of an unbounded queue); the breaker opens
after consecutive model failures (503 ``circuit.open`` with Retry-After) and
lets a probe through after ``reset`` seconds.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import amulet_native as an
from amulet_native.resilience import Bulkhead, CircuitBreaker

from .model import Array, Classifier, Prediction


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    failures: int = 0
    max_seen: int = 0
    by_size: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        mean = self.items / self.batches if self.batches else 0.0
        return {
            "batches": self.batches,
            "items": self.items,
            "mean_batch": round(mean, 3),
            "max_batch_seen": self.max_seen,
            "failures": self.failures,
        }


@dataclass
class _Request:
    image: Array
    top_k: int
    future: asyncio.Future[tuple[Prediction, dict[str, float]]]
    loop: asyncio.AbstractEventLoop
    queued: float


class MicroBatcher:
    """Batched, guarded model calls for asyncio handlers (see the module docstring)."""

    def __init__(
        self,
        model: Classifier,
        *,
        max_batch: int = 8,
        max_wait: float = 0.002,
        threads: int = 2,
        concurrency: int = 64,
        breaker_failures: int = 5,
        breaker_reset: float = 10.0,
    ) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.stats = BatchStats()
        self._stats_lock = threading.Lock()
        self._queue: an.ThreadSafeQueue[_Request] = an.ThreadSafeQueue(maxsize=concurrency)
        self.bulkhead = Bulkhead(concurrency, max_wait=0.0, name="model")
        # Opens when half of the last 20 calls (at least breaker_failures) failed.
        self.breaker = CircuitBreaker(
            f"model:{model.name}",
            failure_rate=0.5,
            window=20,
            minimum_calls=breaker_failures,
            wait_in_open=breaker_reset,
            half_open_calls=1,
        )
        self._threads = [
            threading.Thread(target=self._run, name=f"batcher-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._queue.close()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=5)

    async def classify(self, image: Array, top_k: int) -> tuple[Prediction, dict[str, float]]:
        """The prediction for one image and its timings (queue_ms, model_ms, batch)."""
        async with self.bulkhead:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[tuple[Prediction, dict[str, float]]] = loop.create_future()
            await self._queue.aput(_Request(image, top_k, fut, loop, time.perf_counter()))
            return await fut

    def _take_batch(self) -> list[_Request] | None:
        try:
            first = self._queue.get()
        except an.QueueClosed:
            return None
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except (queue.Empty, an.QueueClosed):
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            started = time.perf_counter()
            try:
                preds = self._call([r.image for r in batch], max(r.top_k for r in batch))
            except BaseException as exc:  # noqa: BLE001 - every waiter gets the error, the thread lives on
                with self._stats_lock:
                    self.stats.failures += 1
                for r in batch:
                    r.loop.call_soon_threadsafe(_settle, r.future, None, exc)
                continue
            done = time.perf_counter()
            with self._stats_lock:
                s = self.stats
                s.batches += 1
                s.items += len(batch)
                s.max_seen = max(s.max_seen, len(batch))
                s.by_size[len(batch)] = s.by_size.get(len(batch), 0) + 1
            for r, p in zip(batch, preds):
                timings = {
                    "queue_ms": (started - r.queued) * 1e3,
                    "model_ms": (done - started) * 1e3,
                    "batch_size": float(len(batch)),
                }
                trimmed = Prediction(p.labels[: r.top_k], p.scores[: r.top_k])
                r.loop.call_soon_threadsafe(_settle, r.future, (trimmed, timings), None)

    def _call(self, images: Sequence[Array], top_k: int) -> list[Prediction]:
        """The model through the breaker (CircuitOpenError at once while open)."""
        try:
            preds: list[Prediction] = self.breaker.call(self.model.classify, images, top_k=top_k)
        except an.AmuletError:
            raise
        except Exception as exc:
            raise an.ModelError(f"model {self.model.name} failed: {exc}") from exc
        return preds

    def snapshot(self) -> dict[str, Any]:
        with self._stats_lock:
            stats = self.stats.to_json()
        return {
            **stats,
            "queued": self._queue.qsize(),
            "in_flight": self.bulkhead.in_flight,
            "breaker": self.breaker.state.name.lower(),
            "max_batch": self.max_batch,
            "max_wait_ms": self.max_wait * 1e3,
        }


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():  # the request was cancelled (client gone)
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
