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
from .incremental import IncrementalDecoder
from .transform import resize, thumbnail

__version__ = "0.1.0"

__all__ = [
    "LIBJPEG_VERSION",
    "LIBPNG_VERSION",
    "AmuletError",
    "AmuletWarning",
    "DecodeError",
    "ImageInfo",
    "ImageTooLargeError",
    "IncrementalDecoder",
    "Limits",
    "MemoryLimitError",
    "Mode",
    "ModelError",
    "NetworkError",
    "ProcessingError",
    "SecurityError",
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
    "probe",
    "resize",
    "set_default_limits",
    "thumbnail",
]
