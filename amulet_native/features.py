"""What this build of amulet_native can do: formats, codec libraries, SIMD paths.

The answer comes from the compiled module, so it describes the build that is
actually loaded (a wheel built without libheif says ``"heic": False``), and a
format whose codec is missing at run time (a libheif without its HEVC plugin)
is reported as unavailable too.  Example::

    import amulet_native as an

    f = an.features()
    if not f["formats"]["heic"]:
        print("HEIC uploads will be refused:", f["libraries"])

``python -m amulet_native`` prints the same information.
"""

from __future__ import annotations

from typing import TypedDict

from . import _core

__all__ = ["Features", "features"]

#: Every format name ``ImageInfo.format`` can report, in a stable order.
FORMATS = ("jpeg", "png", "webp", "gif", "heic", "avif")


class Features(TypedDict):
    """The shape :func:`features` returns."""

    version: str
    formats: dict[str, bool]
    """Format name -> decodable by this build (codec compiled in and usable now)."""
    libraries: dict[str, str]
    """Codec library name -> version string of the library loaded at run time."""
    simd: dict[str, str]
    """Accelerated path name -> the instruction set chosen at run time."""


def _formats() -> dict[str, bool]:
    # _core.codec_formats() (added with the WebP/GIF/HEIF decoders) names the
    # formats the build decodes; older builds decode JPEG and PNG only.
    probe = getattr(_core, "codec_formats", None)
    available: dict[str, bool] = dict(probe()) if probe is not None else {}
    return {name: bool(available.get(name, name in ("jpeg", "png"))) for name in FORMATS}


def _libraries() -> dict[str, str]:
    libs = {"libjpeg": _core.LIBJPEG_VERSION, "libpng": _core.LIBPNG_VERSION}
    probe = getattr(_core, "codec_libraries", None)
    if probe is not None:
        libs.update(probe())
    return libs


def _simd() -> dict[str, str]:
    simd: dict[str, str] = {}
    base64_simd = getattr(_core, "base64_simd", None)
    simd["base64"] = str(base64_simd()) if base64_simd is not None else "scalar"
    return simd


def features() -> Features:
    """Formats, codec library versions and SIMD paths of the loaded build.

    Returns a fresh dict each call: ``{"version": "0.1.0", "formats": {"jpeg":
    True, "png": True, "webp": True, ...}, "libraries": {"libjpeg": "...", ...},
    "simd": {"base64": "avx2"}}``.
    """
    from . import __version__

    return Features(
        version=__version__,
        formats=_formats(),
        libraries=_libraries(),
        simd=_simd(),
    )
