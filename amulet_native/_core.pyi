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

# locks.c / pool.c: the native halves of amulet_native.locks and amulet_native.pool
class LockManager:
    def __init__(self, detect_deadlocks: bool = ..., max_names: int = ...) -> None: ...
    def acquire(
        self, name: str, kind: int, permits: int, owner: int, timeout: float, cancel: Any, /
    ) -> bool: ...
    def try_acquire(self, name: str, kind: int, permits: int, owner: int, /) -> bool: ...
    def release(self, name: str, owner: int, /) -> None: ...
    def stats(self, name: str, /) -> dict[str, Any] | None: ...
    def all_stats(self) -> dict[str, dict[str, Any]]: ...
    def __len__(self) -> int: ...

class PoolSlots:
    def __init__(self, capacity: int) -> None: ...
    def acquire(self, timeout: float, cancel: Any, /) -> bool: ...
    def try_acquire(self) -> bool: ...
    def release(self) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> tuple[int, int, int, bool, int, int]: ...
