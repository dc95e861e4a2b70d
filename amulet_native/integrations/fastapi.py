"""FastAPI / Starlette integration: one middleware, one upload dependency, the
operational endpoints.  Extra ``[fastapi]``.

::

    from fastapi import Depends, FastAPI
    from amulet_native.integrations.fastapi import DecodedImage, ImageUpload, install

    app = FastAPI()
    install(app, max_body=20 << 20, memory_mb=256, rate_limit="100/minute",
            max_in_flight=64, deadline=10.0)

    @app.post("/classify")
    async def classify(img: DecodedImage = Depends(ImageUpload(max_size=(512, 512)))):
        return {"shape": img.array.shape, "digest": img.digest, "cached": img.cached}

:class:`AmuletMiddleware` is pure ASGI (never ``BaseHTTPMiddleware``: that costs
a task group and a memory stream per request and cuts contextvars off from the
app).  In one pass per request it assigns the request id, sheds load, rate
limits, caps the body, opens a memory budget, enforces a deadline, records
metrics and turns every error into ``application/problem+json`` through the one
table in :mod:`amulet_native.integrations._problem`.
"""

from __future__ import annotations

from . import _require

_require("starlette", "fastapi")

import asyncio
import contextlib
import contextvars
import itertools
import json
import logging
import math
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from ..cache import ImageCache
from ..errors import (
    AmuletError,
    ValidationError,
)
from ..memory import memory_limit
from ._problem import PROBLEM_JSON, http_status_for, problem_body
from ._upload import DecodedImage, ImageUpload

__all__ = [
    "AmuletMiddleware",
    "DecodedImage",
    "ImageUpload",
    "RequestIdFilter",
    "current_request_id",
    "install",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("amulet_native.http")
_MIB = 1 << 20

#: Paths of the operational endpoints: never shed, limited, capped or timed.
OPS_PATHS = ("/livez", "/readyz", "/startupz", "/health", "/metrics")

# ---- request id ------------------------------------------------------------------

_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "amulet_native.request_id", default=None
)
#: An incoming X-Request-ID is echoed only when it looks like an id (no log
#: injection, no header smuggling, bounded length); otherwise a new one is made.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")


_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count()


def _reseed_ids() -> None:
    global _ID_PREFIX, _id_counter
    _ID_PREFIX = os.urandom(8).hex()
    _id_counter = itertools.count()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_ids)  # forked workers: their own ids


def _new_request_id() -> str:
    """32 hex digits: a random per-process prefix and a counter (unique
    without a system call per request)."""
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def current_request_id() -> str | None:
    """The id of the request being served in this context (None outside one)."""
    return _REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` ("-" outside a request).  :func:`install`
    also wraps the log record factory, so every record has it; add this filter
    to handlers of loggers created with another factory."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _REQUEST_ID.get() or "-"
        return True


_factory_installed = False


def _install_record_factory() -> None:
    """Every LogRecord made from now on carries ``request_id`` (idempotent)."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = _REQUEST_ID.get() or "-"
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


# ---- metrics ---------------------------------------------------------------------


class _HttpMetrics:
    """The middleware's metric families in one registry (made once per registry)."""

    def __init__(self, registry: Any) -> None:
        from .. import metrics as m  # the metrics branch: values in native memory

        labels = ("method", "route", "status")
        self.requests = m.Counter(
            "http_requests", "HTTP requests served", labels, registry=registry
        )
        self.latency = m.Histogram(
            "http_request_duration_seconds", "Time to serve an HTTP request",
            labels, registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.in_flight = m.Gauge(
            "http_requests_in_flight", "HTTP requests being served", ("method",),
            registry=registry, multiprocess_mode="livesum",
        )
        self.body_bytes = m.Counter(
            "http_request_body_bytes", "Request body bytes received", ("method", "route"),
            registry=registry,
        )
        self.errors = m.Counter(
            "amulet_errors", "Errors answered as problem+json, by code", ("code",),
            registry=registry,
        )


        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._in_flight: dict[str, Any] = {}

    def in_flight_child(self, method: str) -> Any:
        child = self._in_flight.get(method)
        if child is None:
            child = self._in_flight[method] = self.in_flight.labels(method)
        return child

    def observe(self, scope: Scope, status: int, seconds: float, body_bytes: int) -> None:
        """One finished request: the label children are looked up once per
        (method, route template, status) and kept."""
        method = _method_label(scope)
        route = _route_template(scope)
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            label = str(status)
            children = (self.requests.labels(method, route, label),
                        self.latency.labels(method, route, label))
            if len(self._children) < 10000:
                self._children[key] = children
        self.in_flight_child(method).dec()
        children[0].inc()
        children[1].observe(seconds)
        if body_bytes:
            self.body_bytes.labels(method, route).inc(body_bytes)


_metrics_by_registry: dict[int, tuple[Any, _HttpMetrics]] = {}


def _http_metrics(registry: Any) -> _HttpMetrics:
    if registry is None:
        from .. import metrics as m

        registry = m.REGISTRY
    entry = _metrics_by_registry.get(id(registry))
    if entry is None or entry[0] is not registry:
        entry = (registry, _HttpMetrics(registry))
        _metrics_by_registry[id(registry)] = entry
    return entry[1]


def _metrics_or_none(metrics: Any) -> _HttpMetrics | None:
    """The families for ``metrics`` (True: the default registry; False/None: off)."""
    if metrics is False or metrics is None:
        return None
    try:
        return _http_metrics(None if metrics is True else metrics)
    except ImportError:  # pragma: no cover - only without amulet_native.metrics
        _log.warning("amulet_native.metrics is not available: HTTP metrics are off")
        return None


#: Methods that get their own metric label; any other token (h11 accepts
#: them all) is "OTHER", so clients cannot grow the label set without bound.
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS",
                      "TRACE", "CONNECT"))


def _method_label(scope: Scope) -> str:
    method: str = scope["method"]
    return method if method in _METHODS else "OTHER"


def _route_template(scope: Scope) -> str:
    """The matched route's path template ("/items/{id}"), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return scope.get("root_path", "") + path if scope.get("root_path") else path
    return "<unmatched>"


# ---- rate limiting ---------------------------------------------------------------

KeyFunc = Callable[[HTTPConnection], "str | None"]


def _key_function(rate_key: str | KeyFunc) -> Callable[[Scope], str | None]:
    """"ip", "header:<Name>" (falls back to the client address) or a callable
    taking a Starlette ``HTTPConnection``; returns a function of the scope."""
    if callable(rate_key):
        user = rate_key
        return lambda scope: user(HTTPConnection(scope))
    if rate_key == "ip":
        return _client_address
    if isinstance(rate_key, str) and rate_key.startswith("header:"):
        name = rate_key[7:].strip().lower().encode("latin-1")

        def by_header(scope: Scope) -> str | None:
            for key, value in scope["headers"]:
                if key == name and value:
                    return f"key:{value.decode('latin-1')}"
            return _client_address(scope)

        return by_header
    raise ValidationError(
        f"rate_key must be 'ip', 'header:<Name>' or a callable, got {rate_key!r}",
        field="rate_key",
    )


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return f"ip:{client[0]}" if client else "ip:unknown"


def _make_limiter(rate_limit: Any, store: Any) -> Any:
    """A RateLimiter from one, or from policies ("100/minute", Policy, a list)."""
    if rate_limit is None:
        return None
    from .. import ratelimit as rl

    if isinstance(rate_limit, rl.RateLimiter):
        return rate_limit
    return rl.RateLimiter(rate_limit, store=store)


# ---- the middleware --------------------------------------------------------------


class _Deadline(Exception):
    pass


_NO_SCOPE = contextlib.nullcontext()


class _Deadlines:
    """Per-request deadlines on one timer: a sweep every ``tick`` seconds
    cancels the tasks past their deadline (no timer handle per request).
    Resolution: ``tick`` (at most 50 ms, a tenth of the deadline)."""

    __slots__ = ("_expired", "handle", "pending", "seconds", "tick")

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.tick = min(0.05, self.seconds / 10)
        self.pending: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self.handle: asyncio.TimerHandle | None = None

    def add(self, task: asyncio.Task[Any]) -> None:
        self.pending[task] = time.monotonic() + self.seconds
        if self.handle is None:
            self.handle = asyncio.get_running_loop().call_later(self.tick, self._sweep)

    def remove(self, task: asyncio.Task[Any]) -> None:
        self.pending.pop(task, None)
        self._expired.discard(task)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        return task in self._expired

    def _sweep(self) -> None:
        now = time.monotonic()
        late = [task for task, when in self.pending.items() if when <= now]
        for task in late:
            del self.pending[task]
            self._expired.add(task)
            task.cancel()
        self.handle = (asyncio.get_running_loop().call_later(self.tick, self._sweep)
                       if self.pending else None)


#: CR, LF or NUL in a response header name or value (header injection).
_BAD_HEADER = re.compile(rb"[\r\n\0]")


class _Exchange:
    """One request's response side: adds our headers to the app's response
    start, remembers the status, and swallows the app's messages once the
    middleware has decided to answer itself (body over the cap, deadline)."""

    __slots__ = ("extra", "send", "started", "status", "suppress")

    def __init__(self, send: Send, extra: list[tuple[bytes, bytes]]) -> None:
        self.send = send
        self.extra = extra
        self.started = False
        self.suppress = False
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if self.suppress:
            return
        if message["type"] == "http.response.start":
            headers = message.get("headers", ())
            for name, value in headers:  # the app's; ours are checked when made
                if _BAD_HEADER.search(name) or _BAD_HEADER.search(value):
                    # uvicorn marks the response started before it refuses
                    # one: after that nobody can answer the client at all.
                    raise RuntimeError(f"invalid response header {name!r}")
            message["headers"] = [*headers, *self.extra]
            # Started only once the server took it: a start it refused (an
            # invalid header) sent nothing, so a problem+json 500 can follow.
            await self.send(message)
            self.started = True
            self.status = message["status"]
            return
        await self.send(message)

    async def respond(
        self, status: int, body: bytes, content_type: str,
        headers: Iterable[tuple[bytes, bytes]] = (), *, length: bool = True,
    ) -> None:
        """Send a whole response of the middleware's own (never the app's)."""
        self.started = True
        self.status = status
        start = [(b"content-type", content_type.encode())]
        if length:
            start.append((b"content-length", str(len(body)).encode()))
        await self.send({
            "type": "http.response.start",
            "status": status,
            "headers": [*start, *headers, *self.extra],
        })
        await self.send({"type": "http.response.body", "body": body})

    async def problem(
        self, status: int, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        await self.respond(status, payload, PROBLEM_JSON, headers)


class _BodyCounter:
    """The app's receive: counts body bytes and, past the cap, hands the app a
    clean ``http.disconnect`` instead of the chunk (nothing half-processed)."""

    __slots__ = ("exchange", "limit", "over", "receive", "total")

    def __init__(self, receive: Receive, limit: int, exchange: _Exchange) -> None:
        self.receive = receive
        self.limit = limit
        self.exchange = exchange
        self.total = 0
        self.over = False

    async def __call__(self) -> Message:
        if self.over:
            return {"type": "http.disconnect"}
        message = await self.receive()
        if message["type"] == "http.request":
            self.total += len(message.get("body", b""))
            if self.limit and self.total > self.limit:
                self.over = True
                self.exchange.suppress = True  # what the app sends now is no reply
                return {"type": "http.disconnect"}
        return message


class AmuletMiddleware:
    """Pure ASGI middleware for any Starlette/FastAPI app (see the module doc).

    Options (all optional; ``None`` turns a feature off):

    * ``max_body``: bytes per request body (default 10 MiB; 0 = no cap);
      ``body_limits`` maps route path templates to their own cap.
    * ``memory_mb``: a :func:`amulet_native.memory_limit` budget per request.
    * ``rate_limit``: a ``ratelimit.RateLimiter``, a policy ("100/minute") or
      a list of them; ``rate_key``: "ip", "header:X-API-Key" or a callable
      taking a Starlette ``HTTPConnection``; ``rate_store`` for policies given
      as text (``SharedStore`` across workers, ``RedisStore`` across hosts).
    * ``max_in_flight``: beyond it 503 + Retry-After at once (no queue).
    * ``deadline``: seconds per request; past it the handler is cancelled and
      the client gets 504.
    * ``metrics``: True (the default registry), a registry, or False.
    * ``drain_timeout``: on shutdown, how long in-flight requests may finish;
      ``shutdown_delay``: seconds between SIGTERM and handing it to the server,
      during which ``/readyz`` fails while requests are still served.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int = 10 * _MIB,
        body_limits: Mapping[str, int] | None = None,
        memory_mb: float | None = None,
        rate_limit: Any = None,
        rate_key: str | KeyFunc = "ip",
        rate_store: Any = None,
        max_in_flight: int | None = None,
        deadline: float | None = None,
        metrics: Any = True,
        retry_after: int = 1,
        drain_timeout: float = 30.0,
        shutdown_delay: float = 0.0,
        health: Any = None,
        exempt: Iterable[str] = OPS_PATHS,
        log_requests: bool = False,
        ops: Mapping[str, OpsHandler] | None = None,
    ) -> None:
        self.app = app
        self.max_body = int(max_body)
        self.body_limits = dict(body_limits or {})
        self.memory = memory_limit(mb=memory_mb) if memory_mb else None
        self.limiter = _make_limiter(rate_limit, rate_store)
        self.rate_key = _key_function(rate_key)
        self.max_in_flight = max_in_flight
        self.deadline = deadline
        self.metrics = _metrics_or_none(metrics)
        self.retry_after = int(retry_after)
        self.drain_timeout = drain_timeout
        self.shutdown_delay = shutdown_delay
        self.health = health
        self.exempt = frozenset(exempt)
        self.log_requests = log_requests
        self.ops = dict(ops or {})
        self.in_flight = 0
        self.draining = False
        self.stopping = False
        self.started = False
        self._drained: asyncio.Future[None] | None = None
        self._deadlines = _Deadlines(deadline) if deadline else None
        self._route_limits: list[tuple[Any, int]] | None = None
        self._rl_async = False
        if self.limiter is not None:
            from ..ratelimit import RedisStore
            from ..ratelimit import headers as rl_headers

            self._rl_headers: Callable[[Any], Mapping[str, str]] = rl_headers
            self._rl_async = isinstance(getattr(self.limiter, "store", None), RedisStore)

    # -- lifecycle ---------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> bool:
        """Fail readiness, refuse new requests, wait for the in-flight ones
        (up to ``timeout``, default ``drain_timeout``).  True when drained."""
        self._set_draining()
        if self.in_flight == 0:
            return True
        self._drained = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._drained),
                                   self.drain_timeout if timeout is None else timeout)
        except asyncio.TimeoutError:
            _log.warning("drain timed out with %d request(s) in flight", self.in_flight)
            return False
        return True

    def _set_draining(self) -> None:
        self.draining = True
        if self.health is not None and hasattr(self.health, "set_draining"):
            self.health.set_draining(True)

    def _hook_sigterm(self) -> None:
        """SIGTERM first fails readiness; the server's own handler runs
        ``shutdown_delay`` seconds later (the load balancer stops sending)."""
        if self.shutdown_delay <= 0:
            return
        try:
            original = signal.getsignal(signal.SIGTERM)
        except ValueError:
            return
        if not callable(original):
            return
        loop = asyncio.get_running_loop()

        def on_sigterm(sig: int, frame: Any) -> None:
            if self.stopping:
                original(sig, frame)
                return
            # Readiness fails now; requests are still served until the server
            # stops accepting, shutdown_delay seconds later.
            self.stopping = True
            if self.health is not None and hasattr(self.health, "set_draining"):
                self.health.set_draining(True)
            loop.call_soon_threadsafe(loop.call_later, self.shutdown_delay, original, sig, frame)

        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGTERM, on_sigterm)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.drain()
            return message

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.started = True
                self._hook_sigterm()
                if self.health is not None and hasattr(self.health, "mark_started"):
                    self.health.mark_started()
            await send(message)

        await self.app(scope, lifespan_receive, lifespan_send)

    # -- per request -------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        # One pass over the headers for everything the middleware reads.
        given = declared = None
        chunked = False
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                given = value
            elif key == b"content-length":
                declared = value
            elif key == b"transfer-encoding":
                chunked = True
        if given is not None and _VALID_REQUEST_ID.fullmatch(given):
            rid = given.decode("ascii")
        else:
            rid = _new_request_id()
        token = _REQUEST_ID.set(rid)
        try:
            await self._http(scope, receive, send, rid, declared, chunked)
        finally:
            _REQUEST_ID.reset(token)

    def _body_limit(self, scope: Scope) -> int:
        if self._route_limits is None:
            self._route_limits = _resolve_route_limits(scope.get("app"), self.body_limits)
        for route, limit in self._route_limits:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return limit
        return self.max_body

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, rid: str,
        declared: bytes | None, chunked: bool,
    ) -> None:
        extra: list[tuple[bytes, bytes]] = [(b"x-request-id", rid.encode())]
        exchange = _Exchange(send, extra)
        path = scope["path"]
        if path in self.exempt:
            op = self.ops.get(path)
            if op is not None and scope["method"] in ("GET", "HEAD"):
                try:
                    status, body, ctype = await op(scope)
                except Exception as exc:  # noqa: BLE001 - a failing collector or check
                    await self._answer_exception(scope, exc, exchange)
                    return
                if scope["method"] == "HEAD":
                    extra.append((b"content-length", str(len(body)).encode()))
                    await exchange.respond(status, b"", ctype, length=False)
                else:
                    await exchange.respond(status, body, ctype)
            else:
                await self.app(scope, receive, exchange)
            return
        if self.draining:
            await self._refuse(exchange, scope, "server.draining", connection_close=True)
            return
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            await self._refuse(exchange, scope, "server.overloaded",
                               detail=f"more than {self.max_in_flight} requests in flight")
            return
        limiter = self.limiter
        if limiter is not None:
            try:
                key = self.rate_key(scope)
                # A local store decides in one native call: no coroutine for it.
                decision = await limiter.acheck(key) if self._rl_async else limiter.check(key)
            except Exception as exc:  # noqa: BLE001 - a failing key function or store: problem+json
                await self._answer_exception(scope, exc, exchange)
                return
            extra.extend([(k.lower().encode(), v.encode())
                          for k, v in self._rl_headers(decision).items()])
            if not decision.allowed:
                await self._refuse(exchange, scope, "ratelimit.exceeded",
                                   extra={"retry_after": math.ceil(decision.retry_after)})
                return
        # Route caps are looked up only when a body is coming (a route match each).
        has_body = chunked or (declared is not None and declared != b"0")
        limit = self._body_limit(scope) if has_body else self.max_body
        if limit and declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(
                exchange, scope, "input.too_large", connection_close=True,
                detail=f"declared body of {int(declared)} bytes exceeds the limit of {limit}",
                extra={"limit": limit, "declared": int(declared)},
            )
            return
        # No body coming: the app gets the server's receive as it is.
        counter = _BodyCounter(receive, limit, exchange) if has_body else None
        app_receive: Receive = counter if counter is not None else receive
        self.in_flight += 1
        m = self.metrics
        start = 0.0
        if m is not None:
            m.in_flight_child(_method_label(scope)).inc()
            start = time.perf_counter()
        deadlines = self._deadlines
        task = asyncio.current_task() if deadlines is not None else None
        try:
            with self.memory if self.memory is not None else _NO_SCOPE:
                if task is None:
                    await self.app(scope, app_receive, exchange)
                else:
                    assert deadlines is not None
                    deadlines.add(task)
                    try:
                        await self.app(scope, app_receive, exchange)
                    except asyncio.CancelledError:
                        if not deadlines.expired(task):
                            raise
                        uncancel = getattr(task, "uncancel", None)
                        if uncancel is not None:
                            uncancel()
                        raise _Deadline from None
                    finally:
                        deadlines.remove(task)
        except _Deadline:
            if counter is not None and counter.over:  # cut first: that is the answer
                await self._answer_too_large(scope, counter, exchange)
                return
            self._count_error("deadline.exceeded")
            if not exchange.started:
                await exchange.problem(504, problem_body(
                    "deadline.exceeded", request_id=rid, instance=path,
                    detail=f"the request took longer than {self.deadline} s",
                    extra={"deadline": self.deadline},
                ))
        except Exception as exc:
            if counter is not None and counter.over:
                await self._answer_too_large(scope, counter, exchange)
            elif exchange.started:
                _log.error("error after the response started", exc_info=exc)
                raise
            else:
                await self._answer_exception(scope, exc, exchange)
        else:
            if counter is not None and counter.over:
                await self._answer_too_large(scope, counter, exchange)
        finally:
            self.in_flight -= 1
            drained = self._drained
            if self.in_flight == 0 and drained is not None and not drained.done():
                drained.set_result(None)
            if m is not None:
                m.observe(scope, exchange.status or 500, time.perf_counter() - start,
                          counter.total if counter is not None else 0)
            if self.log_requests:
                _log.info("%s %s -> %d", scope["method"], path, exchange.status)

    async def _answer_too_large(
        self, scope: Scope, counter: _BodyCounter, exchange: _Exchange
    ) -> None:
        # The app saw a disconnect; whatever it tried to send is not a reply.
        self._count_error("input.too_large")
        if exchange.started:
            return
        exchange.extra.append((b"connection", b"close"))
        await exchange.problem(413, problem_body(
            "input.too_large", request_id=_REQUEST_ID.get(), instance=scope["path"],
            detail=f"request body exceeds the limit of {counter.limit} bytes",
            extra={"limit": counter.limit, "received": counter.total},
        ))

    async def _answer_exception(self, scope: Scope, exc: Exception, exchange: _Exchange) -> None:
        if isinstance(exc, AmuletError):
            body = problem_body(exc, request_id=_REQUEST_ID.get(), instance=scope["path"])
            _log.info("request failed: %s", exc)
        elif isinstance(exc, ClientDisconnect):
            return  # nobody to answer
        else:
            body = problem_body(exc, request_id=_REQUEST_ID.get(), instance=scope["path"])
            _log.error("unhandled exception in %s %s", scope["method"], scope["path"],
                       exc_info=exc)
        self._count_error(body["code"])
        await exchange.problem(body["status"], body, _retry_after_header(exc))

    async def _refuse(
        self,
        exchange: _Exchange,
        scope: Scope,
        code: str,
        *,
        detail: str | None = None,
        extra: dict[str, Any] | None = None,
        connection_close: bool = False,
    ) -> None:
        headers: list[tuple[bytes, bytes]] = []
        status = http_status_for(code)
        if status in (429, 503) and not any(k == b"retry-after" for k, _ in exchange.extra):
            retry = (extra or {}).get("retry_after", self.retry_after)
            headers.append((b"retry-after", str(max(1, int(retry))).encode()))
        if connection_close:
            headers.append((b"connection", b"close"))
        self._count_error(code)
        body = problem_body(code, request_id=_REQUEST_ID.get(), instance=scope["path"],
                            detail=detail, extra=extra)
        await exchange.problem(status, body, headers)
        if self.metrics is not None:
            self.metrics.requests.labels(_method_label(scope), "<refused>", str(status)).inc()

    def _count_error(self, code: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(code).inc()


def _retry_after_header(exc: BaseException) -> list[tuple[bytes, bytes]]:
    retry = getattr(exc, "retry_after", None)
    if retry is None and isinstance(exc, AmuletError):
        retry = exc.context.get("retry_after")
    if isinstance(retry, (int, float)) and retry > 0:
        return [(b"retry-after", str(math.ceil(retry)).encode())]
    return []


def _resolve_route_limits(app: Any, explicit: Mapping[str, int]) -> list[tuple[Any, int]]:
    """(route, body cap) for routes with an explicit cap (by path template) and
    for routes whose ImageUpload allows more than the global cap."""
    out: list[tuple[Any, int]] = []
    routes = getattr(getattr(app, "router", None), "routes", None) or []
    for route in routes:
        path = getattr(route, "path", None)
        if isinstance(path, str) and path in explicit:
            out.append((route, int(explicit[path])))
            continue
        uploads = list(_image_uploads(route))
        if uploads:
            out.append((route, max(u.body_cap for u in uploads)))
    return out


def _image_uploads(route: Any) -> Iterable[ImageUpload]:
    dependant = getattr(route, "dependant", None)
    stack = [dependant] if dependant is not None else []
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, ImageUpload):
            yield dep.call
        stack.extend(dep.dependencies)


# ---- exception handlers, ops routes, OpenAPI ------------------------------------


def _problem_response(
    request: Request, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(body, status_code=body["status"], headers=dict(headers or {}),
                        media_type=PROBLEM_JSON)


async def _amulet_error_handler(request: Request, exc: Exception) -> Response:
    body = problem_body(exc, request_id=_REQUEST_ID.get(), instance=request.url.path)
    _log.info("request failed: %s", exc)
    _count_error_for(request, body["code"])
    retry = {k.decode(): v.decode() for k, v in _retry_after_header(exc)}
    return _problem_response(request, body, retry)


async def _http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    body = problem_body(f"http.{exc.status_code}", request_id=_REQUEST_ID.get(),
                        instance=request.url.path, status=exc.status_code, detail=detail)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return _problem_response(request, body, exc.headers)


async def _validation_error_handler(request: Request, exc: Exception) -> Response:
    errors = []
    for err in getattr(exc, "errors", list)():
        errors.append({
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        })
    body = problem_body("request.validation", request_id=_REQUEST_ID.get(),
                        instance=request.url.path,
                        detail=f"{len(errors)} invalid field(s)", extra={"errors": errors})
    _count_error_for(request, "request.validation")
    return _problem_response(request, body)


def _count_error_for(request: Request, code: str) -> None:
    m = getattr(request.app.state, "amulet_metrics", None)
    if m is not None:
        m.errors.labels(code).inc()


class _BasicHealth:
    """Readiness when amulet_native.health is not available: started and not
    draining."""

    def __init__(self) -> None:
        self.draining = False
        self.started = False

    def set_draining(self, value: bool) -> None:
        self.draining = value

    def mark_started(self) -> None:
        self.started = True


def _make_health(health: Any) -> Any:
    if health is not None and health is not True:
        return health
    try:
        from ..health import HealthMonitor
    except ImportError:
        return _BasicHealth()
    return HealthMonitor()


HEALTH_JSON = "application/health+json"


OpsHandler = Callable[[Scope], Awaitable[tuple[int, bytes, str]]]


def _ops_endpoints(health: Any, registry: Any, metrics_on: bool) -> dict[str, OpsHandler]:
    """The operational endpoints, answered by the middleware itself: no
    routing, no rate limit, no shedding, out of the OpenAPI schema, and the
    app's own routes are not slowed down by five more to match against."""

    def health_json(body: Mapping[str, Any], status: int) -> tuple[int, bytes, str]:
        return status, json.dumps(body, separators=(",", ":")).encode(), HEALTH_JSON

    def endpoint(kind: str, verbose: bool) -> OpsHandler:
        async def report(scope: Scope) -> tuple[int, bytes, str]:
            if isinstance(health, _BasicHealth):
                ok = {"live": True, "ready": health.started and not health.draining,
                      "startup": health.started, "all": not health.draining}[kind]
                body: dict[str, Any] = {"status": "pass" if ok else "fail"}
                if health.draining:
                    body["notes"] = ["draining"]
                return health_json(body, 200 if ok else 503)
            rep = await health.report(kind=kind, verbose=verbose)
            return health_json(rep.to_json(), rep.http_status)

        return report

    ops = {
        "/livez": endpoint("live", False),
        "/readyz": endpoint("ready", False),
        "/startupz": endpoint("startup", False),
        "/health": endpoint("all", True),
    }
    if metrics_on:
        from .. import metrics as m

        reg = m.REGISTRY if registry is None or registry is True else registry

        async def metrics_endpoint(scope: Scope) -> tuple[int, bytes, str]:
            accept = _header(scope, b"accept")
            body, ctype = m.exposition(accept.decode("latin-1") if accept else None, reg)
            return 200, body, ctype

        ops["/metrics"] = metrics_endpoint
    return ops


_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details (application/problem+json)",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "code": {"type": "string", "description": "stable error code"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def _document_problems(app: Any, statuses: set[int]) -> None:
    """Wrap app.openapi so every operation lists its problem responses."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None and app.openapi_schema.get("x-amulet-problems"):
            return app.openapi_schema  # type: ignore[no-any-return]
        schema: dict[str, Any] = original()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = _PROBLEM_SCHEMA
        uploads = {getattr(r, "path", None): bool(list(_image_uploads(r)))
                   for r in app.router.routes}
        ref = {"$ref": "#/components/schemas/Problem"}
        for path, ops in schema.get("paths", {}).items():
            for op in ops.values():
                if not isinstance(op, dict) or "responses" not in op:
                    continue
                codes = set(statuses)
                if uploads.get(path):
                    codes |= {413, 415, 422}
                if "requestBody" in op or op.get("parameters"):
                    codes.add(422)
                for status in sorted(codes):
                    entry = op["responses"].setdefault(str(status), {})
                    entry.setdefault("description", _problem_title(status))
                    entry["content"] = {PROBLEM_JSON: {"schema": ref}}
        schema["x-amulet-problems"] = True
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _problem_title(status: int) -> str:
    from ._problem import _HTTP_TITLES

    return _HTTP_TITLES.get(status, "Error")


def install(
    app: Any,
    *,
    max_body: int = 10 * _MIB,
    body_limits: Mapping[str, int] | None = None,
    memory_mb: float | None = None,
    rate_limit: Any = None,
    rate_key: str | KeyFunc = "ip",
    rate_store: Any = None,
    max_in_flight: int | None = None,
    deadline: float | None = None,
    health: Any = True,
    metrics: Any = True,
    image_cache: ImageCache | None = None,
    drain_timeout: float = 30.0,
    shutdown_delay: float = 0.0,
    log_requests: bool = False,
) -> None:
    """One call: the middleware, the problem+json exception handlers, the
    routes ``/livez`` ``/readyz`` ``/startupz`` ``/health`` (health+json) and
    ``/metrics`` (Prometheus text or OpenMetrics by Accept), and the problem
    responses in the OpenAPI schema of every route.

    ``health``: a ``health.HealthMonitor`` (True: a new one).  ``metrics``:
    True (the default registry), a registry, or False.  ``image_cache``: the
    ImageCache ``ImageUpload(cache=None)`` uses.  The other options are
    :class:`AmuletMiddleware`'s.
    """
    _install_record_factory()
    monitor = _make_health(health)
    app.state.amulet_health = monitor
    app.state.amulet_image_cache = image_cache
    app.state.amulet_metrics = _metrics_or_none(metrics)
    metrics_on = app.state.amulet_metrics is not None
    app.add_middleware(
        AmuletMiddleware, max_body=max_body, body_limits=body_limits, memory_mb=memory_mb,
        rate_limit=rate_limit, rate_key=rate_key, rate_store=rate_store,
        max_in_flight=max_in_flight, deadline=deadline, metrics=metrics,
        drain_timeout=drain_timeout, shutdown_delay=shutdown_delay, health=monitor,
        log_requests=log_requests,
        ops=_ops_endpoints(monitor, None if metrics is True else metrics, metrics_on),
    )
    app.add_exception_handler(AmuletError, _amulet_error_handler)
    app.add_exception_handler(HTTPException, _http_exception_handler)
    try:
        from fastapi.exceptions import RequestValidationError
    except ImportError:
        pass
    else:
        app.add_exception_handler(RequestValidationError, _validation_error_handler)
    if hasattr(app, "openapi") and hasattr(app, "openapi_schema"):
        statuses = {500}
        if max_body:
            statuses.add(413)
        if memory_mb:
            statuses.add(507)
        if rate_limit is not None:
            statuses.add(429)
        statuses.add(503)  # load shedding and draining
        if deadline is not None:
            statuses.add(504)
        _document_problems(app, statuses)
