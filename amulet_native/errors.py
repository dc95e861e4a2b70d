"""The amulet_native exception hierarchy.

Every error the library raises is an :class:`AmuletError` with a stable string
``code`` (e.g. ``"decode.truncated"``; safe to match on, log and return in HTTP
bodies) and a ``context`` dict with the details a handler needs (format, limit,
actual value, the codec's message).  The C core raises these classes from one
table, listed by ``amulet_native._core.error_table()``.

    AmuletError                              .code, .context
    ├── ValidationError (also ValueError)    .field
    │   ├── UnsupportedFormatError           .format
    │   ├── PayloadTooLargeError             .limit, .received, http_status 413
    │   └── SerializationError (also TypeError) .type_name
    ├── ModelError
    ├── ProcessingError                      .stage
    │   └── DecodeError
    ├── NetworkError
    ├── SecurityError                        .severity
    │   └── ImageTooLargeError               .limit_name, .actual, .limit
    ├── MemoryLimitError (also MemoryError)  .requested, .limit, .in_use
    ├── ReentrantCallError (also RuntimeError) .function
    ├── LockTimeoutError (also TimeoutError) .name, .timeout
    ├── DeadlockError (also RuntimeError)    .name, .cycle
    ├── LockReleaseError (also RuntimeError) .name
    ├── PoolTimeoutError (also TimeoutError) .timeout, .max_size
    ├── PoolClosedError (also RuntimeError)
    ├── QueueClosed                          (ThreadSafeQueue.close() was called)
    ├── MissingDependencyError (also ImportError) .module (= .name), .extra
    ├── ArenaError                           .path (the shared arena file)
    │   └── ArenaFullError
    ├── CircuitOpenError                     .name, .retry_after, .state
    ├── BulkheadFullError                    .name, .max_concurrent, .max_wait
    ├── OperationTimeoutError (also TimeoutError) .seconds, .operation
    └── RateLimitExceeded                    .decision, .retry_after, http_status 429

    AmuletWarning (a UserWarning)
    ├── CacheCallbackWarning
    └── ResilienceWarning

All of them pickle (``context`` travels with them) so they cross process pools.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AmuletError",
    "AmuletWarning",
    "ArenaError",
    "ArenaFullError",
    # resilience
    "BulkheadFullError",
    "CacheCallbackWarning",
    "CircuitOpenError",
    "DeadlockError",
    "DecodeError",
    "ImageTooLargeError",
    "LockReleaseError",
    "LockTimeoutError",
    "MemoryLimitError",
    "ModelError",
    "NetworkError",
    "OperationTimeoutError",
    "PayloadTooLargeError",
    "PoolClosedError",
    "PoolTimeoutError",
    "ProcessingError",
    "QueueClosed",
    "RateLimitExceeded",
    "ReentrantCallError",
    "ResilienceWarning",
    "SecurityError",
    "SerializationError",
    "UnsupportedFormatError",
    "ValidationError",
]


def _rebuild(
    cls: type[AmuletError], message: str, code: str, context: dict[str, Any]
) -> AmuletError:
    return cls(message, code=code, context=context)


class AmuletError(Exception):
    """Base class: ``.code`` is a stable identifier, ``.context`` a dict of details."""

    default_code = "error"
    #: keyword arguments accepted by the constructor and stored in ``context``
    _context_fields: tuple[str, ...] = ()

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        context: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        unknown = set(fields) - set(self._all_fields())
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected fields {sorted(unknown)}")
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.context: dict[str, Any] = dict(context or {})
        for key, value in fields.items():
            if value is not None:
                self.context[key] = value

    @classmethod
    def _all_fields(cls) -> tuple[str, ...]:
        out: list[str] = []
        for klass in cls.__mro__:
            out.extend(getattr(klass, "_context_fields", ()))
        return tuple(out)

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]" if self.message else f"[{self.code}]"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.code, self.context))


class ValidationError(AmuletError, ValueError):
    """The caller's input or arguments are invalid (HTTP 4xx territory)."""

    default_code = "validation"
    _context_fields: tuple[str, ...] = ("field",)

    @property
    def field(self) -> str | None:
        """Name of the offending argument or input field, when known."""
        return self.context.get("field")


class UnsupportedFormatError(ValidationError):
    """The data is not a supported image (detected by magic bytes, never by name)."""

    default_code = "format.unsupported"
    _context_fields: tuple[str, ...] = ("format",)

    @property
    def format(self) -> str:
        """Detected format: "gif", "webp", "tiff", "heic", "bmp", ... or "unknown"."""
        return str(self.context.get("format", "unknown"))


class ModelError(AmuletError):
    """A model failed to load or run."""

    default_code = "model"


class ProcessingError(AmuletError):
    """Processing of otherwise valid input failed."""

    default_code = "processing"
    _context_fields: tuple[str, ...] = ("stage",)

    @property
    def stage(self) -> str | None:
        """Pipeline stage that failed (e.g. "decode")."""
        return self.context.get("stage")


class DecodeError(ProcessingError):
    """Corrupt or truncated image data."""

    default_code = "decode.corrupt"


class NetworkError(AmuletError):
    """A network peer (Redis, an HTTP service) failed."""

    default_code = "network"


class SecurityError(AmuletError):
    """Input refused because it could harm the service."""

    default_code = "security"
    _context_fields: tuple[str, ...] = ("severity",)

    @property
    def severity(self) -> str:
        """"low", "medium" or "high" (default)."""
        return str(self.context.get("severity", "high"))


class ImageTooLargeError(SecurityError):
    """Input over a configured limit (bytes, pixels, width, height, JPEG scans)."""

    default_code = "limits"
    _context_fields: tuple[str, ...] = ("limit_name", "actual", "limit")

    @property
    def limit_name(self) -> str | None:
        return self.context.get("limit_name")

    @property
    def actual(self) -> int | None:
        return self.context.get("actual")

    @property
    def limit(self) -> int | None:
        return self.context.get("limit")


class MemoryLimitError(AmuletError, MemoryError):
    """An allocation was refused by a memory budget (or failed outright)."""

    default_code = "memory.limit"
    _context_fields: tuple[str, ...] = ("requested", "limit", "in_use")

    @property
    def requested(self) -> int | None:
        return self.context.get("requested")

    @property
    def limit(self) -> int | None:
        return self.context.get("limit")

    @property
    def in_use(self) -> int | None:
        return self.context.get("in_use")


class SerializationError(ValidationError, TypeError):
    """A cache key or value of a type that cannot be stored without an explicit
    serializer (codes ``"serialize.key_type"``, ``"serialize.value_type"``,
    ``"serialize.dtype"``, ``"serialize.ndim"``, ``"serialize.key_depth"``)."""

    default_code = "serialize.value_type"
    _context_fields: tuple[str, ...] = ("type_name",)

    @property
    def type_name(self) -> str | None:
        """Name of the refused type (or dtype)."""
        return self.context.get("type_name")


class PayloadTooLargeError(ValidationError):
    """An upload or stream sent more than the configured number of bytes.

    Raised as soon as the first byte past ``limit`` arrives (nothing beyond it is
    buffered); ``received`` is how many bytes had been read by then (0 when a
    declared size was already too large).  Web handlers answer ``http_status``.
    """

    default_code = "input.too_large"
    http_status = 413
    _context_fields: tuple[str, ...] = ("limit", "received")

    @property
    def limit(self) -> int | None:
        return self.context.get("limit")

    @property
    def received(self) -> int | None:
        return self.context.get("received")


class LockTimeoutError(AmuletError, TimeoutError):
    """A named lock (LockManager) was not acquired within its timeout."""

    default_code = "lock.timeout"
    _context_fields: tuple[str, ...] = ("name", "timeout")

    @property
    def name(self) -> str | None:
        return self.context.get("name")

    @property
    def timeout(self) -> float | None:
        return self.context.get("timeout")


class DeadlockError(AmuletError, RuntimeError):
    """Waiting for a lock would close a cycle in the wait-for graph.

    ``cycle`` lists the wait-for edges as ``(owner, name)`` pairs: ``owner``
    (a thread id, or an asyncio task token) waits for ``name``, which is held
    by the next pair's owner; the last name is held by the first owner."""

    default_code = "lock.deadlock"
    _context_fields: tuple[str, ...] = ("name", "cycle")

    @property
    def name(self) -> str | None:
        return self.context.get("name")

    @property
    def cycle(self) -> list[tuple[int, str]]:
        return list(self.context.get("cycle", []))


class LockReleaseError(AmuletError, RuntimeError):
    """Release of a named lock the caller does not hold."""

    default_code = "lock.not_held"
    _context_fields: tuple[str, ...] = ("name",)

    @property
    def name(self) -> str | None:
        return self.context.get("name")


class PoolTimeoutError(AmuletError, TimeoutError):
    """No pooled object became available within the timeout."""

    default_code = "pool.timeout"
    _context_fields: tuple[str, ...] = ("timeout", "max_size")

    @property
    def timeout(self) -> float | None:
        return self.context.get("timeout")

    @property
    def max_size(self) -> int | None:
        return self.context.get("max_size")


class PoolClosedError(AmuletError, RuntimeError):
    """acquire() on a pool that was closed."""

    default_code = "pool.closed"


class AmuletWarning(UserWarning):
    """Emitted when a tolerant operation (``strict=False``) had to skip damage."""


class ReentrantCallError(AmuletError, RuntimeError):
    """A cached function called itself (same thread or task) for the key it is
    still computing: waiting for its own result would deadlock."""

    default_code = "cache.reentrant"
    _context_fields: tuple[str, ...] = ("function",)

    @property
    def function(self) -> str | None:
        """Qualified name of the cached function."""
        return self.context.get("function")


class CacheCallbackWarning(AmuletWarning):
    """A cache's ``on_evict`` callback raised; the cache itself is unaffected."""


class QueueClosed(AmuletError):
    """A ``ThreadSafeQueue`` was closed: ``put`` after ``close()``, or ``get`` once
    the closed queue is drained.  Waiting producers and consumers get it too."""

    default_code = "queue.closed"


class MissingDependencyError(AmuletError, ImportError):
    """An optional dependency is not installed; the message names the extra
    that installs it (``pip install 'amulet_native[redis]'``).  ``.name`` is the
    missing module, as on any ``ImportError``."""

    default_code = "dependency.missing"
    _context_fields: tuple[str, ...] = ("module", "extra")

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.name = self.context.get("module")

    @property
    def module(self) -> str | None:
        """The top-level module that is missing (also ``.name``)."""
        return self.context.get("module")

    @property
    def extra(self) -> str | None:
        """The extra that installs it: ``pip install 'amulet_native[<extra>]'``."""
        return self.context.get("extra")


__all__ += ["MissingDependencyError"]


class ArenaError(AmuletError):
    """The shared arena file is corrupt, foreign or of another version
    (``arena.corrupt``), or a record is absent / has another shape
    (``arena.mismatch``).  Never a crash: the file is checked before use."""

    default_code = "arena.corrupt"
    _context_fields: tuple[str, ...] = ("path",)

    @property
    def path(self) -> str | None:
        """The arena file, when known."""
        return self.context.get("path")


class ArenaFullError(ArenaError):
    """The shared arena has no free record, data unit or worker slot
    (``arena.full``); the refusal is counted in ``Arena.stats()["overflow"]``."""

    default_code = "arena.full"
# ---- resilience (amulet_native.resilience) --------------------------------------------


class CircuitOpenError(AmuletError):
    """A circuit breaker refused the call without making it: the dependency is
    failing (OPEN), being probed (HALF_OPEN, no trial permit left) or was
    forced open.  ``retry_after`` says when a trial call will be let through
    (seconds; ``None`` when forced open)."""

    default_code = "circuit.open"
    _context_fields: tuple[str, ...] = ("name", "retry_after", "state")

    @property
    def name(self) -> str | None:
        return self.context.get("name")

    @property
    def retry_after(self) -> float | None:
        return self.context.get("retry_after")

    @property
    def state(self) -> str | None:
        return self.context.get("state")


class BulkheadFullError(AmuletError):
    """A bulkhead had no free slot within ``max_wait``."""

    default_code = "bulkhead.full"
    _context_fields: tuple[str, ...] = ("name", "max_concurrent", "max_wait")

    @property
    def name(self) -> str | None:
        return self.context.get("name")

    @property
    def max_concurrent(self) -> int | None:
        return self.context.get("max_concurrent")

    @property
    def max_wait(self) -> float | None:
        return self.context.get("max_wait")


class OperationTimeoutError(AmuletError, TimeoutError):
    """An operation run under ``resilience.timeout(seconds)`` took longer and was
    cancelled."""

    default_code = "timeout"
    _context_fields: tuple[str, ...] = ("seconds", "operation")

    @property
    def seconds(self) -> float | None:
        return self.context.get("seconds")

    @property
    def operation(self) -> str | None:
        return self.context.get("operation")


class ResilienceWarning(AmuletWarning):
    """A breaker listener or a retry hook raised; the breaker and the retry
    loop are unaffected."""


def _rebuild_exceeded(
    cls: type[RateLimitExceeded],
    message: str,
    code: str,
    context: dict[str, Any],
    decision: Any,
) -> RateLimitExceeded:
    return cls(message, code=code, context=context, decision=decision)


class RateLimitExceeded(AmuletError):
    """A rate limit refused the request (HTTP 429).  ``decision`` is the
    ratelimit.Decision (retry_after, remaining, the deciding policy); the
    context holds its numbers and the policy name."""

    default_code = "ratelimit.exceeded"
    http_status = 429
    _context_fields: tuple[str, ...] = ("policy", "limit", "remaining", "retry_after")

    def __init__(
        self,
        message: str = "",
        *,
        decision: Any = None,
        code: str | None = None,
        context: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message, code=code, context=context, **fields)
        self.decision = decision
        if decision is not None:
            self.context.setdefault("policy", decision.policy.name)
            self.context.setdefault("limit", decision.limit)
            self.context.setdefault("remaining", decision.remaining)
            self.context.setdefault("retry_after", decision.retry_after)

    @property
    def retry_after(self) -> float | None:
        """Seconds until the refused request would be admitted."""
        return self.context.get("retry_after")

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_exceeded,
            (type(self), self.message, self.code, self.context, self.decision),
        )
