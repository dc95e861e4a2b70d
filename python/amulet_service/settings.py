"""Settings of the service, read from the environment and validated in one place.

Every variable has a default, so the service starts with none set.  A bad value
stops start-up with :class:`SettingsError`, whose message names the variable,
the value and what was expected::

    AMULET_CACHE_MAX_SIZE='lots': expected an integer in [1, 10000000]

The names of the original system are kept (``AMULET_CACHE_MAX_SIZE``,
``AMULET_CACHE_DEFAULT_TTL``, ``AMULET_IMAGE_CACHE_SIZE``,
``AMULET_MEMORY_WARNING_THRESHOLD``, ``AMULET_MEMORY_CRITICAL_THRESHOLD``,
``AMULET_THREAD_POOL_SIZE``, ``REDIS_URL``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A variable of the environment has a value the service cannot run with."""

    def __init__(self, variable: str, value: str, expected: str) -> None:
        super().__init__(f"{variable}={value!r}: expected {expected}")
        self.variable = variable
        self.value = value
        self.expected = expected


def _int(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            v = int(raw.strip().replace("_", ""))
        except ValueError:
            raise SettingsError(name, raw, f"an integer in [{lo}, {hi}]") from None
        if not lo <= v <= hi:
            raise SettingsError(name, raw, f"an integer in [{lo}, {hi}]")
        return v

    return parse


def _float(lo: float, hi: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            v = float(raw)
        except ValueError:
            raise SettingsError(name, raw, f"a number in [{lo}, {hi}]") from None
        if not lo <= v <= hi:  # also refuses nan
            raise SettingsError(name, raw, f"a number in [{lo}, {hi}]")
        return v

    return parse


def _fraction(name: str, raw: str) -> float:
    """0.85 or 85 (%)."""
    v = _float(0.0, 100.0)(name, raw)
    return v / 100.0 if v > 1.0 else v


def _bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(name, raw, "true or false")


def _redis_url(name: str, raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(name, raw, "a redis://, rediss:// or unix:// URL")
    return raw


def _text(name: str, raw: str) -> str:
    return raw


def _rate(name: str, raw: str) -> str | None:
    raw = raw.strip()
    if raw.lower() in ("", "none", "off"):
        return None
    count, _, period = raw.partition("/")
    if not count.isdigit() or period not in ("second", "minute", "hour", "day"):
        raise SettingsError(name, raw, 'a rate like "600/minute" or "off"')
    return raw


def _model(name: str, raw: str) -> str:
    if raw != "gallery" and not raw.endswith(".onnx"):
        raise SettingsError(name, raw, '"gallery" or the path of an .onnx file')
    return raw


_DEFAULT_DATA = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "amulet_service"


@dataclass(frozen=True)
class Settings:
    """The validated configuration (immutable; build it with :meth:`from_env`)."""

    # name in the environment -> parser, default
    cache_max_size: int = 10_000  # AMULET_CACHE_MAX_SIZE: results kept in L1
    cache_default_ttl: float = 3600.0  # AMULET_CACHE_DEFAULT_TTL: seconds
    image_cache_size: int = 256  # AMULET_IMAGE_CACHE_SIZE: MiB of decoded images
    memory_warning_threshold: float = 0.80  # AMULET_MEMORY_WARNING_THRESHOLD
    memory_critical_threshold: float = 0.92  # AMULET_MEMORY_CRITICAL_THRESHOLD
    thread_pool_size: int = 4  # AMULET_THREAD_POOL_SIZE: model threads per worker
    redis_url: str | None = None  # REDIS_URL
    max_upload_mb: int = 20  # AMULET_MAX_UPLOAD_MB
    request_memory_mb: int = 256  # AMULET_REQUEST_MEMORY_MB
    max_in_flight: int = 256  # AMULET_MAX_IN_FLIGHT (per worker)
    request_deadline: float = 30.0  # AMULET_REQUEST_DEADLINE: seconds
    rate_limit: str | None = None  # AMULET_RATE_LIMIT: "600/minute" or off
    # AMULET_BATCH_MAX_SIZE: 0 = auto: 8 for a model that gains from batches (ONNX),
    # 1 for the gallery recogniser (it scores image by image: a batch only
    # serialises work the batch threads would otherwise share)
    batch_max_size: int = 0
    batch_max_wait_ms: float = 0.0  # AMULET_BATCH_MAX_WAIT_MS (0: batch what is already queued)
    model_concurrency: int = 64  # AMULET_MODEL_CONCURRENCY: bulkhead size
    breaker_failures: int = 5  # AMULET_BREAKER_FAILURES: consecutive failures to open
    breaker_reset: float = 10.0  # AMULET_BREAKER_RESET: seconds open before a probe
    model: str = "gallery"  # AMULET_MODEL: "gallery" or an .onnx path
    model_labels: str = ""  # AMULET_MODEL_LABELS: comma-separated, for ONNX
    gallery_dir: str = str(_DEFAULT_DATA / "gallery")  # AMULET_GALLERY_DIR
    decode_max_side: int = 1024  # AMULET_DECODE_MAX_SIDE: uploads are decoded DCT-scaled
    log_requests: bool = False  # AMULET_LOG_REQUESTS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable; SettingsError names the first bad one."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = _VARIABLES[f.name]
            raw = env.get(var)
            if raw is not None:
                values[f.name] = _PARSERS[f.name](var, raw)
        settings = cls(**values)
        if settings.memory_warning_threshold >= settings.memory_critical_threshold:
            raise SettingsError(
                "AMULET_MEMORY_WARNING_THRESHOLD",
                str(settings.memory_warning_threshold),
                f"less than AMULET_MEMORY_CRITICAL_THRESHOLD "
                f"({settings.memory_critical_threshold})",
            )
        if settings.model.endswith(".onnx") and not settings.model_labels:
            raise SettingsError("AMULET_MODEL_LABELS", "", "the labels of the ONNX model")
        return settings


_VARIABLES = {
    "redis_url": "REDIS_URL",
    **{f.name: "AMULET_" + f.name.upper() for f in fields(Settings) if f.name != "redis_url"},
}

_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "cache_max_size": _int(1, 10_000_000),
    "cache_default_ttl": _float(1.0, 30 * 86400.0),
    "image_cache_size": _int(0, 1 << 20),
    "memory_warning_threshold": _fraction,
    "memory_critical_threshold": _fraction,
    "thread_pool_size": _int(1, 256),
    "redis_url": _redis_url,
    "max_upload_mb": _int(1, 1024),
    "request_memory_mb": _int(16, 1 << 16),
    "max_in_flight": _int(1, 100_000),
    "request_deadline": _float(0.1, 3600.0),
    "rate_limit": _rate,
    "batch_max_size": _int(0, 256),
    "batch_max_wait_ms": _float(0.0, 1000.0),
    "model_concurrency": _int(1, 100_000),
    "breaker_failures": _int(1, 1000),
    "breaker_reset": _float(0.1, 3600.0),
    "model": _model,
    "model_labels": _text,
    "gallery_dir": _text,
    "decode_max_side": _int(64, 16384),
    "log_requests": _bool,
}


def variable_of(field_name: str) -> str:
    """The environment variable of a settings field."""
    return _VARIABLES[field_name]
