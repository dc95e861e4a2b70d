"""Adversarial review of the FastAPI integration (issue 13) against a real
uvicorn server serving tests/review13_apps.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
import httpx
from http_server import UvicornServer

from amulet_native.integrations._problem import PROBLEM_JSON


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornServer]:
    with UvicornServer("review13_apps:make_app") as srv:
        yield srv


@pytest.fixture()
def client(server: UvicornServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        yield c


def test_send_refused_by_server_answers_problem(client: httpx.Client) -> None:
    """The app's response start is refused by the server (a header value with
    CRLF): nothing went out, so the client gets a problem+json 500, not a
    dropped connection."""
    r = client.get("/bad-header")
    assert r.status_code == 500
    assert r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["status"] == 500
    assert "x-request-id" in r.headers


def test_rate_key_failure_answers_problem(client: httpx.Client) -> None:
    """A rate_key callable that raises is a 500 problem+json (not Starlette's
    text/plain page)."""
    r = client.get("/any", headers={"x-break-key": "1"})
    assert r.status_code == 500
    assert r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["code"]
    assert client.get("/any").status_code == 200


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("sent", "kept"), [
    ("../../etc/passwd.png", "passwd.png"),
    ("C:\\Users\\x\\..\\a.png", "a.png"),
    ("a\x00b\x1f.png", "ab.png"),
    ("..", None),
    ("dir/", None),
])
def test_upload_filename_is_a_bare_name(client: httpx.Client, sent: str, kept: str | None) -> None:
    """A part's filename reaches the endpoint without directories or control
    characters (it is a client-chosen string endpoints tend to join to paths)."""
    body = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="'
            + sent.encode("latin-1") + b'"\r\nContent-Type: image/png\r\n\r\n' + _png()
            + b"\r\n--x--\r\n")
    r = client.post("/upload", content=body,
                    headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 200, r.text
    assert r.json()["filename"] == kept


def test_cached_model_two_loaders_two_models() -> None:
    """Two different loaders whose qualified names are the same (two lambdas,
    or closures from one factory) get their own models, not the first one's."""
    pytest.importorskip("streamlit")
    from amulet_native.integrations import streamlit as an_st

    def factory(name: str) -> Any:
        def load() -> Any:
            return lambda: name
        return load

    a = an_st.cached_model(lambda: (lambda: "a"))
    b = an_st.cached_model(lambda: (lambda: "b"))
    assert (a.run(), b.run()) == ("a", "b")
    c = an_st.cached_model(factory("c"))
    d = an_st.cached_model(factory("d"))
    assert (c.run(), d.run()) == ("c", "d")
    assert an_st.cached_model(factory("c")) is c  # same loader again: the same model


def test_metrics_method_label_is_bounded() -> None:
    """uvicorn's h11 protocol accepts any method token: made-up methods are
    one "OTHER" label, not a new time series each."""
    import socket

    with UvicornServer("review13_apps:make_app", extra_args=("--http", "h11")) as srv:
        for i in range(3):
            with socket.create_connection(("127.0.0.1", srv.port)) as s:
                s.sendall(f"FOO{i} /any HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                          .encode())
                assert s.recv(100).startswith(b"HTTP/1.1 405")
        text = httpx.get(srv.url + "/metrics", timeout=10.0).text
    assert "FOO" not in text
    assert 'http_requests_total{method="OTHER",route="/any",status="405"} 3.0' in text


def test_ops_endpoint_failure_answers_problem() -> None:
    """A metric callback that raises during a scrape: /metrics answers a
    problem+json 500 (not Starlette's text/plain page), and the server lives on."""
    with UvicornServer("review13_apps:make_app") as srv, \
            httpx.Client(base_url=srv.url, timeout=10.0) as c:
        assert c.get("/metrics").status_code == 200
        c.post("/break-metrics")
        r = c.get("/metrics")
        assert r.status_code == 500
        assert r.headers["content-type"] == PROBLEM_JSON
        assert c.get("/livez").status_code == 200


def test_body_over_cap_then_deadline_is_413(client: httpx.Client) -> None:
    """The body went over the cap (the app saw a disconnect) and the app kept
    working until the deadline: the answer is the 413 the cut was for."""
    def chunks() -> Iterator[bytes]:
        for _ in range(17):
            yield b"a" * (64 << 10)

    r = client.post("/stubborn", content=chunks())
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "input.too_large"
