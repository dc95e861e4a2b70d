"""amulet_native: native building blocks for Python image web services."""

from ._core import LIBJPEG_VERSION, LIBPNG_VERSION
from .b64 import b64decode, b64encode, decode_base64, encode_base64
from .batch import available_cpus, decode_many
from .encode import encode_jpeg, encode_png
from .errors import (
    AmuletError,
    AmuletWarning,
    DecodeError,
    ImageTooLargeError,
    MemoryLimitError,
    ModelError,
    NetworkError,
    ProcessingError,
    SecurityError,
    SerializationError,
    UnsupportedFormatError,
    ValidationError,
)
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
from .tiered import AsyncTieredCache, TieredCache
from .transform import resize, thumbnail

__version__ = "0.1.0"

__all__ = [
    "LIBJPEG_VERSION",
    "LIBPNG_VERSION",
    "AmuletError",
    "AmuletWarning",
    "AsyncTieredCache",
    "DecodeError",
    "GarbageCollectionManager",
    "ImageInfo",
    "ImageTooLargeError",
    "Limits",
    "MemoryLimitError",
    "MemoryMonitor",
    "MemorySnapshot",
    "MemoryUsage",
    "Mode",
    "ModelError",
    "NetworkError",
    "PressureLevel",
    "ProcessingError",
    "SecurityError",
    "SerializationError",
    "TieredCache",
    "UnsupportedFormatError",
    "ValidationError",
    "available_cpus",
    "b64decode",
    "b64encode",
    "decode",
    "decode_base64",
    "decode_file",
    "decode_jpeg",
    "decode_many",
    "decode_png",
    "encode_base64",
    "encode_jpeg",
    "encode_png",
    "get_default_limits",
    "get_process_memory_limit",
    "memory_efficient_operation",
    "memory_limit",
    "memory_limit_context",
    "probe",
    "resize",
    "set_default_limits",
    "set_process_memory_limit",
    "thumbnail",
]
