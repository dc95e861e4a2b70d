"""amulet_native: native building blocks for Python image web services."""

from ._core import LIBJPEG_VERSION, LIBPNG_VERSION
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

__version__ = "0.1.0"

__all__ = [
    "available_cpus",
    "decode_many",
    "LIBJPEG_VERSION",
    "LIBPNG_VERSION",
    "AmuletError",
    "AmuletWarning",
    "DecodeError",
    "ImageInfo",
    "ImageTooLargeError",
    "Limits",
    "MemoryLimitError",
    "Mode",
    "ModelError",
    "NetworkError",
    "ProcessingError",
    "SecurityError",
    "UnsupportedFormatError",
    "ValidationError",
    "decode",
    "decode_file",
    "decode_jpeg",
    "decode_png",
    "encode_jpeg",
    "encode_png",
    "get_default_limits",
    "probe",
    "set_default_limits",
]
