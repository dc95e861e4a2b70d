"""amulet_native: native building blocks for Python image web services.

For whoever runs an image service in Python (a FastAPI upload API, a Streamlit
front end, a model behind them): a C core that turns untrusted upload bytes into
NumPy arrays fast and safely, native caches and thread-safe structures, memory
budgets, and the operational layer such services rebuild by hand.  Every error
is an :class:`AmuletError` with a stable ``.code`` and a ``.context`` dict.

Domains and their main entry points (all importable from ``amulet_native``
unless a module is named):

* Images: ``probe``, ``decode`` (``decode_file``, ``decode_jpeg``,
  ``decode_png``), ``Limits``, ``decode_many`` (native threads),
  ``IncrementalDecoder``, ``thumbnail``, ``resize``, ``encode_jpeg``,
  ``encode_png``, ``encode_base64``/``decode_base64``; ``features()``.
* Caches: ``Cache`` (LRU + TTL + byte budget), the ``@cached`` decorator
  (single-flight, a drop-in for ``functools.lru_cache``), ``ImageCache``
  (decoded images by content digest, zero copy), ``TieredCache`` /
  ``AsyncTieredCache`` (Redis second tier, extra ``[redis]``).
* Thread-safe structures: ``AtomicCounter``, ``ThreadSafeDict``,
  ``ThreadSafeQueue`` (a drop-in ``queue.Queue`` with asyncio methods),
  ``LockManager``, ``ObjectPool`` / ``AsyncObjectPool``.
* Memory and streaming: ``memory_limit`` (per-request budgets),
  ``MemoryMonitor`` (cgroup-aware pressure), ``GarbageCollectionManager``,
  ``read_limited`` / ``aread_limited``, ``open_mapped``, ``stream_file``.
* Resilience (``amulet_native.resilience``): ``retry``, ``CircuitBreaker``,
  ``Bulkhead``, ``timeout``; metrics (``amulet_native.metrics``, Prometheus
  compatible); rate limits (``amulet_native.ratelimit``); health checks
  (``amulet_native.health``).
* Integrations: ``amulet_native.integrations.fastapi`` (``AmuletMiddleware``,
  ``install``, ``ImageUpload``; extra ``[fastapi]``) and
  ``amulet_native.integrations.streamlit`` (extra ``[streamlit]``).

A missing optional dependency raises ``MissingDependencyError`` (an
``ImportError``) naming the extra to install.  ``python -m amulet_native``
prints the version, native libraries, formats, CPUs and memory limits;
``python -m amulet_native --selftest`` checks the install.  The README (with
the benchmark summary; full tables in benchmarks/RESULTS.md) and each module's
docstring (``help(amulet_native.cache)``, ...) are the documentation.

>>> import amulet_native as an
>>> rgb = an.decode(upload_bytes, max_size=(1024, 1024))   # (H, W, 3) uint8
"""

# resilience: retries with budgets, breakers, bulkheads, error context
from . import resilience
from ._core import LIBJPEG_VERSION, LIBPNG_VERSION
from .b64 import b64decode, b64encode, decode_base64, encode_base64
from .batch import available_cpus, decode_many
from .cache import Cache, ImageCache, cached
from .encode import encode_jpeg, encode_png, encode_webp
from .errors import (
    AmuletError,
    AmuletWarning,
    ArenaError,
    ArenaFullError,
    BulkheadFullError,
    CacheCallbackWarning,
    CircuitOpenError,
    DeadlockError,
    DecodeError,
    ImageTooLargeError,
    LockReleaseError,
    LockTimeoutError,
    MemoryLimitError,
    MissingDependencyError,
    ModelError,
    NetworkError,
    OperationTimeoutError,
    PayloadTooLargeError,
    PoolClosedError,
    PoolTimeoutError,
    ProcessingError,
    QueueClosed,
    RateLimitExceeded,
    ReentrantCallError,
    ResilienceWarning,
    SecurityError,
    SerializationError,
    UnsupportedFormatError,
    ValidationError,
)
from .features import features
from .image import (
    ImageInfo,
    Limits,
    Mode,
    decode,
    decode_file,
    decode_jpeg,
    decode_png,
    get_default_limits,
    probe,
    set_default_limits,
)
from .incremental import IncrementalDecoder
from .locks import LockManager, thread_safe_operation
from .memory import (
    GarbageCollectionManager,
    MemoryMonitor,
    MemorySnapshot,
    MemoryUsage,
    PressureLevel,
    get_process_memory_limit,
    memory_efficient_operation,
    memory_limit,
    memory_limit_context,
    set_process_memory_limit,
)
from .perceptual import hamming, image_descriptor, perceptual_hash
from .pool import AsyncObjectPool, ObjectPool, PoolState
from .resilience import (
    Bulkhead,
    CircuitBreaker,
    CircuitState,
    RedisBreakerStore,
    RetryBudget,
    RetryThrottle,
    backoff,
    breakers,
    error_context,
    error_stats,
    retry,
    retry_on_failure,
    retry_stats,
    retrying,
)
from .stream import (
    ChunkStream,
    LimitedRead,
    MappedFile,
    aread_limited,
    open_mapped,
    read_limited,
    stream_file,
)
from .sync import AtomicCounter, ThreadSafeDict, ThreadSafeQueue
from .tiered import AsyncTieredCache, TieredCache
from .transform import resize, thumbnail

__version__ = "0.1.0"

__all__ = [
    "LIBJPEG_VERSION",
    "LIBPNG_VERSION",
    "AmuletError",
    "AmuletWarning",
    "ArenaError",
    "ArenaFullError",
    "AsyncObjectPool",
    "AsyncTieredCache",
    "AtomicCounter",
    "Bulkhead",
    "BulkheadFullError",
    "Cache",
    "CacheCallbackWarning",
    "ChunkStream",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "DeadlockError",
    "DecodeError",
    "GarbageCollectionManager",
    "ImageCache",
    "ImageInfo",
    "ImageTooLargeError",
    "IncrementalDecoder",
    "LimitedRead",
    "Limits",
    "LockManager",
    "LockReleaseError",
    "LockTimeoutError",
    "MappedFile",
    "MemoryLimitError",
    "MemoryMonitor",
    "MemorySnapshot",
    "MemoryUsage",
    "MissingDependencyError",
    "Mode",
    "ModelError",
    "NetworkError",
    "ObjectPool",
    "OperationTimeoutError",
    "PayloadTooLargeError",
    "PoolClosedError",
    "PoolState",
    "PoolTimeoutError",
    "PressureLevel",
    "ProcessingError",
    "QueueClosed",
    "RateLimitExceeded",
    "RedisBreakerStore",
    "ReentrantCallError",
    "ResilienceWarning",
    "RetryBudget",
    "RetryThrottle",
    "SecurityError",
    "SerializationError",
    "ThreadSafeDict",
    "ThreadSafeQueue",
    "TieredCache",
    "UnsupportedFormatError",
    "ValidationError",
    "aread_limited",
    "available_cpus",
    "b64decode",
    "b64encode",
    "backoff",
    "breakers",
    "cached",
    "decode",
    "decode_base64",
    "decode_file",
    "decode_jpeg",
    "decode_many",
    "decode_png",
    "encode_base64",
    "encode_jpeg",
    "encode_png",
    "encode_webp",
    "error_context",
    "error_stats",
    "features",
    "get_default_limits",
    "get_process_memory_limit",
    # perceptual fingerprints (service branch)
    "hamming",
    "image_descriptor",
    "memory_efficient_operation",
    "memory_limit",
    "memory_limit_context",
    "open_mapped",
    "perceptual_hash",
    "probe",
    "read_limited",
    "resilience",
    "resize",
    "retry",
    "retry_on_failure",
    "retry_stats",
    "retrying",
    "set_default_limits",
    "set_process_memory_limit",
    "stream_file",
    "thread_safe_operation",
    "thumbnail",
]
