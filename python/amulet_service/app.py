"""The image recognition API, built on amulet_native the way its README shows.

Run it::

    uvicorn --factory amulet_service.app:create_app --workers 4     # from python/

Endpoints (plus ``/livez /readyz /startupz /health /metrics`` from ``install``):

* ``POST /v1/classify?top_k=5``: raw image body or multipart ``file``; the top
  labels with scores, image info, digest, timings, whether it was a cache hit.
* ``POST /v1/thumbnail?size=256&fit=contain|cover&format=jpeg|png``
* ``GET /v1/gallery``, ``POST /v1/gallery?label=...`` (labelled references)
* ``POST /v1/jobs`` (multipart, several ``files``), ``GET /v1/jobs/{id}``,
  ``GET /v1/jobs/{id}/events`` (server-sent events until the job ends)
* ``GET /v1/stats``: cache hit rates, batching, memory pressure, recent errors.

Every error is ``application/problem+json`` from the library's one table.
"""

import asyncio
import collections
import contextlib
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

import amulet_native as an
from amulet_native.integrations.fastapi import DecodedImage, ImageUpload, install

from .gallery import Gallery, valid_label
from .inference import MicroBatcher
from .jobs import LocalJobs, RQJobs
from .model import Classifier, OnnxClassifier
from .settings import Settings

_MIB = 1 << 20
_MAX_JOB_FILES = 64


def build_model(settings: Settings) -> tuple[Classifier, Gallery | None]:
    """The configured model (and the gallery behind the default one), warmed up."""
    if settings.model.endswith(".onnx"):
        labels = [s.strip() for s in settings.model_labels.split(",") if s.strip()]
        onnx = OnnxClassifier(settings.model, labels, sessions=settings.thread_pool_size)
        onnx.warm_up()
        return onnx, None
    gallery = Gallery(settings.gallery_dir, max_side=512)
    gallery.dir.mkdir(parents=True, exist_ok=True)
    # Workers start together: one fills the sample gallery, the others wait.
    with open(gallery.dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        gallery.ensure_sample()
    gallery.refresh()
    gallery.recognizer.warm_up()
    return gallery.recognizer, gallery


class LingeringClose:
    """Pure ASGI: before a 413 goes out for a *chunked* upload that is still
    arriving, read and discard what the client sends (bounded: ``max_bytes``,
    and ``idle`` seconds without data), as nginx's lingering close does.

    Why: uvicorn closes the connection right after answering a request whose
    body it has not read.  A client still sending then gets a TCP reset, which
    can destroy the 413 before the client reads it (measured in the load test:
    about 1 in 1,000 requests looked like a dropped connection).  Declared
    oversize bodies are answered at once: their client waits for the answer."""

    def __init__(self, app: Any, max_bytes: int = 16 * _MIB, idle: float = 0.25) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle = idle

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or any(k == b"content-length" for k, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        state = {"done": False}

        async def tracked() -> Any:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["done"] = True
            return message

        async def drain_first(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 413:
                drained = 0
                while not state["done"] and drained < self.max_bytes:
                    try:
                        chunk = await asyncio.wait_for(tracked(), self.idle)
                    except asyncio.TimeoutError:
                        break
                    drained += len(chunk.get("body", b""))
            await send(message)

        await self.app(scope, tracked, drain_first)


class ErrorLog:
    """Pure ASGI: remembers the last responses with status >= 400 for /v1/stats."""

    def __init__(self, app: Any, size: int = 50) -> None:
        self.app = app
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self.counts: collections.Counter[int] = collections.Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self.counts[status // 100 * 100] += 1
                if status >= 400:
                    self.recent.append(
                        {
                            "time": round(time.time(), 3),
                            "status": status,
                            "method": scope["method"],
                            "path": scope["path"],
                        }
                    )
            await send(message)

        await self.app(scope, receive, watch)


@dataclass
class Service:
    """Per-worker state, made by the lifespan."""

    settings: Settings
    model: Classifier
    gallery: Gallery | None
    batcher: MicroBatcher
    results: Any  # an.Cache or an.TieredCache of result JSON by (model, gallery, digest, k)
    jobs: RQJobs | LocalJobs
    memory: an.MemoryMonitor
    started: float
    result_hits: an.AtomicCounter = dataclasses.field(default_factory=an.AtomicCounter)
    result_misses: an.AtomicCounter = dataclasses.field(default_factory=an.AtomicCounter)

    def result_key(self, digest: str, top_k: int) -> str:
        size = len(self.gallery.recognizer) if self.gallery is not None else 0
        return f"{self.model.name}:{self.model.version}:{size}:{digest}:{top_k}"


def _results_cache(settings: Settings) -> Any:
    l1: an.Cache[str, str] = an.Cache(
        max_items=settings.cache_max_size, ttl=settings.cache_default_ttl
    )
    if not settings.redis_url:
        return l1
    return an.TieredCache(
        l1,
        settings.redis_url,
        prefix="amulet:result:",
        ttl=settings.cache_default_ttl,
        timeout=0.25,
        backoff=1.0,
    )


def _rate_store(settings: Settings) -> Any:
    """Where rate-limit state lives: Redis (every host agrees) or the shared arena
    next to the gallery (every worker of this host agrees)."""
    if settings.rate_limit is None:
        return None
    from amulet_native import ratelimit

    if settings.redis_url:
        return ratelimit.RedisStore(settings.redis_url, prefix="amulet:rl:")
    run_dir = os.path.join(os.path.dirname(os.path.abspath(settings.gallery_dir)), "run")
    os.makedirs(run_dir, exist_ok=True)
    return ratelimit.SharedStore(run_dir)


def _now() -> float:
    return time.perf_counter()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app factory (``uvicorn --factory``); settings from the environment by default."""
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model, gallery = await asyncio.to_thread(build_model, settings)
        batch = settings.batch_max_size or (8 if getattr(model, "batchable", False) else 1)
        batcher = MicroBatcher(
            model,
            max_batch=batch,
            max_wait=settings.batch_max_wait_ms / 1e3,
            threads=settings.thread_pool_size,
            concurrency=settings.model_concurrency,
            breaker_failures=settings.breaker_failures,
            breaker_reset=settings.breaker_reset,
        )
        batcher.start()
        jobs: RQJobs | LocalJobs = (
            RQJobs(settings.redis_url) if settings.redis_url else LocalJobs(model)
        )
        app.state.svc = Service(
            settings,
            model,
            gallery,
            batcher,
            _results_cache(settings),
            jobs,
            an.MemoryMonitor(settings.memory_warning_threshold, settings.memory_critical_threshold),
            time.time(),
        )
        health = getattr(app.state, "amulet_health", None)
        if health is not None and hasattr(health, "mark_started"):
            health.mark_started()
        try:
            yield
        finally:
            batcher.close()
            jobs.close()

    app = FastAPI(title="Amulet recognition API", version="1.0", lifespan=lifespan)
    side = settings.decode_max_side
    image_cache = (
        an.ImageCache(max_bytes=settings.image_cache_size * _MIB)
        if settings.image_cache_size
        else None
    )
    install(
        app,
        max_body=settings.max_upload_mb * _MIB,
        body_limits={"/v1/jobs": settings.max_upload_mb * _MIB * 8},
        memory_mb=settings.request_memory_mb,
        rate_limit=settings.rate_limit,
        rate_store=_rate_store(settings),
        max_in_flight=settings.max_in_flight,
        deadline=settings.request_deadline,
        image_cache=image_cache,
        log_requests=settings.log_requests,
    )
    errors = ErrorLog  # the outermost layer: it sees install's problem responses too
    app.add_middleware(errors)
    app.add_middleware(LingeringClose)  # outermost: it sees the raw request body
    upload = ImageUpload(
        max_bytes=settings.max_upload_mb * _MIB,
        max_size=(side, side),
        cache=image_cache if image_cache is not None else False,
    )

    def svc(request: Request) -> Service:
        service: Service = request.app.state.svc
        return service

    SvcDep = Annotated[Service, Depends(svc)]
    Image = Annotated[DecodedImage, Depends(upload)]
    Started = Annotated[float, Depends(_now)]

    async def predict(
        s: Service, key: str, image: np.ndarray[Any, Any], top_k: int, computed: list[bool]
    ) -> str:
        pred, timings = await s.batcher.classify(image, top_k)
        computed.append(True)
        return json.dumps(
            {"predictions": pred.to_json(), "timings": {k: round(v, 3) for k, v in timings.items()}}
        )

    predict_cached: dict[int, Any] = {}

    def cached_predict(s: Service) -> Any:
        # One @cached wrapper per results cache (the app has one; tests may make several apps).
        fn = predict_cached.get(id(s.results))
        if fn is None:
            fn = an.cached(cache=s.results, key=lambda s_, key, *_: key)(predict)
            predict_cached[id(s.results)] = fn
        return fn

    @app.post("/v1/classify")
    async def classify(
        started: Started,
        s: SvcDep,
        image: Image,
        top_k: Annotated[int, Query(ge=1, le=50)] = 5,
    ) -> dict[str, Any]:
        """Top labels for an image (raw body or multipart ``file``)."""
        decoded = time.perf_counter()
        key = s.result_key(image.digest, top_k)
        computed: list[bool] = []
        raw = await cached_predict(s)(s, key, image.array, top_k, computed)
        (s.result_misses if computed else s.result_hits).increment()
        result = json.loads(raw)
        info = image.info
        return {
            "predictions": result["predictions"],
            "model": {"name": s.model.name, "version": s.model.version},
            "image": {
                "format": info.format,
                "width": info.width,
                "height": info.height,
                "decoded": list(image.array.shape),
                "bytes": image.nbytes,
            },
            "digest": image.digest,
            "cache": {
                "result": "miss" if computed else "hit",
                "image": "hit" if image.cached else "miss",
            },
            "timings_ms": {
                "upload_decode": round((decoded - started) * 1e3, 3),
                "total": round((time.perf_counter() - started) * 1e3, 3),
                **(result["timings"] if computed else {}),
            },
            "worker": os.getpid(),
        }

    @app.post("/v1/thumbnail")
    async def thumbnail(
        image: Image,
        size: Annotated[int, Query(ge=16, le=1024)] = 256,
        fit: Literal["contain", "cover"] = "contain",
        format: Literal["jpeg", "png"] = "jpeg",
        quality: Annotated[int, Query(ge=30, le=100)] = 85,
    ) -> Response:
        """A thumbnail fitting in (contain) or filling (cover) a size x size box."""
        data = await asyncio.to_thread(_render_thumbnail, image.array, size, fit, format, quality)
        return Response(
            data,
            media_type=f"image/{format}",
            headers={"X-Image-Digest": image.digest, "Cache-Control": "public, max-age=86400"},
        )

    @app.get("/v1/gallery")
    async def gallery_list(s: SvcDep) -> dict[str, Any]:
        """The labelled references the recogniser matches against."""
        if s.gallery is None:
            return {"model": s.model.name, "count": 0, "labels": [], "entries": []}
        await asyncio.to_thread(s.gallery.refresh)
        entries = s.gallery.listing()
        return {
            "model": s.model.name,
            "count": len(entries),
            "labels": s.gallery.recognizer.labels(),
            "entries": entries,
        }

    @app.post("/v1/gallery", status_code=201)
    async def gallery_add(
        s: SvcDep,
        image: Image,
        label: Annotated[str, Query(min_length=1, max_length=64)],
    ) -> dict[str, Any]:
        """Add an image to the gallery under label."""
        if s.gallery is None:
            raise an.ValidationError(
                "this model has no gallery", code="gallery.unsupported", field="model"
            )
        if not valid_label(label):
            raise an.ValidationError(
                "label: letters, digits, space, '_', '.', '-' (1-64, no '__')",
                code="value.invalid",
                field="label",
            )
        data = await asyncio.to_thread(an.encode_jpeg, image.array, quality=92)
        entry_id = await asyncio.to_thread(s.gallery.add, label, data, image.array)
        return {"id": entry_id, "label": label, "count": len(s.gallery.recognizer)}

    @app.post("/v1/jobs", status_code=202)
    async def job_submit(
        request: Request, s: SvcDep, top_k: Annotated[int, Query(ge=1, le=50)] = 5
    ) -> JSONResponse:
        """Classify several images (multipart ``files``) in the background."""
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "multipart/form-data":
            raise an.ValidationError(
                "send the images as multipart/form-data",
                code="input.content_type",
                field="content-type",
            )
        max_bytes = s.settings.max_upload_mb * _MIB
        async with request.form(
            max_files=_MAX_JOB_FILES, max_fields=8, max_part_size=64 << 10
        ) as form:
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            if not files:
                raise an.ValidationError(
                    "no files in the form", code="input.missing", field="files"
                )
            blobs: dict[str, bytes] = {}
            order: list[str] = []
            for f in files:
                body = await an.aread_limited(f, max_bytes)
                an.probe(body.data)  # refuse non-images now, not in the worker
                assert body.digest is not None
                blobs[body.digest] = bytes(body.data)
                order.append(body.digest)
        job_id = await asyncio.to_thread(s.jobs.submit, blobs, order, top_k)
        url = f"/v1/jobs/{job_id}"
        return JSONResponse(
            {
                "id": job_id,
                "status": "queued",
                "total": len(order),
                "status_url": url,
                "events_url": f"{url}/events",
                "durable": s.jobs.durable,
            },
            status_code=202,
            headers={"Location": url},
        )

    async def job_state(s: Service, job_id: str) -> dict[str, Any]:
        state = await asyncio.to_thread(s.jobs.status, job_id)
        if state is None:
            raise an.ValidationError(f"no job {job_id!r}", code="http.404", field="id")
        return state

    @app.get("/v1/jobs/{job_id}")
    async def job_status(job_id: str, s: SvcDep) -> dict[str, Any]:
        """Status, progress and (when finished) results of a job."""
        return await job_state(s, job_id)

    @app.get("/v1/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request, s: SvcDep) -> StreamingResponse:
        """Server-sent events: ``progress`` on every change, then ``done``."""
        await job_state(s, job_id)  # 404 before the stream starts

        async def stream() -> AsyncIterator[str]:
            last = None
            while True:
                state = await asyncio.to_thread(s.jobs.status, job_id)
                if state is None:
                    yield f"event: error\ndata: {json.dumps({'code': 'job.gone'})}\n\n"
                    return
                brief = json.dumps({"status": state["status"], "progress": state.get("progress")})
                if brief != last:
                    yield f"event: progress\ndata: {brief}\n\n"
                    last = brief
                if state["status"] in ("finished", "failed", "stopped", "canceled"):
                    yield f"event: done\ndata: {json.dumps(state)}\n\n"
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.2)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/v1/stats")
    async def stats(request: Request, s: SvcDep) -> dict[str, Any]:
        """What the status page shows: caches, batching, memory, recent errors."""
        hits, misses = s.result_hits.value, s.result_misses.value
        pressure = await asyncio.to_thread(s.memory.pressure)
        log = _find_error_log(request.app)
        return {
            "worker": os.getpid(),
            "uptime_s": round(time.time() - s.started, 1),
            "model": {
                "name": s.model.name,
                "version": s.model.version,
                "gallery": len(s.gallery.recognizer) if s.gallery is not None else None,
            },
            "results_cache": {
                "hits": hits,
                "misses": misses,
                "hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
                "tiers": _plain(s.results.stats()),
            },
            "image_cache": _plain(image_cache.cache.stats()) if image_cache is not None else None,
            "batching": s.batcher.snapshot(),
            "memory": {
                "level": pressure.level.name.lower(),
                "ratio": round(pressure.ratio, 4),
                "source": pressure.source,
                "rss": pressure.snapshot.rss if hasattr(pressure.snapshot, "rss") else None,
            },
            "responses": dict(log.counts) if log else {},
            "recent_errors": list(log.recent)[-20:] if log else [],
            "jobs": {"backend": type(s.jobs).__name__, "durable": s.jobs.durable},
            "redis": bool(s.settings.redis_url),
        }

    return app


def _plain(stats: Any) -> dict[str, Any]:
    if hasattr(stats, "_asdict"):
        return dict(stats._asdict())
    return dict(stats)


def _find_error_log(app: Any) -> ErrorLog | None:
    stack = getattr(app, "middleware_stack", None)
    while stack is not None:
        if isinstance(stack, ErrorLog):
            return stack
        stack = getattr(stack, "app", None)
    return None


def _render_thumbnail(
    rgb: np.ndarray[Any, Any], size: int, fit: str, fmt: str, quality: int
) -> bytes:
    h, w = rgb.shape[:2]
    if fit == "cover":  # crop the centre to a square, then scale
        side = min(w, h)
        y0, x0 = (h - side) // 2, (w - side) // 2
        rgb = rgb[y0 : y0 + side, x0 : x0 + side]
        tw = th = size
    else:
        scale = min(size / w, size / h, 1.0)
        tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    small = an.resize(rgb, (tw, th)) if (tw, th) != (rgb.shape[1], rgb.shape[0]) else rgb
    if fmt == "png":
        return an.encode_png(small)
    return an.encode_jpeg(np.ascontiguousarray(small), quality=quality)


def main() -> None:  # pragma: no cover - `python -m amulet_service`
    import uvicorn

    port = int(os.environ.get("PORT", "8000"))
    workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
    Settings.from_env()  # fail here, naming the variable, before any worker starts
    uvicorn.run(
        "amulet_service.app:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
    )
