"""The amulet_native exception hierarchy.

Every error the library raises is an :class:`AmuletError` with a stable string
``code`` (e.g. ``"decode.truncated"``; safe to match on, log and return in HTTP
bodies) and a ``context`` dict with the details a handler needs (format, limit,
actual value, the codec's message).  The C core raises these classes from one
table, listed by ``amulet_native._core.error_table()``.

    AmuletError
    ├── ValidationError (also ValueError)  .field
    │   └── UnsupportedFormatError         .format
    ├── ModelError
    ├── ProcessingError                    .stage
    │   └── DecodeError
    ├── NetworkError
    ├── SecurityError                      .severity
    │   └── ImageTooLargeError             .limit_name, .actual, .limit
    ├── MemoryLimitError (also MemoryError) .requested, .limit, .in_use
    └── QueueClosed                        (ThreadSafeQueue.close() was called)

All of them pickle (``context`` travels with them) so they cross process pools.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AmuletError",
    "AmuletWarning",
    "DecodeError",
    "ImageTooLargeError",
    "MemoryLimitError",
    "ModelError",
    "NetworkError",
    "ProcessingError",
    "QueueClosed",
    "SecurityError",
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


class AmuletWarning(UserWarning):
    """Emitted when a tolerant operation (``strict=False``) had to skip damage."""


class QueueClosed(AmuletError):
    """A ``ThreadSafeQueue`` was closed: ``put`` after ``close()``, or ``get`` once
    the closed queue is drained.  Waiting producers and consumers get it too."""

    default_code = "queue.closed"
