"""A real Prometheus server (Debian package `prometheus`) scrapes our
start_http_server endpoint on loopback; its HTTP API must return our values,
hostile label values included."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from amulet_native import metrics

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="prometheus server (Debian: prometheus)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _query(port: int, q: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success"
    return list(body["data"]["result"])


def test_prometheus_scrapes_our_endpoint(tmp_path: Path) -> None:
    reg = metrics.CollectorRegistry()
    c = metrics.Counter("scrape_test_requests", "Requests.", ["route"], registry=reg)
    c.labels("/a").inc(3)
    c.labels('we"ird\\val\nue ✓').inc(2)
    h = metrics.Histogram("scrape_test_latency_seconds", "Latency.", buckets=[0.1, 1], registry=reg)
    for v in (0.05, 0.5, 5):
        h.observe(v)
    s = metrics.Summary("scrape_test_size_bytes", "Sizes.", registry=reg)
    for i in range(1, 101):
        s.observe(i)
    g = metrics.Gauge("scrape_test_level", "Level.", registry=reg)
    g.set(-2.5)
    server, thread = metrics.start_http_server(0, registry=reg)
    target = f"127.0.0.1:{server.server_address[1]}"
    prom_port = _free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: amulet\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                result = _query(prom_port, 'up{job="amulet"}')
                if result and result[0]["value"][1] == "1" and _query(
                    prom_port, "scrape_test_level"
                ):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert result and result[0]["value"][1] == "1", "Prometheus never scraped the target"
        values = {r["metric"]["route"]: float(r["value"][1])
                  for r in _query(prom_port, "scrape_test_requests_total")}
        assert values == {"/a": 3.0, 'we"ird\\val\nue ✓': 2.0}
        assert float(_query(prom_port, "scrape_test_level")[0]["value"][1]) == -2.5
        assert float(_query(prom_port, "scrape_test_latency_seconds_count")[0]["value"][1]) == 3
        b = _query(prom_port, 'scrape_test_latency_seconds_bucket{le="1.0"}')
        assert float(b[0]["value"][1]) == 2.0
        q = _query(prom_port, 'scrape_test_size_bytes{quantile="0.5"}')
        assert abs(float(q[0]["value"][1]) - 50) <= 0.5
    finally:
        proc.terminate()
        proc.wait(30)
        server.shutdown()
        thread.join(5)
