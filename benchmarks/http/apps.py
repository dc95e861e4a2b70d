"""The three apps of the HTTP benchmarks, the same endpoints each:

* ``make_bare``: FastAPI, nothing added (the overhead baseline);
* ``make_ours_default``: FastAPI + ``install(app)`` with its defaults
  (request id, body cap, problem+json, metrics, health endpoints);
* ``make_ours``: the same with every feature on (plus a memory budget, a
  rate limit that never refuses, load shedding and a deadline);
* ``make_peer``: the stack a team assembles today: slowapi (rate limit,
  its SlowAPIMiddleware), prometheus-fastapi-instrumentator, a
  BaseHTTPMiddleware body limit and request id, JSON exception handlers.

``GET /ping`` is the trivial endpoint; ``POST /upload`` takes a multipart
image: ours through ``ImageUpload`` (uncached, so every request decodes), the
others with ``UploadFile.read()`` + Pillow.
"""


import io
import uuid
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

MAX_BODY = 20 << 20


def _pillow_decode(data: bytes) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _add_pillow_routes(app: FastAPI) -> None:
    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/upload")
    async def upload(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        data = await file.read()
        arr = _pillow_decode(data)  # on the event loop, as such endpoints usually do
        return {"shape": list(arr.shape)}


def make_bare() -> FastAPI:
    app = FastAPI()
    _add_pillow_routes(app)
    return app


def make_ours_default() -> FastAPI:
    """install() with its defaults: request id, body cap, problem+json,
    metrics, health; no rate limit, memory budget, shedding or deadline."""
    return make_ours(everything=False)


def make_ours(everything: bool = True) -> FastAPI:
    from amulet_native.integrations.fastapi import DecodedImage, ImageUpload, install

    app = FastAPI()
    options: dict[str, Any] = {"max_body": MAX_BODY}
    if everything:
        options.update(memory_mb=512, max_in_flight=4096, deadline=30.0,
                       rate_limit="100000000/minute")
    install(app, **options)
    image = Depends(ImageUpload(max_bytes=MAX_BODY, cache=False, max_files=1))

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/upload")
    async def upload(img: Annotated[DecodedImage, image]) -> dict[str, Any]:
        return {"shape": list(img.array.shape)}

    return app


def make_peer() -> FastAPI:
    from prometheus_fastapi_instrumentator import Instrumentator
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.middleware import SlowAPIMiddleware
    from slowapi.util import get_remote_address
    from starlette.middleware.base import BaseHTTPMiddleware

    app = FastAPI()
    limiter = Limiter(key_func=get_remote_address, default_limits=["100000000/minute"])
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    app.add_middleware(SlowAPIMiddleware)

    async def body_limit(request: Request, call_next: Any) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and int(declared) > MAX_BODY:
            return JSONResponse({"detail": "payload too large"}, status_code=413)
        return await call_next(request)

    async def request_id(request: Request, call_next: Any) -> Any:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        response = await call_next(request)
        response.headers["x-request-id"] = rid
        return response

    app.add_middleware(BaseHTTPMiddleware, dispatch=body_limit)
    app.add_middleware(BaseHTTPMiddleware, dispatch=request_id)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail, "status": exc.status_code},
                            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": exc.errors()}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "internal error"}, status_code=500)

    _add_pillow_routes(app)
    Instrumentator().instrument(app).expose(app)
    return app
