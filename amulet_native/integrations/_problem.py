"""The one table: error code -> HTTP status -> RFC 9457 ``application/problem+json``.

Every layer that answers an HTTP error (the middleware, the ``ImageUpload``
dependency, the exception handlers ``install()`` registers, other branches'
integrations) calls :func:`http_status_for` and :func:`problem_body`; nobody
else maps codes to statuses.  Pure Python, no Starlette: importable anywhere.

A code is looked up exactly first, then by its prefixes (``limits.pixels`` ->
``limits``), then by the exception class (a :class:`ValidationError` with an
unlisted code is a 400, anything else unlisted a 500).

>>> http_status_for("input.too_large")
413
>>> problem_body("ratelimit.exceeded", request_id="r1", instance="/upload")["status"]
429
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import AmuletError, NetworkError, SecurityError, ValidationError

__all__ = [
    "PROBLEM_JSON",
    "PROBLEM_TYPE_BASE",
    "TABLE",
    "Problem",
    "http_status_for",
    "problem_body",
    "problem_type",
    "title_for",
]

PROBLEM_JSON = "application/problem+json"
#: ``type`` is this base plus the code: a stable URI per code (RFC 9457 §3.1.1).
PROBLEM_TYPE_BASE = "https://amulet-native.dev/problems/"


@dataclass(frozen=True, slots=True)
class Problem:
    """One row of the table."""

    status: int
    title: str


#: code (exact) or code prefix -> (status, title).  The one table.
TABLE: Mapping[str, Problem] = {
    # uploads and request bodies
    "input.too_large": Problem(413, "Payload too large"),
    "input.empty": Problem(400, "Empty input"),
    "input.type": Problem(400, "Invalid input"),
    "input.read": Problem(400, "Unreadable input"),
    "input.base64": Problem(400, "Malformed base64"),
    "input.content_type": Problem(415, "Unsupported content type"),
    "input.missing": Problem(400, "Missing upload"),
    "multipart.malformed": Problem(400, "Malformed multipart body"),
    "multipart.too_many_files": Problem(413, "Too many files"),
    "multipart.too_many_fields": Problem(413, "Too many form fields"),
    "multipart.part_too_large": Problem(413, "Form part too large"),
    # images
    "format": Problem(415, "Unsupported image format"),
    "format.unsupported": Problem(415, "Unsupported image format"),
    "format.unsupported_variant": Problem(415, "Unsupported image variant"),
    "format.mismatch": Problem(415, "Image format does not match the declared type"),
    "limits": Problem(422, "Image over a limit"),
    "limits.bytes": Problem(413, "Image larger than allowed"),
    "limits.pixels": Problem(422, "Image has too many pixels"),
    "limits.width": Problem(422, "Image too wide"),
    "limits.height": Problem(422, "Image too tall"),
    "limits.jpeg_scans": Problem(422, "Progressive JPEG has too many scans"),
    "decode": Problem(422, "Image could not be decoded"),
    "decode.header": Problem(422, "Invalid image header"),
    "decode.truncated": Problem(422, "Image data is truncated"),
    "decode.corrupt": Problem(422, "Image data is corrupt"),
    # memory
    "memory": Problem(507, "Insufficient storage"),
    "memory.limit": Problem(507, "Request memory budget exceeded"),
    "memory.alloc": Problem(507, "Out of memory"),
    "memory.process_limit": Problem(507, "Process memory limit reached"),
    # request validation (FastAPI's RequestValidationError)
    "request.validation": Problem(422, "Request validation failed"),
    "validation": Problem(400, "Invalid request"),
    "value": Problem(400, "Invalid value"),
    # flow control and the operations layer
    "ratelimit.exceeded": Problem(429, "Too many requests"),
    "server.overloaded": Problem(503, "Server overloaded"),
    "server.draining": Problem(503, "Server shutting down"),
    "deadline.exceeded": Problem(504, "Request deadline exceeded"),
    "circuit.open": Problem(503, "Dependency unavailable (circuit open)"),
    "bulkhead.full": Problem(503, "Too many concurrent calls"),
    "timeout": Problem(504, "Operation timed out"),
    "pool.timeout": Problem(503, "No resource available"),
    "pool.closed": Problem(503, "Resource pool closed"),
    "lock.timeout": Problem(503, "Resource busy"),
    "queue.closed": Problem(503, "Queue closed"),
    "network": Problem(502, "Upstream service failed"),
    "model": Problem(500, "Model failure"),
    "processing": Problem(500, "Processing failed"),
    "internal": Problem(500, "Internal server error"),
}

_HTTP_TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 406: "Not acceptable", 408: "Request timeout",
    409: "Conflict", 410: "Gone", 411: "Length required", 413: "Payload too large",
    415: "Unsupported media type", 422: "Unprocessable content", 429: "Too many requests",
    500: "Internal server error", 501: "Not implemented", 502: "Bad gateway",
    503: "Service unavailable", 504: "Gateway timeout", 507: "Insufficient storage",
}

#: context keys copied into a problem body (numbers and short strings the
#: client can act on; never messages from third-party code).
_PUBLIC_CONTEXT = (
    "limit", "received", "declared", "actual", "limit_name", "format", "field",
    "retry_after", "requested", "max_files", "max_fields", "max_part_size",
    "declared_type", "detected_type", "deadline",
)


def _lookup(code: str) -> Problem | None:
    while True:
        row = TABLE.get(code)
        if row is not None:
            return row
        code, dot, _ = code.rpartition(".")
        if not dot:
            return None


def _http_code(code: str) -> int | None:
    """``http.404`` (an HTTPException) -> 404."""
    if code.startswith("http."):
        tail = code[5:]
        if tail.isdigit() and 100 <= int(tail) <= 599:
            return int(tail)
    return None


def http_status_for(code: str, exc: BaseException | None = None) -> int:
    """The HTTP status for an error code (see the module docstring for the order)."""
    http = _http_code(code)
    if http is not None:
        return http
    row = _lookup(code)
    if row is not None:
        return row.status
    if isinstance(exc, (ValidationError, SecurityError)):
        return 400
    if isinstance(exc, NetworkError):
        return 502
    return 500


def title_for(code: str, status: int | None = None) -> str:
    """The short human title for a code."""
    row = _lookup(code)
    if row is not None and _http_code(code) is None:
        return row.title
    return _HTTP_TITLES.get(status or http_status_for(code), "Error")


def problem_type(code: str) -> str:
    """The ``type`` URI of a code."""
    return PROBLEM_TYPE_BASE + code


def _json_safe(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= 200


def problem_body(
    exc_or_code: BaseException | str,
    *,
    request_id: str | None = None,
    instance: str | None = None,
    status: int | None = None,
    detail: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The RFC 9457 body for an exception or a code.

    ``type``, ``title``, ``status``, ``detail``, ``instance``, plus ``code``,
    ``request_id`` and the public part of an :class:`AmuletError`'s context.
    An exception that is not an AmuletError becomes code ``internal`` with a
    fixed detail: its text (which may hold paths, SQL, secrets) never leaks.
    """
    fields: dict[str, Any] = {}
    if isinstance(exc_or_code, str):
        code = exc_or_code
        exc: BaseException | None = None
    elif isinstance(exc_or_code, AmuletError):
        exc = exc_or_code
        code = exc.code
        if detail is None:
            detail = exc.message or None
        for key in _PUBLIC_CONTEXT:
            value = exc.context.get(key)
            if value is not None and _json_safe(value):
                fields[key] = value
    else:
        exc = exc_or_code
        code = "internal"
        detail = "An unexpected error occurred; the request id identifies it in the logs."
    if status is None:
        status = http_status_for(code, exc)
    title = title_for(code, status)
    body: dict[str, Any] = {
        "type": problem_type(code),
        "title": title,
        "status": status,
        "detail": detail if detail is not None else title,
        "instance": instance,
        "code": code,
        "request_id": request_id,
    }
    if instance is None:
        del body["instance"]
    body.update(fields)
    if extra:
        body.update(extra)
    return body
