"""Builds benchmarks/baseline.c into a shared library and wraps it with ctypes.

The library is compiled with ``gcc -O2 -shared -fPIC`` against the same system
libjpeg-turbo and libpng that amulet_native links (found with pkg-config) and
rebuilt whenever baseline.c is newer than the .so.  ctypes drops the GIL around
foreign calls; its per-call overhead is about a microsecond, negligible beside
millisecond decodes.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "baseline.c"
BUILD_DIR = HERE / "_build"
LIBRARY = BUILD_DIR / "baseline.so"


def _pkg_config(*args: str) -> list[str]:
    if shutil.which("pkg-config") is None:
        return []
    try:
        out = subprocess.run(
            ["pkg-config", *args, "libjpeg", "libpng"], check=True, capture_output=True, text=True
        ).stdout
    except (subprocess.CalledProcessError, OSError):
        return []
    return out.split()


def build() -> Path:
    """Compile baseline.c if needed; return the path of the shared library."""
    if LIBRARY.exists() and LIBRARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return LIBRARY
    BUILD_DIR.mkdir(exist_ok=True)
    cflags = _pkg_config("--cflags")
    libs = _pkg_config("--libs") or ["-ljpeg", "-lpng16"]
    cmd = [
        "gcc",
        "-O2",
        "-shared",
        "-fPIC",
        "-Wall",
        "-Wextra",
        *cflags,
        str(SOURCE),
        "-o",
        str(LIBRARY),
        *libs,
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return LIBRARY


class Baseline:
    """ctypes front for baseline.c: each call decodes, allocates and frees."""

    def __init__(self, path: Path | None = None) -> None:
        lib = ctypes.CDLL(str(path or build()))
        argtypes_common: list[Any] = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
        out_ptrs: list[Any] = [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
        lib.bl_jpeg_decode.argtypes = [*argtypes_common, ctypes.c_int, *out_ptrs]
        lib.bl_jpeg_decode.restype = ctypes.c_int
        lib.bl_png_decode.argtypes = [*argtypes_common, *out_ptrs]
        lib.bl_png_decode.restype = ctypes.c_int
        lib.bl_libpng_version.restype = ctypes.c_char_p
        lib.bl_jpeg_stage.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
        lib.bl_jpeg_stage.restype = ctypes.c_int
        self._lib = lib
        self._w = ctypes.c_int()
        self._h = ctypes.c_int()
        self._wp = ctypes.byref(self._w)
        self._hp = ctypes.byref(self._h)

    def jpeg(self, data: bytes, bgr: bool = False, denom: int = 1) -> int:
        """Decode a JPEG; returns the status (0 = success)."""
        return int(self._lib.bl_jpeg_decode(data, len(data), bgr, denom, self._wp, self._hp))

    def png(self, data: bytes, bgr: bool = False) -> int:
        """Decode a PNG to 8-bit RGB; returns the status (0 = success)."""
        return int(self._lib.bl_png_decode(data, len(data), bgr, self._wp, self._hp))

    def jpeg_stage(self, data: bytes, stage: int) -> int:
        """Diagnostics: 0 = entropy decoding only; 1 = IFAST IDCT, plain upsampling."""
        return int(self._lib.bl_jpeg_stage(data, len(data), stage))

    def size(self) -> tuple[int, int]:
        """(width, height) of the last successful decode."""
        return (self._w.value, self._h.value)

    def libpng_version(self) -> str:
        return bytes(self._lib.bl_libpng_version()).decode()
