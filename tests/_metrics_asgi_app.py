"""ASGI app for tests/test_metrics_multiprocess.py: served by a real uvicorn
with several workers and AMULET_METRICS_DIR set.  GET /hit counts one hit in
the worker that answers; anything else is the metrics endpoint."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from amulet_native import metrics

HITS = metrics.Counter("asgi_hits", "Hits.", ["path"])
_metrics_app = metrics.make_asgi_app()


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
              send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    if scope["type"] == "http" and scope["path"] == "/hit":
        HITS.labels("/hit").inc()
        body = str(os.getpid()).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
        return
    await _metrics_app(scope, receive, send)
