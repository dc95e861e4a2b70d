"""Type stubs for the compiled amulet_native._core (see amulet_native.image)."""

from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import Self

LIBJPEG_VERSION: str
LIBPNG_VERSION: str

def probe(data: Any, /) -> tuple[str, int, int, int, int, bool, int]: ...
def decode(
    data: Any,
    mode: int,
    depth16: bool,
    scale_denom: int,
    max_w: int,
    max_h: int,
    orient: bool,
    strict: bool,
    expect_format: int,
    limits: tuple[int, int, int, int, int],
    out: npt.NDArray[Any] | None,
    /,
) -> npt.NDArray[np.uint8] | npt.NDArray[np.uint16]: ...
def default_limits() -> tuple[int, int, int, int, int]: ...
def error_table() -> list[tuple[str, str, str]]: ...
def resize(arr: npt.NDArray[Any], width: int, height: int, method: int, /) -> npt.NDArray[Any]: ...
def decode_many(
    items: list[Any],
    mode: int,
    depth16: bool,
    scale_denom: int,
    max_w: int,
    max_h: int,
    orient: bool,
    strict: bool,
    expect_format: int,
    limits: tuple[int, int, int, int, int],
    threads: int,
    return_errors: bool,
    /,
) -> list[Any]: ...
def available_cpus() -> int: ...
def decode_base64(
    data: Any,
    mode: int,
    depth16: bool,
    scale_denom: int,
    max_w: int,
    max_h: int,
    orient: bool,
    strict: bool,
    expect_format: int,
    limits: tuple[int, int, int, int, int],
    out: npt.NDArray[Any] | None,
    /,
) -> npt.NDArray[np.uint8] | npt.NDArray[np.uint16]: ...
def b64decode(data: Any, /) -> bytes: ...
def b64encode(data: Any, urlsafe: bool, pad: bool, prefix: str | None, /) -> str: ...
def encode_jpeg(
    arr: npt.NDArray[Any],
    quality: int,
    subsampling: int,
    progressive: bool,
    optimize: bool,
    bgr: bool,
    drop_alpha: bool,
    /,
) -> bytes: ...
def encode_png(arr: npt.NDArray[Any], compression: int, bgr: bool, /) -> bytes: ...

# stream.c
def resize_bytearray(buf: bytearray, size: int, /) -> None: ...
ADVISE_NORMAL: int
ADVISE_SEQUENTIAL: int
ADVISE_RANDOM: int
ADVISE_WILLNEED: int
ADVISE_DONTNEED: int

class MappedFile:
    """Read-only buffer over a memory-mapped regular file (see amulet_native.open_mapped)."""

    def __init__(self, fd: int) -> None: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, view: memoryview, /) -> None: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> bool: ...
    def close(self) -> None: ...
    def advise(self, advice: int, offset: int, length: int, /) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def size(self) -> int: ...
    @property
    def exports(self) -> int: ...
