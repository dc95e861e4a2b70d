"""Type stubs for the compiled amulet_native._core (see amulet_native.image)."""

from typing import Any

import numpy as np
import numpy.typing as npt

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

class IncrementalDecoder:
    def __init__(
        self,
        mode: int,
        depth16: bool,
        scale_denom: int,
        max_w: int,
        max_h: int,
        orient: bool,
        strict: bool,
        expect_format: int,
        limits: tuple[int, int, int, int, int],
        /,
    ) -> None: ...
    def feed(self, data: Any, /) -> None: ...
    def finish(self) -> npt.NDArray[np.uint8] | npt.NDArray[np.uint16]: ...
    def close(self) -> None: ...
    @property
    def info(self) -> tuple[str, int, int, int, int, bool, int] | None: ...
    @property
    def bytes_fed(self) -> int: ...
    @property
    def rows_done(self) -> int: ...
    @property
    def rows_total(self) -> int: ...
    @property
    def state(self) -> Any: ...
