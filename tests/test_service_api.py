"""The reference service (python/amulet_service) over real HTTP: a uvicorn
subprocess and httpx, every endpoint, the error table, settings validation.
Redis-backed behaviour (shared cache, jobs on a worker process, Redis and
worker failures) is in test_service_redis.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from http_server import REPO_ROOT, UvicornServer
from PIL import Image

import amulet_native as an

sys.path.insert(0, str(REPO_ROOT / "python"))

from amulet_service.gallery import generated_picture
from amulet_service.settings import Settings, SettingsError

APP = "amulet_service.app:create_app"
APP_DIR = ("--app-dir", str(REPO_ROOT / "python"))


def service_env(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "AMULET_GALLERY_DIR": str(tmp / "gallery"),
        "AMULET_CORPUS": str(tmp / "no-corpus"),
        "AMULET_MAX_UPLOAD_MB": "2",
        "AMULET_THREAD_POOL_SIZE": "2",
        **extra,
    }


def jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    return an.encode_jpeg(rgb, quality=quality)


def png_bomb(side: int = 30_000) -> bytes:
    """A tiny PNG whose header claims side x side pixels (a decompression bomb)."""
    raw = zlib.compress(b"\0" * 1024)

    def chunk(kind: bytes, data: bytes) -> bytes:
        import struct

        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    import struct

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornServer]:
    tmp = tmp_path_factory.mktemp("svc")
    with UvicornServer(APP, env=service_env(tmp), extra_args=APP_DIR, startup_timeout=60) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: UvicornServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def classify(client: httpx.Client, data: bytes, **params: Any) -> httpx.Response:
    return client.post(
        "/v1/classify", content=data, params=params, headers={"Content-Type": "image/jpeg"}
    )


def test_classify_raw_body_recognises_a_gallery_picture(client: httpx.Client) -> None:
    photo = an.resize(generated_picture(4), (300, 200))  # "amulet-05", resized + re-encoded
    r = classify(client, jpeg(photo, 70), top_k=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"][0]["label"] == "amulet-05"
    assert len(body["predictions"]) == 3
    assert body["image"] == {
        "format": "jpeg",
        "width": 300,
        "height": 200,
        "decoded": [200, 300, 3],
        "bytes": len(jpeg(photo, 70)),
    }
    assert body["cache"]["result"] == "miss"
    assert body["timings_ms"]["total"] >= body["timings_ms"]["upload_decode"]
    assert {"queue_ms", "model_ms", "batch_size"} <= set(body["timings_ms"])
    again = classify(client, jpeg(photo, 70), top_k=3).json()
    assert again["cache"] == {"result": "hit", "image": "hit"}
    assert again["predictions"] == body["predictions"] and again["digest"] == body["digest"]


def test_classify_multipart(client: httpx.Client) -> None:
    rgb = np.rot90(generated_picture(9)).copy()  # a quarter turn of "amulet-10"
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    r = client.post("/v1/classify", files={"file": ("x.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == "amulet-10"
    assert r.json()["image"]["format"] == "png"


def test_thumbnail(client: httpx.Client) -> None:
    data = jpeg(generated_picture(1))  # 384 x 256
    r = client.post(
        "/v1/thumbnail", content=data, params={"size": 96}, headers={"Content-Type": "image/jpeg"}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (96, 64)
    r = client.post(
        "/v1/thumbnail",
        content=data,
        params={"size": 80, "fit": "cover", "format": "png"},
        headers={"Content-Type": "image/jpeg"},
    )
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (80, 80)
    assert r.headers["x-image-digest"]


def test_gallery_list_and_add(client: httpx.Client) -> None:
    listing = client.get("/v1/gallery").json()
    assert listing["count"] >= 24 and "amulet-01" in listing["labels"]
    newcomer = generated_picture(500)
    r = client.post(
        "/v1/gallery",
        params={"label": "newcomer"},
        content=jpeg(newcomer),
        headers={"Content-Type": "image/jpeg"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["label"] == "newcomer"
    assert "newcomer" in client.get("/v1/gallery").json()["labels"]
    r = classify(client, jpeg(an.resize(newcomer, (192, 128)), 60))
    assert r.json()["predictions"][0]["label"] == "newcomer"


def test_job_in_process_without_redis(client: httpx.Client) -> None:
    files = [("files", (f"{i}.jpg", jpeg(generated_picture(i)), "image/jpeg")) for i in (2, 3)]
    r = client.post("/v1/jobs", files=files)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["total"] == 2 and r.headers["location"] == job["status_url"]
    events = []
    with client.stream("GET", job["events_url"]) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event:"):
                events.append(line.split(":", 1)[1].strip())
            if line.startswith("data:") and events[-1] == "done":
                done = json.loads(line[5:])
                break
    assert events[0] == "progress" and events[-1] == "done"
    assert done["status"] == "finished"
    assert [e["predictions"][0]["label"] for e in done["results"]] == ["amulet-03", "amulet-04"]
    assert client.get(job["status_url"]).json()["progress"] == {"done": 2, "total": 2}


def test_stats_and_operational_endpoints(client: httpx.Client) -> None:
    classify(client, b"not an image")
    stats = client.get("/v1/stats").json()
    assert stats["model"]["name"] == "gallery-phash"
    assert stats["batching"]["items"] >= 1 and stats["batching"]["breaker"] == "closed"
    assert 0 <= stats["results_cache"]["hit_rate"] <= 1
    assert stats["memory"]["level"] in ("normal", "warning", "critical")
    assert any(e["path"] == "/v1/classify" and e["status"] == 415 for e in stats["recent_errors"])
    for path in ("/livez", "/readyz", "/health"):
        assert client.get(path).status_code == 200, path


def truncated_jpeg() -> bytes:
    return jpeg(generated_picture(3))[:600]


def corrupt_jpeg() -> bytes:
    data = bytearray(jpeg(generated_picture(3)))
    data[400:1400] = bytes(range(256)) * 3 + bytes(232)
    return bytes(data)


# (name, method, path, request kwargs, status, problem code)
ERRORS: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    (
        "empty body",
        "POST",
        "/v1/classify",
        {"content": b"", "headers": {"Content-Type": "image/jpeg"}},
        400,
        "input.empty",
    ),
    (
        "not an image",
        "POST",
        "/v1/classify",
        {"content": b"hello world" * 10, "headers": {"Content-Type": "image/jpeg"}},
        415,
        "format.unsupported",
    ),
    (
        "wrong content type",
        "POST",
        "/v1/classify",
        {"content": b"{}", "headers": {"Content-Type": "application/json"}},
        415,
        "input.content_type",
    ),
    (
        "truncated jpeg",
        "POST",
        "/v1/classify",
        {"content": truncated_jpeg(), "headers": {"Content-Type": "image/jpeg"}},
        422,
        "decode.truncated",
    ),
    (
        "decompression bomb",
        "POST",
        "/v1/classify",
        {"content": png_bomb(), "headers": {"Content-Type": "image/png"}},
        422,
        "limits.pixels",
    ),
    (
        "oversize declared",
        "POST",
        "/v1/classify",
        {"content": b"\xff\xd8" + bytes(3 << 20), "headers": {"Content-Type": "image/jpeg"}},
        413,
        "input.too_large",
    ),
    (
        "bad top_k",
        "POST",
        "/v1/classify?top_k=0",
        {"content": jpeg(generated_picture(1)), "headers": {"Content-Type": "image/jpeg"}},
        422,
        "request.validation",
    ),
    (
        "bad thumbnail fit",
        "POST",
        "/v1/thumbnail?fit=stretch",
        {"content": jpeg(generated_picture(1)), "headers": {"Content-Type": "image/jpeg"}},
        422,
        "request.validation",
    ),
    (
        "bad gallery label",
        "POST",
        "/v1/gallery?label=a__b",
        {"content": jpeg(generated_picture(1)), "headers": {"Content-Type": "image/jpeg"}},
        400,
        "value.invalid",
    ),
    (
        "jobs without files",
        "POST",
        "/v1/jobs",
        {"files": {"note": (None, "hi")}},
        400,
        "input.missing",
    ),
    (
        "jobs not multipart",
        "POST",
        "/v1/jobs",
        {"content": b"x", "headers": {"Content-Type": "image/jpeg"}},
        415,
        "input.content_type",
    ),
    ("unknown job", "GET", "/v1/jobs/nope", {}, 404, "http.404"),
    ("unknown route", "GET", "/v1/nothing", {}, 404, "http.404"),
]


@pytest.mark.parametrize("case", ERRORS, ids=[c[0] for c in ERRORS])
def test_error_table(
    client: httpx.Client, case: tuple[str, str, str, dict[str, Any], int, str]
) -> None:
    _, method, path, kwargs, status, code = case
    r = client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == status and problem["request_id"]
    assert problem["code"] == code or problem["code"].startswith(code), problem


def test_corrupt_jpeg_gets_a_4xx_never_a_5xx(client: httpx.Client) -> None:
    r = classify(client, corrupt_jpeg())
    assert 400 <= r.status_code < 500 or r.status_code == 200  # libjpeg may still yield pixels
    assert client.get("/livez").status_code == 200


def test_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "AMULET_CACHE_MAX_SIZE": "500",
            "AMULET_MEMORY_WARNING_THRESHOLD": "70",
            "REDIS_URL": "redis://localhost:6379/0",
            "AMULET_RATE_LIMIT": "off",
        }
    )
    assert s.cache_max_size == 500 and s.memory_warning_threshold == 0.7
    assert s.redis_url == "redis://localhost:6379/0" and s.rate_limit is None
    for var, value in [
        ("AMULET_CACHE_MAX_SIZE", "lots"),
        ("AMULET_CACHE_DEFAULT_TTL", "-1"),
        ("AMULET_IMAGE_CACHE_SIZE", "1e99"),
        ("AMULET_THREAD_POOL_SIZE", "0"),
        ("AMULET_MEMORY_CRITICAL_THRESHOLD", "nan"),
        ("REDIS_URL", "localhost"),
        ("AMULET_RATE_LIMIT", "fast"),
        ("AMULET_LOG_REQUESTS", "maybe"),
        ("AMULET_MODEL", "resnet"),
    ]:
        with pytest.raises(SettingsError) as e:
            Settings.from_env({var: value})
        assert e.value.variable == var and var in str(e.value)
    with pytest.raises(SettingsError) as e:
        Settings.from_env(
            {"AMULET_MEMORY_WARNING_THRESHOLD": "0.95", "AMULET_MEMORY_CRITICAL_THRESHOLD": "0.9"}
        )
    assert e.value.variable == "AMULET_MEMORY_WARNING_THRESHOLD"


def test_bad_setting_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    srv = UvicornServer(
        APP,
        env=service_env(tmp_path, AMULET_THREAD_POOL_SIZE="many"),
        extra_args=APP_DIR,
        startup_timeout=30,
    )
    with pytest.raises(RuntimeError) as e:
        srv.start()
    assert "AMULET_THREAD_POOL_SIZE='many'" in str(e.value)
    proc = subprocess.run(
        [sys.executable, "-m", "amulet_service"],
        check=False,
        cwd=REPO_ROOT / "python",
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'python'}",
            "AMULET_CACHE_DEFAULT_TTL": "soon",
            # a sanitizer build's preload must reach the child too
            **{k: v for k, v in os.environ.items()
               if k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")},
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "AMULET_CACHE_DEFAULT_TTL" in proc.stderr
    time.sleep(0)  # nothing to clean up: neither server started


def test_rate_limit_shared_by_two_workers(tmp_path: Path) -> None:
    env = service_env(tmp_path, AMULET_RATE_LIMIT="12/hour")
    with UvicornServer(APP, env=env, extra_args=APP_DIR, workers=2, startup_timeout=90) as srv:
        data = an.encode_jpeg(generated_picture(1), quality=80)
        statuses = [
            httpx.post(
                srv.url + "/v1/classify",
                content=data,
                timeout=30,
                headers={"Content-Type": "image/jpeg"},
            ).status_code
            for _ in range(20)
        ]
        assert statuses.count(200) == 12, statuses  # one limit for both workers (shared arena)
        assert statuses[-1] == 429
        r = httpx.post(
            srv.url + "/v1/classify", content=data, headers={"Content-Type": "image/jpeg"}
        )
        assert r.status_code == 429 and "retry-after" in r.headers
        assert r.json()["code"] == "ratelimit.exceeded"


def test_refused_chunked_upload_is_answered_not_reset(server: UvicornServer) -> None:
    """A client that keeps sending a chunked body past the limit still reads its
    413: the service drains (bounded) before answering, so the close that
    follows is not a reset that destroys the answer (LingeringClose)."""
    import socket

    part = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n"
    )
    chunk = b"%x\r\n" % 65536 + b"\0" * 65536 + b"\r\n"
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
            s.sendall(
                b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
                + b"%x\r\n" % len(part)
                + part
                + b"\r\n"
            )
            for _ in range(8 * 16):  # 8 MiB, far over the 2 MiB limit, sent whatever happens
                s.sendall(chunk)
            s.sendall(b"0\r\n\r\n")
            head = s.recv(65536)
        assert head.startswith(b"HTTP/1.1 413"), head[:200]
