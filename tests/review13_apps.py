"""Apps for tests/test_integrations_review.py (review of issue 13)."""

from __future__ import annotations

import os

from fastapi import FastAPI
from starlette.requests import HTTPConnection
from starlette.responses import Response

from amulet_native.integrations.fastapi import install


def _key(conn: HTTPConnection) -> str:
    if conn.headers.get("x-break-key"):
        raise RuntimeError("rate key lookup failed")
    return "k"


def make_app() -> FastAPI:
    app = FastAPI()
    install(app, rate_limit="1000/minute", rate_key=_key, metrics=True,
            max_body=1 << 20)

    @app.get("/bad-header")
    async def bad_header() -> Response:
        return Response(b"x", headers={"x-bad": "a\r\nb"})

    @app.api_route("/any", methods=["GET", "POST"])
    async def any_route() -> dict[str, int]:
        return {"pid": os.getpid()}

    return app
