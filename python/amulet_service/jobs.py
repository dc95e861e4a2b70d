"""Background jobs: a batch of images classified off the request path.

Engine: RQ on the service's Redis.  Why RQ rather than arq: the work is
synchronous, CPU-bound native code (decode, fingerprints, the model), which is
what RQ's plain functions and forked work-horses run; arq is asyncio-first and
shines for I/O-bound jobs, which this is not.  RQ's fork-per-job also isolates
a job that crashes or is SIGKILLed (the job is marked failed/abandoned, the
worker lives on), workers are plain processes that run on any host with the
Redis URL, and job state, progress (``job.meta``) and results live in Redis, so
a job outlives any API worker.

The images themselves go to Redis as blobs (``amulet:blob:<digest>``, with a
TTL) and the job carries only their keys.  Without Redis, :class:`LocalJobs`
runs the same function in a thread of the API worker (one host, not durable).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import amulet_native as an

from .model import Classifier

BLOB_PREFIX = "amulet:blob:"
BLOB_TTL = 3600
QUEUE_NAME = "amulet"

# The model of this worker process, set by amulet_service.worker before work
# starts (inherited by RQ's forked work-horses, so no job loads it again).
_worker_model: Classifier | None = None
_worker_refresh: Callable[[], Any] | None = None
_DECODE_BOX = (1024, 1024)


def set_worker_model(model: Classifier, refresh: Callable[[], Any] | None = None) -> None:
    global _worker_model, _worker_refresh
    _worker_model = model
    _worker_refresh = refresh


def classify_items(
    model: Classifier,
    fetch: Callable[[str], bytes | None],
    keys: list[str],
    top_k: int,
    progress: Callable[[int, int], None],
) -> list[dict[str, Any]]:
    """Classify each blob; one result dict per key (label list or error code)."""
    results: list[dict[str, Any]] = []
    for i, key in enumerate(keys):
        entry: dict[str, Any] = {"index": i, "digest": key}
        data = fetch(key)
        if data is None:
            entry["error"] = "job.blob_expired"
        else:
            try:
                rgb = an.decode(data, max_size=_DECODE_BOX)
                entry["predictions"] = model.classify([rgb], top_k=top_k)[0].to_json()
            except an.AmuletError as exc:
                entry["error"] = exc.code
        results.append(entry)
        progress(i + 1, len(keys))
    return results


def classify_batch(keys: list[str], top_k: int = 5) -> list[dict[str, Any]]:
    """The RQ job: classify the blobs under keys, reporting progress in job.meta."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None and _worker_model is not None, "run by amulet_service.worker"
    if _worker_refresh is not None:
        _worker_refresh()
    conn = job.connection

    def fetch(key: str) -> bytes | None:
        value = conn.get(BLOB_PREFIX + key)
        return value if isinstance(value, bytes) else None

    def progress(done: int, total: int) -> None:
        job.meta["progress"] = {"done": done, "total": total}
        job.save_meta()  # type: ignore[no-untyped-call]

    progress(0, len(keys))
    return classify_items(_worker_model, fetch, keys, top_k, progress)


def _unavailable(exc: Exception) -> an.AmuletError:
    return an.AmuletError(
        f"the job queue is unavailable: {exc}", code="http.503", context={"retry_after": 1.0}
    )


class RQJobs:
    """Submit and inspect jobs on RQ (``redis_url``).  While Redis is down both
    calls raise a 503 problem (the queue is the durable store: nothing is
    accepted that could not be kept)."""

    durable = True

    def __init__(self, redis_url: str) -> None:
        import redis
        from rq import Queue

        self.redis = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.queue = Queue(QUEUE_NAME, connection=self.redis)

    def submit(self, blobs: dict[str, bytes], order: list[str], top_k: int) -> str:
        import redis

        try:
            return self._submit(blobs, order, top_k)
        except redis.RedisError as exc:
            raise _unavailable(exc) from None

    def _submit(self, blobs: dict[str, bytes], order: list[str], top_k: int) -> str:
        pipe = self.redis.pipeline()
        for digest, data in blobs.items():
            pipe.set(BLOB_PREFIX + digest, data, ex=BLOB_TTL)
        pipe.execute()
        job = self.queue.enqueue_call(
            "amulet_service.jobs.classify_batch",
            args=(order, top_k),
            result_ttl=BLOB_TTL,
            failure_ttl=BLOB_TTL,
            timeout=600,
            meta={"progress": {"done": 0, "total": len(order)}},
        )
        return str(job.id)

    def status(self, job_id: str) -> dict[str, Any] | None:
        import redis

        try:
            return self._status(job_id)
        except redis.RedisError as exc:
            raise _unavailable(exc) from None

    def _status(self, job_id: str) -> dict[str, Any] | None:
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            job = Job.fetch(job_id, connection=self.redis)
        except NoSuchJobError:
            return None
        state = job.get_status(refresh=True)
        out: dict[str, Any] = {
            "id": job_id,
            "status": str(getattr(state, "value", state)),
            "progress": job.get_meta(refresh=False).get("progress", {}),
        }
        if out["status"] == "finished":
            out["results"] = job.return_value()
        elif out["status"] == "failed":
            latest = job.latest_result()
            out["error"] = (
                (getattr(latest, "exc_string", None) or "failed").strip().splitlines()[-1]
            )
        return out

    def close(self) -> None:
        self.redis.close()


class LocalJobs:
    """Jobs in a thread of this process: the no-Redis fallback (not durable)."""

    durable = False

    def __init__(self, model: Classifier, threads: int = 1) -> None:
        self.model = model
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="jobs")
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def submit(self, blobs: dict[str, bytes], order: list[str], top_k: int) -> str:
        job_id = uuid.uuid4().hex
        state: dict[str, Any] = {
            "id": job_id,
            "status": "queued",
            "progress": {"done": 0, "total": len(order)},
            "created": time.time(),
        }
        with self._lock:
            self._jobs[job_id] = state

        def progress(done: int, total: int) -> None:
            state["progress"] = {"done": done, "total": total}

        def run() -> None:
            state["status"] = "started"
            try:
                state["results"] = classify_items(self.model, blobs.get, order, top_k, progress)
                state["status"] = "finished"
            except Exception as exc:  # noqa: BLE001 - reported through status(), never lost
                state["status"] = "failed"
                state["error"] = repr(exc)

        self._pool.submit(run)
        return job_id

    def status(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            state = self._jobs.get(job_id)
            return {k: v for k, v in state.items() if k != "created"} if state else None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
