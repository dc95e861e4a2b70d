"""Apps for tests/test_integrations_review.py (review of issue 13)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import Response, StreamingResponse

from amulet_native.integrations.fastapi import DecodedImage, ImageUpload, install

UPLOAD = ImageUpload(max_bytes=4096, cache=False)


def _key(conn: HTTPConnection) -> str:
    if conn.headers.get("x-break-key"):
        raise RuntimeError("rate key lookup failed")
    return "k"


def make_app() -> FastAPI:
    app = FastAPI()
    install(app, rate_limit="1000/minute", rate_key=_key, metrics=True,
            max_body=1 << 20, deadline=1.0, max_in_flight=8)

    @app.post("/upload")
    async def upload(img: Annotated[DecodedImage, Depends(UPLOAD)]) -> dict[str, Any]:
        return {"shape": list(img.array.shape), "filename": img.filename}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            await asyncio.sleep(5)
            yield b"never"

        return StreamingResponse(chunks())

    @app.get("/bad-header")
    async def bad_header() -> Response:
        return Response(b"x", headers={"x-bad": "a\r\nb"})

    @app.api_route("/any", methods=["GET", "POST"])
    async def any_route() -> dict[str, int]:
        return {"pid": os.getpid()}

    @app.post("/stubborn")
    async def stubborn(request: Request) -> dict[str, int]:
        """Reads the body, and on the cut (a disconnect) keeps working."""
        n = 0
        try:
            async for chunk in request.stream():
                n += len(chunk)
        except ClientDisconnect:
            await asyncio.sleep(5)
        return {"n": n}

    from amulet_native import metrics

    broken = {"on": False}

    def probe_value() -> float:
        if broken["on"]:
            raise RuntimeError("collector failed")
        return 1.0

    metrics.Gauge("review13_probe", "a gauge whose callback can fail").set_function(probe_value)

    @app.post("/break-metrics")
    async def break_metrics() -> dict[str, bool]:
        broken["on"] = True
        return {"on": True}

    return app
