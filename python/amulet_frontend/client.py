"""The front end's HTTP client for the recognition API.

Every call goes through ``resilience.retry`` (connection errors and 502/503/504,
3 attempts, jittered, honouring Retry-After, 8 s in total) and one
``CircuitBreaker`` per API: when the API is down the breaker opens after a few
failures and the page says "unavailable" at once instead of waiting on every
rerun; it lets a probe through after a few seconds, so the page works again by
itself when the API comes back.  Problems (4xx) are returned, not retried.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from amulet_native.errors import CircuitOpenError
from amulet_native.resilience import CircuitBreaker, retry

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiUnavailable(Exception):
    """The API cannot be reached (down, overloaded, or the breaker is open)."""


class _Retryable(Exception):
    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


@dataclass
class ApiResult:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def problem(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("detail") or self.body.get("title") or self.body)
        return str(self.body)


class ApiClient:
    def __init__(
        self, base_url: str | None = None, *, timeout: float = 30.0, breaker_wait: float = 5.0
    ) -> None:
        self.base_url = (base_url or os.environ.get("AMULET_API_URL") or DEFAULT_URL).rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self.breaker = CircuitBreaker(
            f"api:{self.base_url}",
            failure_rate=0.5,
            window=6,
            minimum_calls=3,
            wait_in_open=breaker_wait,
            half_open_calls=1,
            record=(httpx.TransportError, _Retryable),
        )
        self._send = retry(
            on=(httpx.TransportError, _Retryable), attempts=3, timeout=8.0, name="frontend.api"
        )(self.breaker(self._once))

    def _once(self, method: str, path: str, kwargs: dict[str, Any]) -> httpx.Response:
        r = self.http.request(method, path, **kwargs)
        if r.status_code in (502, 503, 504):
            ra = r.headers.get("retry-after")
            raise _Retryable(r.status_code, float(ra) if ra and ra.isdigit() else None)
        return r

    def request(self, method: str, path: str, **kwargs: Any) -> ApiResult:
        try:
            r = self._send(method, path, kwargs)
        except CircuitOpenError as exc:
            raise ApiUnavailable(
                f"the API at {self.base_url} is unavailable (retrying in "
                f"{exc.retry_after or 0:.0f} s)"
            ) from None
        except (httpx.TransportError, _Retryable) as exc:
            raise ApiUnavailable(f"the API at {self.base_url} is unavailable: {exc}") from None
        try:
            body = r.json()
        except ValueError:
            body = r.content
        return ApiResult(r.status_code, body)

    # ---- the endpoints ----

    def classify(self, data: bytes, filename: str = "upload", top_k: int = 5) -> ApiResult:
        return self.request(
            "POST",
            "/v1/classify",
            params={"top_k": top_k},
            files={"file": (filename, data, "application/octet-stream")},
        )

    def add_to_gallery(self, label: str, data: bytes, filename: str = "upload") -> ApiResult:
        return self.request(
            "POST",
            "/v1/gallery",
            params={"label": label},
            files={"file": (filename, data, "application/octet-stream")},
        )

    def gallery(self) -> ApiResult:
        return self.request("GET", "/v1/gallery")

    def submit_job(self, files: list[tuple[str, bytes]], top_k: int = 3) -> ApiResult:
        parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
        return self.request("POST", "/v1/jobs", params={"top_k": top_k}, files=parts)

    def job(self, job_id: str) -> ApiResult:
        return self.request("GET", f"/v1/jobs/{job_id}")

    def stats(self) -> ApiResult:
        return self.request("GET", "/v1/stats")

    def health(self) -> ApiResult:
        return self.request("GET", "/health")
