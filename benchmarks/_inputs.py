"""The benchmark inputs, encoded once per session with Pillow.

Source pictures are the Kodak photos from the shared corpus (``$AMULET_CORPUS``
or ``<repo>/../shared/corpus``, folder ``kodak/``); portrait ones are rotated to
768x512.  Without the corpus, seeded synthetic photos stand in (smooth
gradients, texture noise, hard edges), so the suite still runs.

JPEG: Pillow ``quality=90``, 4:2:0 chroma subsampling, baseline, not optimised.
PNG: Pillow defaults (zlib level 6, adaptive filters).

Pipeline inputs: 64 distinct 768x512 JPEGs for the batch decode (the 24 photos,
then the 24 turned by 180 degrees, then the first 16 mirrored), the decoded
pixels of one photo and of the mosaic for the encoders (RGB and BGR copies,
both C-contiguous), and 1 MiB of seeded random bytes for the base64 codec.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
KODAK_SINGLES = ("kodim01", "kodim05", "kodim23")
ENCODE_PHOTO = "kodim01"
BATCH_SIZE = 64
BASE64_BYTES = 1 << 20
SMALL_SOURCE = "kodim23"  # center crop 640x480
MOSAIC_JPEG = "jpeg mosaic 3072x2048"
JPEG_GROUPS = (*(f"jpeg {n} 768x512" for n in KODAK_SINGLES), "jpeg 640x480", MOSAIC_JPEG)
PNG_GROUPS = ("png 640x480", "png mosaic 3072x2048")


@dataclass(frozen=True)
class Input:
    name: str  # benchmark group key, e.g. "jpeg kodim01 768x512"
    fmt: str  # "jpeg" or "png"
    data: bytes
    width: int
    height: int


def corpus_dir() -> Path | None:
    """The Kodak folder of the shared corpus, or None when absent."""
    root = Path(os.environ.get("AMULET_CORPUS") or REPO.parent / "shared" / "corpus")
    kodak = root / "kodak"
    return kodak if len(list(kodak.glob("kodim*.png"))) >= 16 else None


def synthetic_photo(seed: int, width: int = 768, height: int = 512) -> npt.NDArray[np.uint8]:
    """A photo-like RGB image: smooth gradients, blobs, edges and sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, ph = rng.uniform(0.002, 0.02, 3)
        img[..., c] = 128 + 90 * np.sin(a * x + ph * 50) * np.cos(b * y + ph * 20)
    for _ in range(12):  # soft blobs
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 120)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        img += blob[..., None] * rng.uniform(-80, 80, 3)
    for _ in range(8):  # hard-edged rectangles
        x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        x1, y1 = x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 150))
        img[y0:y1, x0:x1] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)  # texture / sensor noise
    return np.clip(img, 0, 255).astype(np.uint8)


def load_photos() -> tuple[dict[str, npt.NDArray[np.uint8]], bool]:
    """24 RGB photos of 768x512 keyed kodim01..kodim24; True when from the corpus."""
    kodak = corpus_dir()
    photos: dict[str, npt.NDArray[np.uint8]] = {}
    for i in range(1, 25):
        name = f"kodim{i:02d}"
        if kodak is not None and (kodak / f"{name}.png").exists():
            with Image.open(kodak / f"{name}.png") as im:
                rgb = im.convert("RGB")
                if rgb.height > rgb.width:
                    rgb = rgb.transpose(Image.Transpose.ROTATE_90)
                photos[name] = np.asarray(rgb)
        else:
            photos[name] = synthetic_photo(i)
    return photos, kodak is not None


def encode_jpeg(rgb: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, subsampling=2, optimize=False)
    return buf.getvalue()


def encode_png(rgb: npt.NDArray[np.uint8]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def mosaic(photos: dict[str, npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
    """3072x2048: kodim01..kodim16 in a 4x4 grid."""
    tiles = [photos[f"kodim{i:02d}"] for i in range(1, 17)]
    rows = [np.concatenate(tiles[r * 4 : (r + 1) * 4], axis=1) for r in range(4)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def small_image(photos: dict[str, npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
    """640x480 center crop of SMALL_SOURCE."""
    src = photos[SMALL_SOURCE]
    y0, x0 = (src.shape[0] - 480) // 2, (src.shape[1] - 640) // 2
    return np.ascontiguousarray(src[y0 : y0 + 480, x0 : x0 + 640])


def batch_photos(photos: dict[str, npt.NDArray[np.uint8]], n: int) -> list[npt.NDArray[np.uint8]]:
    """n distinct 768x512 pictures: the 24 photos as they are, then turned by
    180 degrees, then mirrored left-right, and so on (distinct bytes, so no
    decoder can profit from a repeated input; same size and content class)."""
    variants = (
        lambda a: a,
        lambda a: a[::-1, ::-1],
        lambda a: a[:, ::-1],
    )
    names = sorted(photos)
    return [
        np.ascontiguousarray(
            variants[(i // len(names)) % len(variants)](photos[names[i % len(names)]])
        )
        for i in range(n)
    ]


@dataclass(frozen=True)
class Pixels:
    """One picture for the encoders, in both channel orders (C-contiguous)."""

    name: str  # group key part, e.g. "kodim01 768x512"
    rgb: npt.NDArray[np.uint8]
    bgr: npt.NDArray[np.uint8]


def pixels(name: str, rgb: npt.NDArray[np.uint8]) -> Pixels:
    rgb = np.ascontiguousarray(rgb)
    return Pixels(name, rgb, np.ascontiguousarray(rgb[..., ::-1]))


@dataclass(frozen=True)
class InputSet:
    from_corpus: bool
    jpeg: dict[str, Input]  # decode groups, in display order
    png: dict[str, Input]
    kodak24_jpeg: list[bytes]  # all 24 photos, for the batch benchmark
    probe_jpeg: bytes  # small JPEG for the probe rate
    mosaic_jpeg: bytes  # for the max_size and thumbnail benchmarks
    batch_jpeg: list[bytes]  # BATCH_SIZE distinct 768x512 JPEGs, for decode_many
    encode: dict[str, Pixels]  # encoder inputs keyed "kodim01 768x512", "mosaic 3072x2048"
    random_bytes: bytes  # BASE64_BYTES of seeded random data
    random_base64: bytes  # the same, base64-encoded (standard alphabet, padded)
    photo_base64: str  # base64 text of the ENCODE_PHOTO JPEG (q90), for decode_base64


def build_inputs() -> InputSet:
    photos, from_corpus = load_photos()
    jpeg: dict[str, Input] = {}
    png: dict[str, Input] = {}
    for name in KODAK_SINGLES:
        key = f"jpeg {name} 768x512"
        jpeg[key] = Input(key, "jpeg", encode_jpeg(photos[name]), 768, 512)
    small = small_image(photos)
    big = mosaic(photos)
    jpeg["jpeg 640x480"] = Input("jpeg 640x480", "jpeg", encode_jpeg(small), 640, 480)
    jpeg["jpeg mosaic 3072x2048"] = Input(
        "jpeg mosaic 3072x2048", "jpeg", encode_jpeg(big), 3072, 2048
    )
    png["png 640x480"] = Input("png 640x480", "png", encode_png(small), 640, 480)
    png["png mosaic 3072x2048"] = Input("png mosaic 3072x2048", "png", encode_png(big), 3072, 2048)
    kodak24 = [encode_jpeg(photos[f"kodim{i:02d}"]) for i in range(1, 25)]
    random = np.random.default_rng(20261122).bytes(BASE64_BYTES)
    return InputSet(
        from_corpus=from_corpus,
        jpeg=jpeg,
        png=png,
        kodak24_jpeg=kodak24,
        probe_jpeg=jpeg["jpeg 640x480"].data,
        mosaic_jpeg=jpeg["jpeg mosaic 3072x2048"].data,
        batch_jpeg=[encode_jpeg(a) for a in batch_photos(photos, BATCH_SIZE)],
        encode={
            p.name: p
            for p in (
                pixels(f"{ENCODE_PHOTO} 768x512", photos[ENCODE_PHOTO]),
                pixels("mosaic 3072x2048", big),
            )
        },
        random_bytes=random,
        random_base64=base64.b64encode(random),
        photo_base64=base64.b64encode(jpeg[f"jpeg {ENCODE_PHOTO} 768x512"].data).decode("ascii"),
    )
