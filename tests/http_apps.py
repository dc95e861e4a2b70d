"""Apps served by a real uvicorn in the HTTP integration tests.

``make_app()`` reads the ``install()`` options as JSON from
``AMULET_TEST_INSTALL``; ``make_bare_app()`` is the same endpoints without
amulet_native (the benchmark baseline).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request

from amulet_native.errors import AmuletError
from amulet_native.integrations._problem import TABLE
from amulet_native.integrations.fastapi import DecodedImage, ImageUpload, install

USER: contextvars.ContextVar[str] = contextvars.ContextVar("test_user", default="-")


class Capture(logging.Handler):
    """Keeps (logger, message, request_id, user) of every record."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append({
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "<missing>"),
            "user": USER.get(),
        })


async def set_user(request: Request) -> str:
    user = request.headers.get("x-user", "anonymous")
    USER.set(user)
    return user


# Module level: FastAPI resolves the (string) annotations in the module's globals.
UPLOAD_MAX = int(os.environ.get("AMULET_TEST_UPLOAD_MAX", str(4 << 20)))
image = Depends(ImageUpload(max_bytes=UPLOAD_MAX))
strict_image = Depends(ImageUpload(max_bytes=UPLOAD_MAX, on_type_mismatch="reject"))


def _options() -> dict[str, Any]:
    options: dict[str, Any] = json.loads(os.environ.get("AMULET_TEST_INSTALL", "{}"))
    store_dir = options.pop("shared_store", None)
    if store_dir is not None:
        from amulet_native.ratelimit import SharedStore

        options["rate_store"] = SharedStore(store_dir)
    redis_url = options.pop("redis_store", None)
    if redis_url is not None:
        from amulet_native.ratelimit import RedisStore

        options["rate_store"] = RedisStore(redis_url)
    failing = options.pop("failing_check", None)
    if failing is not None:  # a HealthMonitor with one check that raises
        from amulet_native.health import HealthMonitor

        def broken() -> None:
            raise ConnectionError("database unreachable")

        monitor = HealthMonitor()
        monitor.add_check("database:connection", broken, kind=failing, timeout=1.0)
        options["health"] = monitor
    return options


def worker_pid(app: Any) -> Any:
    """Outermost pure ASGI layer: every response says which worker served it."""
    pid = str(os.getpid()).encode()

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def send_pid(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-worker-pid", pid)]
            await send(message)

        await app(scope, receive, send_pid if scope["type"] == "http" else send)

    return wrapped


def make_app() -> FastAPI:
    app = FastAPI()
    capture = Capture()
    for name in ("amulet_native", "tests"):
        logging.getLogger(name).addHandler(capture)
        logging.getLogger(name).setLevel(logging.DEBUG)
    log = logging.getLogger("tests.handler")
    install(app, **_options())
    app.add_middleware(worker_pid)

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/echo-len")
    async def echo_len(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.post("/upload")
    async def upload(img: Annotated[DecodedImage, image]) -> dict[str, Any]:
        return {
            "shape": list(img.array.shape), "format": img.info.format, "digest": img.digest,
            "nbytes": img.nbytes, "cached": img.cached, "type_mismatch": img.type_mismatch,
            "content_type": img.content_type, "filename": img.filename,
        }

    @app.post("/upload-strict")
    async def upload_strict(img: Annotated[DecodedImage, strict_image]) -> dict[str, Any]:
        return {"format": img.info.format}

    @app.get("/slow")
    async def slow(seconds: float = 1.0) -> dict[str, float]:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            log.warning("slow handler cancelled")
            raise
        return {"slept": seconds}

    @app.get("/error/{code}")
    async def error(code: str) -> None:
        raise AmuletError(f"test error {code}", code=code)

    @app.get("/codes")
    async def codes() -> list[str]:
        return sorted(TABLE)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret: /etc/shadow password=hunter2")

    @app.get("/http/{status}")
    async def http_error(status: int) -> None:
        raise HTTPException(status, detail=f"http {status}")

    @app.get("/items/{item_id}")
    async def item(item_id: int, q: int = 0) -> dict[str, int]:
        return {"item_id": item_id, "q": q}

    @app.get("/alloc")
    async def alloc(mb: int) -> dict[str, int]:
        block = np.ones(mb << 20, dtype=np.uint8)
        return {"bytes": int(block.sum())}

    @app.get("/ctx")
    async def ctx(user: Annotated[str, Depends(set_user)]) -> dict[str, str]:
        log.info("handler sees user %s", USER.get())
        return {"user": USER.get()}

    from amulet_native.resilience import CircuitBreaker

    breaker = CircuitBreaker("model", window=2, minimum_calls=2, wait_in_open=3600.0)

    def failing() -> None:
        raise ConnectionError("model server down")

    for _ in range(2):  # two failures open the circuit for an hour
        try:
            breaker.call(failing)
        except ConnectionError:
            pass

    @app.get("/model")
    async def model() -> dict[str, str]:
        async def predict() -> str:
            return "cat"

        return {"label": await breaker.acall(predict)}

    @app.get("/logs")
    async def logs() -> list[dict[str, str]]:
        return capture.records

    return app
