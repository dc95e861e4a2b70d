"""Decode of the upload formats of issue 15 (WebP, GIF, HEIC, AVIF): bytes ->
colour ndarray, amulet_native against Pillow (+ pillow-heif / pillow-avif-plugin)
and OpenCV.

Inputs are made once per session from the benchmark photos (Kodak when the
corpus is present, else the synthetic stand-ins of _inputs.py): a 768x512
photo and a 1536x1024 crop of the mosaic.  Fairness, stated once:

* Every peer decodes single-threaded (cv2.setNumThreads(1); libheif decodes
  tiles in the calling thread for us; pillow-heif and libavif run as they ship).
* Pillow is measured as users write it: ``np.asarray(Image.open(b).convert("RGB"))``
  (the convert is a no-op copy for RGB WebP/HEIC/AVIF, a palette expansion for GIF).
* OpenCV returns BGR and is paired with amulet_native ``mode="BGR"``.
* AVIF: amulet_native decodes AV1 with libaom (libheif's aom plugin: dav1d
  prints to stderr, see csrc/core/image/heif.c); pillow-avif-plugin uses the
  libavif + dav1d it bundles.

No timing assertions: report ratios in benchmarks/results/formats.md.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from _inputs import load_photos, mosaic
from conftest import measure

import amulet_native as an

U8 = npt.NDArray[np.uint8]


@lru_cache(maxsize=1)
def sources() -> dict[str, U8]:
    photos, _ = load_photos()
    big = mosaic(photos)
    return {"768x512": photos["kodim01"], "1536x1024": np.ascontiguousarray(big[:1024, :1536])}


def _save(arr: U8 | Any, fmt: str, **kw: Any) -> bytes:
    from PIL import Image

    im = arr if not isinstance(arr, np.ndarray) else Image.fromarray(arr)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _heif_plugins() -> None:
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:
        pass
    try:
        import pillow_avif  # noqa: F401
    except ImportError:
        pass


def _make(kind: str, size: str) -> bytes:
    from PIL import Image

    _heif_plugins()
    arr = sources()[size]
    if kind == "webp lossy":
        return _save(arr, "WEBP", quality=80)
    if kind == "webp lossless":
        return _save(arr, "WEBP", lossless=True, method=4)
    if kind == "gif":
        return _save(Image.fromarray(arr).quantize(256), "GIF")
    if kind == "heic":
        return _save(arr, "HEIF", quality=80)
    if kind == "avif":
        return _save(arr, "AVIF", quality=80, speed=8)
    raise ValueError(kind)


CASES = [
    ("webp lossy", "768x512"),
    ("webp lossy", "1536x1024"),
    ("webp lossless", "1536x1024"),
    ("gif", "768x512"),
    ("heic", "1536x1024"),
    ("avif", "1536x1024"),
]
PEERS = ["amulet_native", "amulet_native BGR", "Pillow", "OpenCV (BGR)"]


@cache
def encoded(kind: str, size: str) -> bytes:
    try:
        return _make(kind, size)
    except (KeyError, OSError, ValueError) as exc:  # Pillow without the encoder
        pytest.skip(f"cannot make a {kind} file here: {exc}")


def decoder(peer: str) -> Callable[[bytes], Any]:
    if peer == "amulet_native":
        return lambda b: an.decode(b)
    if peer == "amulet_native BGR":
        return lambda b: an.decode(b, "BGR")
    if peer == "Pillow":
        from PIL import Image

        _heif_plugins()
        return lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
    if peer == "OpenCV (BGR)":
        import cv2

        cv2.setNumThreads(1)
        return lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
    raise ValueError(peer)


def _peer_can(peer: str, data: bytes) -> bool:
    try:
        out = decoder(peer)(data)
    except Exception:  # noqa: BLE001 - a peer without the codec
        return False
    return isinstance(out, np.ndarray)


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("kind,size", CASES, ids=[f"{k} {s}" for k, s in CASES])
def test_decode_format(benchmark: Any, kind: str, size: str, peer: str) -> None:
    if kind in ("heic", "avif") and not an.features()["formats"][kind]:
        pytest.skip(f"this build cannot decode {kind}")
    data = encoded(kind, size)
    if not _peer_can(peer, data):
        pytest.skip(f"{peer} cannot decode {kind}")
    ref = None if peer == "amulet_native" else (
        decoder("amulet_native BGR") if "BGR" in peer else decoder("amulet_native")
    )
    h, w = sources()[size].shape[:2]
    out = measure(
        benchmark,
        decoder(peer),
        data,
        group=f"{kind} {size}",
        peer=peer,
        kind=kind,
        pixels=h * w,
        ref=ref,
        min_rounds=10,
    )
    assert out.shape[:2] == (h, w)


@pytest.mark.parametrize("peer", ["amulet_native", "Pillow"])
def test_decode_gif_last_frame(benchmark: Any, peer: str) -> None:
    """Frame 19 of a 20-frame 480x320 animation: composing 20 frames."""
    from PIL import Image

    frames = [
        Image.fromarray(np.roll(sources()["768x512"][:320, :480], 8 * k, axis=1)).quantize(64)
        for k in range(20)
    ]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)

    def ours(b: bytes) -> Any:
        return an.decode(b, frame=19)

    def pil(b: bytes) -> Any:
        im = Image.open(io.BytesIO(b))
        im.seek(19)
        return np.asarray(im.convert("RGB"))

    measure(
        benchmark,
        ours if peer == "amulet_native" else pil,
        data,
        group="gif 480x320 frame 19 of 20",
        peer=peer,
        kind="gif",
        pixels=480 * 320,
        ref=None if peer == "amulet_native" else ours,
        min_rounds=10,
    )


@pytest.mark.parametrize("peer", ["amulet_native", "Pillow"])
def test_encode_webp(benchmark: Any, peer: str) -> None:
    """encode_webp vs Pillow's save(..., "WEBP") at quality 80, method 4."""
    arr = sources()["768x512"]

    def ours(a: U8) -> bytes:
        return an.encode_webp(a, quality=80, method=4)

    def pil(a: U8) -> bytes:
        return _save(a, "WEBP", quality=80, method=4)

    measure(
        benchmark,
        ours if peer == "amulet_native" else pil,
        arr,
        group="encode webp 768x512 q80",
        peer=peer,
        kind="encode",
        pixels=768 * 512,
        ref=None if peer == "amulet_native" else ours,
        min_rounds=10,
    )
