"""The FastAPI/Starlette integration against a real uvicorn server.

Every test talks HTTP to ``uvicorn`` in a subprocess (tests/http_server.py)
serving tests/http_apps.py; no test leaves a server running.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
import httpx
from http_server import UvicornServer
from PIL import Image

from amulet_native.integrations._problem import PROBLEM_JSON, TABLE, http_status_for

UPLOAD_MAX = 512 << 10
MAX_BODY = 1 << 20
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "code", "request_id"}


def _serve(options: dict[str, Any], **kw: Any) -> UvicornServer:
    env = {"AMULET_TEST_INSTALL": json.dumps(options),
           "AMULET_TEST_UPLOAD_MAX": str(UPLOAD_MAX)}
    env.update(kw.pop("env", {}))
    return UvicornServer("http_apps:make_app", env=env, **kw)


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornServer]:
    with _serve({"max_body": MAX_BODY, "deadline": 1.0, "memory_mb": 64,
                 "metrics": False}) as srv:
        yield srv


@pytest.fixture()
def client(server: UvicornServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        yield c


def jpeg_bytes(w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bytes(w: int = 32, h: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def png_bomb(side: int = 30000) -> bytes:
    """A valid PNG header claiming side x side pixels; the IDAT is a few KB of
    deflated zeros (a decompression bomb: GBs of pixels from a tiny file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (4 << 20), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def assert_problem(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = r.json()
    assert PROBLEM_KEYS <= set(body), body
    assert body["status"] == status
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["type"].endswith("/" + body["code"])
    if code is not None:
        assert body["code"] == code
    assert "Traceback" not in r.text
    return body


# ---- raw HTTP/1.1 over a socket (bodies httpx would not send this way) -----------


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        part = sock.recv(65536)
        if not part:
            break
        rest += part
    return status, headers, rest


def _readable(sock: socket.socket, timeout: float) -> bool:
    import select

    return bool(select.select([sock], [], [], timeout)[0])


def test_declared_oversize_body_refused_before_reading(server: UvicornServer) -> None:
    # 10 GB declared, no body byte ever sent: the 413 can only come before reading.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /echo-len HTTP/1.1\r\nHost: t\r\n"
                     b"Content-Type: application/octet-stream\r\n"
                     b"Content-Length: 10000000000\r\n\r\n")
        status, headers, body = _read_response(sock)
    assert status == 413
    problem = json.loads(body)
    assert problem["code"] == "input.too_large"
    assert problem["declared"] == 10_000_000_000
    assert headers["connection"] == "close"


def test_undeclared_oversize_body_cut_at_the_limit_memory_flat(server: UvicornServer) -> None:
    before = server.rss()
    chunk = b"z" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /echo-len HTTP/1.1\r\nHost: t\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        status = None
        while sent < 64 << 20:  # would be 64 MiB
            if _readable(sock, 0):
                status, _, body = _read_response(sock)
                break
            try:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        if status is None:
            status, _, body = _read_response(sock)
    assert status == 413
    problem = json.loads(body)
    assert problem["code"] == "input.too_large"
    assert problem["limit"] == MAX_BODY
    # uvicorn hands over what one socket read returned: the crossing message
    # may be larger than one client chunk, never the rest of the stream
    assert MAX_BODY < problem["received"] <= MAX_BODY + (1 << 20)
    assert sent < 32 << 20  # refused long before the client finished
    assert server.rss() - before < 24 << 20
    assert httpx.get(server.url + "/livez").status_code == 200


def test_within_limit_body_passes(client: httpx.Client) -> None:
    r = client.post("/echo-len", content=b"a" * 1000)
    assert r.status_code == 200 and r.json() == {"bytes": 1000}


def test_slow_body_past_the_deadline_gets_504(server: UvicornServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /echo-len HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        got = None
        for _ in range(40):  # 10 bytes every 0.1 s: 10 s for the whole body
            if _readable(sock, 0.1):
                got = _read_response(sock)
                break
            sock.sendall(b"0123456789")
        assert got is not None, "no answer while the body was still trickling in"
    status, _, body = got
    assert status == 504
    assert json.loads(body)["code"] == "deadline.exceeded"


def test_slow_handler_past_the_deadline_is_cancelled(client: httpx.Client) -> None:
    r = client.get("/slow", params={"seconds": 5})
    assert_problem(r, 504, "deadline.exceeded")
    rid = r.headers["x-request-id"]
    logs = [rec["message"] for rec in client.get("/logs").json() if rec["request_id"] == rid]
    assert "slow handler cancelled" in logs  # the handler task itself was cancelled
    assert client.get("/slow", params={"seconds": 0.01}).status_code == 200


# ---- uploads -----------------------------------------------------------------------


def test_raw_upload_decodes_and_caches(client: httpx.Client) -> None:
    data = jpeg_bytes(seed=1)
    r = client.post("/upload", content=data, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["shape"] == [48, 64, 3] and body["format"] == "jpeg"
    assert body["nbytes"] == len(data) and body["cached"] is False
    import hashlib

    assert body["digest"] == hashlib.blake2b(data).hexdigest()
    again = client.post("/upload", content=data, headers={"content-type": "image/jpeg"})
    assert again.json()["cached"] is True


def test_multipart_upload(client: httpx.Client) -> None:
    data = png_bytes()
    r = client.post("/upload", files={"file": ("a.png", data, "image/png")},
                    data={"note": "hi"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["format"] == "png" and body["filename"] == "a.png"
    assert body["content_type"] == "image/png" and body["type_mismatch"] is False


def test_wrong_content_type_refused(client: httpx.Client) -> None:
    r = client.post("/upload", content=jpeg_bytes(), headers={"content-type": "text/plain"})
    assert_problem(r, 415, "input.content_type")
    r = client.post("/upload", json={"image": "nope"})
    assert_problem(r, 415, "input.content_type")


def test_lying_content_type_detected_by_magic_bytes(client: httpx.Client) -> None:
    r = client.post("/upload", content=jpeg_bytes(), headers={"content-type": "image/png"})
    assert r.status_code == 200
    assert r.json()["format"] == "jpeg" and r.json()["type_mismatch"] is True
    r = client.post("/upload-strict", content=jpeg_bytes(), headers={"content-type": "image/png"})
    body = assert_problem(r, 415, "format.mismatch")
    assert body["declared_type"] == "image/png" and body["detected_type"] == "jpeg"
    r = client.post("/upload", content=b"II*\x00" + b"\0" * 100,  # TIFF: not decoded
                    headers={"content-type": "image/jpeg"})
    assert_problem(r, 415)
    r = client.post("/upload", content=b"#!/bin/sh\nrm -rf /\n",
                    headers={"content-type": "image/jpeg"})
    assert_problem(r, 415, "format.unsupported")


def test_upload_over_its_own_limit(client: httpx.Client) -> None:
    big = b"\xff\xd8" + b"\0" * (UPLOAD_MAX + 10)
    r = client.post("/upload", content=big, headers={"content-type": "image/jpeg"})
    assert_problem(r, 413, "input.too_large")
    r = client.post("/upload", files={"file": ("big.jpg", big, "image/jpeg")})
    assert_problem(r, 413, "input.too_large")


def test_empty_upload(client: httpx.Client) -> None:
    assert_problem(client.post("/upload", content=b"",
                               headers={"content-type": "image/png"}), 400, "input.empty")


def test_multipart_too_many_files_and_fields(client: httpx.Client) -> None:
    data = png_bytes()
    files = [("file", (f"{i}.png", data, "image/png")) for i in range(3)]
    body = assert_problem(client.post("/upload", files=files), 413, "multipart.too_many_files")
    assert body["max_files"] == 1
    fields = {f"f{i}": "x" for i in range(30)}
    r = client.post("/upload", files={"file": ("a.png", data, "image/png")}, data=fields)
    assert_problem(r, 413, "multipart.too_many_fields")
    r = client.post("/upload", files={"file": ("a.png", data, "image/png")},
                    data={"note": "x" * (200 << 10)})
    assert_problem(r, 413, "multipart.part_too_large")
    # no "file" field: the first file part is used, and it is not an image
    r = client.post("/upload", data={"note": "no file"},
                    files={"other": ("x.txt", b"abc", "text/plain")})
    assert_problem(r, 415, "format.unsupported")
    r = client.post("/upload", content=b"--xx\r\nbroken",
                    headers={"content-type": "multipart/form-data; boundary=xx"})
    assert r.status_code in (400, 422)
    assert r.headers["content-type"].startswith(PROBLEM_JSON)


def test_decompression_bomb_refused_from_the_header(server: UvicornServer,
                                                    client: httpx.Client) -> None:
    bomb = png_bomb()
    assert len(bomb) < 16 << 10
    before = server.rss()
    body = assert_problem(client.post("/upload", content=bomb,
                                      headers={"content-type": "image/png"}),
                          422, "limits.pixels")
    assert body["actual"] == 30000 * 30000
    assert server.rss() - before < 16 << 20


def test_truncated_and_corrupt_images(client: httpx.Client) -> None:
    data = jpeg_bytes(256, 256, seed=3)
    for cut in (len(data) // 2, len(data) - 50):
        r = client.post("/upload", content=data[:cut], headers={"content-type": "image/jpeg"})
        body = assert_problem(r, 422)
        assert body["code"].startswith("decode.")
    corrupt = bytearray(png_bytes(64, 64))
    corrupt[60:80] = b"\xaa" * 20
    body = assert_problem(client.post("/upload", content=bytes(corrupt)), 422)
    assert body["code"].startswith("decode.")
    assert_problem(client.post("/upload", content=data[:10]), 422)


# ---- errors ------------------------------------------------------------------------


def test_problem_json_for_every_code_in_the_table(client: httpx.Client) -> None:
    for code in TABLE:
        r = client.get(f"/error/{code}")
        body = assert_problem(r, http_status_for(code), code)
        assert body["detail"] == f"test error {code}"
        assert body["instance"] == f"/error/{code}"


def test_unexpected_exception_leaks_nothing(client: httpx.Client) -> None:
    r = client.get("/boom")
    body = assert_problem(r, 500, "internal")
    assert "hunter2" not in r.text and "shadow" not in r.text and "RuntimeError" not in r.text
    assert body["detail"]


def test_http_exception_and_validation_errors(client: httpx.Client) -> None:
    assert_problem(client.get("/http/404"), 404, "http.404")
    assert_problem(client.get("/http/409"), 409, "http.409")
    assert_problem(client.get("/no/such/route"), 404, "http.404")
    assert_problem(client.post("/ping"), 405, "http.405")
    body = assert_problem(client.get("/items/abc", params={"q": "x"}), 422,
                          "request.validation")
    locs = sorted(tuple(e["loc"]) for e in body["errors"])
    assert locs == [("path", "item_id"), ("query", "q")]
    assert all(e["msg"] and e["type"] for e in body["errors"])


def test_open_circuit_is_503_with_retry_after(client: httpx.Client) -> None:
    r = client.get("/model")
    body = assert_problem(r, 503, "circuit.open")
    assert 3000 <= int(r.headers["retry-after"]) <= 3600
    assert body["retry_after"] <= 3600


def test_memory_budget_507_process_stays_healthy(client: httpx.Client) -> None:
    body = assert_problem(client.get("/alloc", params={"mb": 200}), 507, "memory.limit")
    assert body["limit"] == 64 << 20
    assert client.get("/alloc", params={"mb": 8}).status_code == 200
    assert client.get("/livez").status_code == 200


def test_openapi_lists_problem_responses(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert "Problem" in schema["components"]["schemas"]
    upload = schema["paths"]["/upload"]["post"]["responses"]
    for status in ("413", "415", "422", "500", "503", "504", "507"):
        content = upload[status]["content"]
        assert content[PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}
    ping = schema["paths"]["/ping"]["get"]["responses"]
    assert {"413", "500", "503", "504", "507"} <= set(ping)
    assert "/livez" not in schema["paths"] and "/metrics" not in schema["paths"]


# ---- request id and contextvars ----------------------------------------------------


def test_request_id_echoed_validated_and_in_log_records(client: httpx.Client) -> None:
    r = client.get("/ctx", headers={"x-request-id": "req-abc.123", "x-user": "alice"})
    assert r.headers["x-request-id"] == "req-abc.123" and r.json() == {"user": "alice"}
    bad = client.get("/ping", headers={"x-request-id": "has space"})
    assert bad.headers["x-request-id"] != "has space" and len(bad.headers["x-request-id"]) == 32
    long_id = client.get("/ping", headers={"x-request-id": "a" * 200})
    assert long_id.headers["x-request-id"] != "a" * 200
    records = [rec for rec in client.get("/logs").json() if rec["request_id"] == "req-abc.123"]
    handler = [rec for rec in records if rec["logger"] == "tests.handler"]
    assert handler and handler[0]["user"] == "alice"


def test_contextvar_from_a_dependency_reaches_the_middleware_log() -> None:
    with _serve({"metrics": False, "log_requests": True}) as srv, \
            httpx.Client(base_url=srv.url) as c:
        c.get("/ctx", headers={"x-request-id": "ctx-1", "x-user": "bob"})
        records = [r for r in c.get("/logs").json() if r["request_id"] == "ctx-1"]
    by_logger = {r["logger"]: r for r in records}
    assert by_logger["tests.handler"]["user"] == "bob"
    assert by_logger["amulet_native.http"]["user"] == "bob"  # the middleware's own record


# ---- flow control ------------------------------------------------------------------


def test_load_shedding_at_max_in_flight() -> None:
    with _serve({"max_in_flight": 2, "metrics": False}) as srv:
        results: list[int] = []

        def slow() -> None:
            results.append(httpx.get(srv.url + "/slow", params={"seconds": 2},
                                     timeout=10).status_code)

        threads = [threading.Thread(target=slow) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        shed = None
        while time.monotonic() < deadline:
            r = httpx.get(srv.url + "/ping", timeout=10)
            if r.status_code == 503:
                shed = r
                break
            time.sleep(0.05)
        assert shed is not None, "never shed"
        body = assert_problem(shed, 503, "server.overloaded")
        assert int(shed.headers["retry-after"]) >= 1 and body["detail"]
        assert httpx.get(srv.url + "/livez").status_code == 200  # ops paths never shed
        for t in threads:
            t.join()
        assert results == [200, 200]
        assert httpx.get(srv.url + "/ping").status_code == 200


def test_health_endpoints(client: httpx.Client) -> None:
    for path in ("/livez", "/readyz", "/startupz", "/health"):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"].startswith("application/health+json")
        assert r.json()["status"] == "pass"
        head = client.head(path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(r.content))


def test_graceful_shutdown_with_requests_in_flight() -> None:
    srv = _serve({"metrics": False, "drain_timeout": 10}).start()
    try:
        result: dict[str, Any] = {}

        def slow() -> None:
            r = httpx.get(srv.url + "/slow", params={"seconds": 1.5}, timeout=10)
            result["status"], result["body"] = r.status_code, r.json()

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.4)
        srv.terminate()
        t.join(10)
        assert result == {"status": 200, "body": {"slept": 1.5}}
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly
        assert srv.wait(15) in (0, -15)
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/ping", timeout=2)
    finally:
        srv.stop()


def test_shutdown_delay_fails_readiness_first() -> None:
    srv = _serve({"metrics": False, "shutdown_delay": 2.0}).start()
    try:
        assert httpx.get(srv.url + "/readyz").status_code == 200
        srv.terminate()
        time.sleep(0.3)
        ready = httpx.get(srv.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "fail"
        assert httpx.get(srv.url + "/ping").status_code == 200  # still serving
        assert httpx.get(srv.url + "/livez").status_code == 200
        assert srv.wait(15) in (0, -15)
    finally:
        srv.stop()


def test_import_error_names_the_extra() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['starlette'] = None\n"
            "import amulet_native, amulet_native.integrations\n"
            "try:\n    import amulet_native.integrations.fastapi\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)), check=True).stdout
    assert "amulet_native[fastapi]" in out
    plain = subprocess.run(
        [sys.executable, "-c", ("import amulet_native, sys; print([m for m in "
                                "('fastapi','starlette','streamlit','redis') if m in sys.modules])")],
        capture_output=True, text=True, check=True,
        cwd=os.path.dirname(os.path.dirname(__file__))).stdout
    assert plain.strip() == "[]"


# ---- metrics, rate limits, health (the metrics and ratelimit branches) -------------


def test_metrics_parsed_by_prometheus_client() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with _serve({"max_body": 1000}) as srv, httpx.Client(base_url=srv.url) as c:
        c.get("/ping")
        for i in range(3):
            c.get(f"/items/{i}")
        c.get("/items/not-a-number")
        c.post("/echo-len", content=b"x" * 500)
        c.post("/echo-len", content=b"x" * 5000)  # 413 before reading
        c.get("/error/decode.truncated")
        text = c.get("/metrics").text
        om = c.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]

    def value(name: str, **labels: str) -> float:
        found = [s.value for s in samples
                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        assert found, (name, labels)
        return sum(found)

    assert value("http_requests_total", method="GET", route="/items/{item_id}",
                 status="200") == 3
    assert value("http_requests_total", route="/items/{item_id}", status="422") == 1
    assert value("http_requests_total", route="/ping", status="200") == 1
    assert value("http_request_duration_seconds_count", route="/ping") == 1
    assert value("http_request_body_bytes_total", method="POST", route="/echo-len") == 500
    assert value("http_requests_in_flight", method="GET") == 0
    assert value("amulet_errors_total", code="input.too_large") == 1
    assert value("amulet_errors_total", code="decode.truncated") == 1
    assert value("amulet_errors_total", code="request.validation") == 1
    routes = {s.labels.get("route") for s in samples if "route" in s.labels}
    assert not any(r and r.startswith("/items/") and "{" not in r for r in routes)  # no raw paths


def test_rate_limit_shared_by_two_workers(tmp_path: Any) -> None:
    options = {"rate_limit": "6/hour", "shared_store": str(tmp_path), "metrics": False}
    with _serve(options, workers=2) as srv:
        from concurrent.futures import ThreadPoolExecutor

        def one(_: int) -> httpx.Response:  # a new connection each, 8 at a time:
            return httpx.get(srv.url + "/ping", headers={"connection": "close"})

        with ThreadPoolExecutor(8) as pool:  # the kernel spreads them over the workers
            responses = list(pool.map(one, range(48)))
        statuses = [r.status_code for r in responses]
        pids = {r.headers["x-worker-pid"] for r in responses}
        for r in responses:
            assert r.headers["x-ratelimit-limit"] == "6"  # on every response
            assert "ratelimit" in r.headers and "ratelimit-policy" in r.headers
            if r.status_code == 429:
                body = assert_problem(r, 429, "ratelimit.exceeded")
                assert int(r.headers["retry-after"]) >= 1 and body["retry_after"] >= 1
        assert statuses.count(200) == 6, statuses  # one budget for both workers
        assert len(pids) == 2, "both workers served requests"
        assert httpx.get(srv.url + "/livez").status_code == 200  # ops paths not limited


def test_rate_limit_by_api_key_header() -> None:
    options = {"rate_limit": "2/minute", "rate_key": "header:X-API-Key", "metrics": False}
    with _serve(options) as srv, httpx.Client(base_url=srv.url) as c:
        a = [c.get("/ping", headers={"x-api-key": "a"}).status_code for _ in range(3)]
        b = [c.get("/ping", headers={"x-api-key": "b"}).status_code for _ in range(2)]
    assert a == [200, 200, 429] and b == [200, 200]


def test_health_statuses_with_a_failing_readiness_check() -> None:
    with _serve({"metrics": False, "failing_check": "readiness"}) as srv, \
            httpx.Client(base_url=srv.url) as c:
        assert c.get("/livez").status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "fail"
        assert ready.headers["content-type"].startswith("application/health+json")
        full = c.get("/health")
        assert full.status_code == 503
        assert "database:connection" in json.dumps(full.json())
        assert c.get("/startupz").status_code == 200


def test_metrics_summed_over_two_workers(tmp_path: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from prometheus_client.parser import text_string_to_metric_families

    env = {"AMULET_METRICS_DIR": str(tmp_path)}
    with _serve({}, workers=2, env=env) as srv:
        def one(_: int) -> str:
            r = httpx.get(srv.url + "/ping", headers={"connection": "close"})
            assert r.status_code == 200
            return r.headers["x-worker-pid"]

        with ThreadPoolExecutor(8) as pool:
            pids = set(pool.map(one, range(40)))
        scrapes = [httpx.get(srv.url + "/metrics", headers={"connection": "close"}).text
                   for _ in range(4)]
    assert len(pids) == 2
    for text in scrapes:  # whichever worker answers, it reports both workers' requests
        total = sum(s.value for fam in text_string_to_metric_families(text)
                    for s in fam.samples
                    if s.name == "http_requests_total" and s.labels.get("route") == "/ping")
        assert total == 40


def test_per_route_body_caps() -> None:
    options = {"max_body": 1000, "body_limits": {"/echo-len": 5000}, "metrics": False}
    with _serve(options) as srv, httpx.Client(base_url=srv.url) as c:
        assert c.post("/echo-len", content=b"x" * 3000).json() == {"bytes": 3000}
        assert_problem(c.post("/echo-len", content=b"x" * 6000), 413, "input.too_large")
        assert_problem(c.post("/items/1", content=b"x" * 3000), 413, "input.too_large")
        # an ImageUpload route gets the cap its dependency allows, above max_body
        data = jpeg_bytes(200, 200, seed=5)
        assert len(data) > 1000
        r = c.post("/upload", content=data, headers={"content-type": "image/jpeg"})
        assert r.status_code == 200, r.text


def test_rate_limit_in_redis_shared_by_two_workers(tmp_path: Any) -> None:
    from redis_server import RedisServer, redis_server_binary

    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    from concurrent.futures import ThreadPoolExecutor

    with RedisServer(tmp_path) as redis:
        options = {"rate_limit": "5/hour", "redis_store": redis.url, "metrics": False}
        with _serve(options, workers=2) as srv:
            def one(_: int) -> httpx.Response:
                return httpx.get(srv.url + "/ping", headers={"connection": "close"})

            with ThreadPoolExecutor(8) as pool:
                responses = list(pool.map(one, range(32)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 5, statuses
    assert all(r.headers["x-ratelimit-limit"] == "5" for r in responses)
    assert len({r.headers["x-worker-pid"] for r in responses}) == 2
