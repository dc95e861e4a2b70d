"""The same recognition API built the way teams build it today (the comparison).

FastAPI ``UploadFile.read()``; Pillow decode + ``thumbnail`` (which uses
``draft`` for DCT-scaled JPEG decoding) in the thread pool; a cachetools
``TTLCache`` behind a lock for results; slowapi for rate limits;
prometheus-fastapi-instrumentator for metrics; a ``BaseHTTPMiddleware`` body
limit; tenacity retries and a pybreaker circuit breaker around the model; the
same gallery recogniser as the reference service.  Written with the care a
competent team takes: Pillow's decompression-bomb guard on, every decoder
error mapped to a 4xx, CPU work off the event loop, one lock around the cache.

Run: ``uvicorn --factory baseline.app:create_app --workers 4`` (from python/).
"""

import hashlib
import io
import os
import threading
import time
import warnings
from contextlib import asynccontextmanager
from typing import Annotated, Any

import cachetools
import numpy as np
import pybreaker
from amulet_service.gallery import Gallery
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from prometheus_fastapi_instrumentator import Instrumentator
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address
from starlette.middleware.base import BaseHTTPMiddleware
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

MAX_UPLOAD = int(os.environ.get("BASELINE_MAX_UPLOAD_MB", "20")) << 20
MAX_SIDE = 1024
RATE_LIMIT = os.environ.get("BASELINE_RATE_LIMIT", "100000/minute")
GALLERY_DIR = os.environ.get(
    "AMULET_GALLERY_DIR", os.path.expanduser("~/.cache/amulet_service/gallery")
)
CACHE_SIZE = int(os.environ.get("AMULET_CACHE_MAX_SIZE", "10000"))
CACHE_TTL = float(os.environ.get("AMULET_CACHE_DEFAULT_TTL", "3600"))

Image.MAX_IMAGE_PIXELS = 40_000_000  # Pillow raises DecompressionBombError past 2x this
warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse past 1x too


class BodyLimit(BaseHTTPMiddleware):
    """413 for a declared Content-Length over the limit, 411 for bodies without one."""

    async def dispatch(self, request: Request, call_next: Any) -> Response:
        if request.method in ("POST", "PUT"):
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse({"detail": "Content-Length required"}, status_code=411)
            if not length.isdigit() or int(length) > MAX_UPLOAD:
                return JSONResponse({"detail": "payload too large"}, status_code=413)
        response: Response = await call_next(request)
        return response


class TransientModelError(Exception):
    pass


def decode(data: bytes) -> np.ndarray:
    """Pillow decode, scaled to fit MAX_SIDE (draft for JPEG), as RGB uint8."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ("JPEG", "PNG"):
                raise HTTPException(415, f"unsupported format {img.format}")
            img.thumbnail((MAX_SIDE, MAX_SIDE))
            return np.asarray(img.convert("RGB"))
    except UnidentifiedImageError:
        raise HTTPException(415, "not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise HTTPException(422, "image too large") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated / corrupt data
        raise HTTPException(422, f"cannot decode image: {exc}") from None


def create_app() -> FastAPI:
    gallery = Gallery(GALLERY_DIR)
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=10)
    results: cachetools.TTLCache[str, Any] = cachetools.TTLCache(CACHE_SIZE, CACHE_TTL)
    lock = threading.Lock()

    @retry(
        stop=stop_after_attempt(2),
        wait=wait_exponential(max=0.1),
        retry=retry_if_exception_type(TransientModelError),
        reraise=True,
    )
    def run_model(rgb: np.ndarray, top_k: int) -> Any:
        return breaker.call(gallery.recognizer.classify, [rgb], top_k=top_k)[0]

    def fill_gallery() -> None:
        import fcntl

        os.makedirs(GALLERY_DIR, exist_ok=True)
        with open(os.path.join(GALLERY_DIR, ".lock"), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # workers start together: one fills it
            gallery.ensure_sample()
        gallery.refresh()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        await run_in_threadpool(fill_gallery)
        yield

    app = FastAPI(title="Baseline recognition API", lifespan=lifespan)
    limiter = Limiter(key_func=get_remote_address, default_limits=[RATE_LIMIT])
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    from slowapi.middleware import SlowAPIMiddleware

    app.add_middleware(SlowAPIMiddleware)
    app.add_middleware(BodyLimit)
    Instrumentator().instrument(app).expose(app)

    @app.post("/v1/classify")
    async def classify(
        file: Annotated[UploadFile, File()],
        top_k: Annotated[int, Query(ge=1, le=50)] = 5,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        data = await file.read()
        if not data:
            raise HTTPException(400, "empty upload")
        digest = hashlib.blake2b(data).hexdigest()
        key = f"{digest}:{top_k}:{len(gallery.recognizer)}"
        with lock:
            hit = results.get(key)
        if hit is not None:
            return {
                **hit,
                "cache": "hit",
                "ms": (time.perf_counter() - started) * 1e3,
                "worker": os.getpid(),
            }
        rgb = await run_in_threadpool(decode, data)
        try:
            pred = await run_in_threadpool(run_model, rgb, top_k)
        except pybreaker.CircuitBreakerError:
            raise HTTPException(503, "model unavailable", headers={"Retry-After": "10"}) from None
        body = {
            "predictions": pred.to_json(),
            "digest": digest,
            "image": {"decoded": list(rgb.shape)},
        }
        with lock:
            results[key] = body
        return {
            **body,
            "cache": "miss",
            "ms": (time.perf_counter() - started) * 1e3,
            "worker": os.getpid(),
        }

    @app.post("/v1/thumbnail")
    async def thumbnail(
        file: Annotated[UploadFile, File()],
        size: Annotated[int, Query(ge=16, le=1024)] = 256,
    ) -> Response:
        data = await file.read()

        def render() -> bytes:
            try:
                with Image.open(io.BytesIO(data)) as img:
                    img.thumbnail((size, size))
                    out = io.BytesIO()
                    img.convert("RGB").save(out, "JPEG", quality=85)
                    return out.getvalue()
            except UnidentifiedImageError:
                raise HTTPException(415, "not an image") from None
            except (Image.DecompressionBombError, Image.DecompressionBombWarning, OSError) as exc:
                raise HTTPException(422, str(exc)) from None

        return Response(await run_in_threadpool(render), media_type="image/jpeg")

    @app.get("/v1/gallery")
    async def gallery_list() -> dict[str, Any]:
        await run_in_threadpool(gallery.refresh)
        return {"count": len(gallery.recognizer), "labels": gallery.recognizer.labels()}

    @app.post("/v1/gallery", status_code=201)
    async def gallery_add(label: str, file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        data = await file.read()
        rgb = await run_in_threadpool(decode, data)
        entry = await run_in_threadpool(gallery.add, label, data, rgb)
        return {"id": entry, "label": label}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    return app
