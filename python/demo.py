"""Decode sample images with amulet_native, Pillow and OpenCV; print a table.

Run with ``make demo`` (or ``.venv/bin/python python/demo.py``).  The sample
pictures are the Kodak photos of the shared corpus (``$AMULET_CORPUS`` or
``../shared/corpus``) when present, otherwise generated photo-like images.  They
are encoded with Pillow (JPEG quality 90 with 4:2:0 chroma, PNG defaults), then
each decoder turns the bytes into an RGB NumPy array a few times; the table
shows the median time per image and how many times faster amulet_native is.
"""

from __future__ import annotations

import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import PIL
from PIL import Image

import amulet_native as an

cv2: Any
try:
    import cv2
except ImportError:  # OpenCV is optional: its column is left out
    cv2 = None

RGB = npt.NDArray[np.uint8]
Decoder = Callable[[bytes], Any]
REPO = Path(__file__).resolve().parent.parent


def find_kodak() -> Path | None:
    root = Path(os.environ.get("AMULET_CORPUS") or REPO.parent / "shared" / "corpus")
    kodak = root / "kodak"
    return kodak if len(list(kodak.glob("kodim*.png"))) >= 16 else None


def generated_photo(seed: int, width: int = 768, height: int = 512) -> RGB:
    """Smooth gradients, soft blobs, hard edges and noise: compresses like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, phase = rng.uniform(0.002, 0.02, 3)
        img[..., c] = 128 + 90 * np.sin(a * x + phase * 50) * np.cos(b * y + phase * 20)
    for _ in range(10):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 120)
        img += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None] * rng.uniform(
            -80, 80, 3
        )
    for _ in range(8):
        x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        img[y0 : y0 + int(rng.integers(20, 150)), x0 : x0 + int(rng.integers(20, 200))] = (
            rng.uniform(0, 255, 3)
        )
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def load_photos() -> tuple[list[RGB], str]:
    """16 landscape 768x512 photos and a description of where they came from."""
    kodak = find_kodak()
    if kodak is None:
        return [generated_photo(i) for i in range(1, 17)], "generated (no corpus found)"
    photos = []
    for i in range(1, 17):
        with Image.open(kodak / f"kodim{i:02d}.png") as im:
            rgb = im.convert("RGB")
            if rgb.height > rgb.width:
                rgb = rgb.transpose(Image.Transpose.ROTATE_90)
            photos.append(np.asarray(rgb))
    return photos, f"Kodak photos from {kodak}"


def encode(rgb: RGB, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(rgb).save(buf, "JPEG", quality=90, subsampling=2)
    else:
        Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def samples(photos: list[RGB]) -> list[tuple[str, str, bytes]]:
    """(label, format, bytes) for each sample the demo decodes."""
    mosaic = np.ascontiguousarray(
        np.concatenate([np.concatenate(photos[r * 4 : r * 4 + 4], axis=1) for r in range(4)])
    )
    src = photos[0]
    small = np.ascontiguousarray(src[16:496, 64:704])  # 640x480 crop
    return [
        ("photo 1 768x512", "JPEG", encode(photos[0], "JPEG")),
        ("photo 5 768x512", "JPEG", encode(photos[4], "JPEG")),
        ("crop 640x480", "JPEG", encode(small, "JPEG")),
        ("mosaic 3072x2048", "JPEG", encode(mosaic, "JPEG")),
        ("crop 640x480", "PNG", encode(small, "PNG")),
        ("mosaic 3072x2048", "PNG", encode(mosaic, "PNG")),
    ]


def decoders() -> dict[str, Decoder]:
    found: dict[str, Decoder] = {
        "amulet_native": lambda b: an.decode(b),
        "Pillow": lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB")),
    }
    if cv2 is not None:
        cv2.setNumThreads(1)
        # OpenCV delivers BGR; timed as is (no conversion to RGB), in its favour.
        found["OpenCV"] = lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
    return found


def median_ms(fn: Decoder, data: bytes, budget: float) -> float:
    fn(data)  # warm up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget and len(times) < 50):
        t0 = time.perf_counter()
        fn(data)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def versions() -> str:
    parts = [
        f"Python {platform.python_version()}",
        (
            f"amulet_native {an.__version__} (libjpeg-turbo {an.LIBJPEG_VERSION}, "
            f"libpng {an.LIBPNG_VERSION})"
        ),
        f"NumPy {np.__version__}",
        f"Pillow {PIL.__version__}",
    ]
    if cv2 is not None:
        parts.append(f"OpenCV {cv2.__version__}")
    return ", ".join(parts)


def table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    t_start = time.perf_counter()
    photos, origin = load_photos()
    decs = decoders()
    peers = [name for name in decs if name != "amulet_native"]
    head = [
        "image",
        "format",
        "KiB",
        *(f"{n} ms" for n in decs),
        *(f"vs {p}" for p in peers),
        "same pixels as Pillow",
    ]
    rows = [head]
    for label, fmt, data in samples(photos):
        big = len(data) > 1_000_000
        ms = {name: median_ms(fn, data, 1.2 if big else 0.4) for name, fn in decs.items()}
        ours = decs["amulet_native"](data)
        ref = decs["Pillow"](data)
        diff = int(np.abs(ours.astype(np.int16) - ref).max())
        rows.append(
            [
                label,
                fmt,
                f"{len(data) / 1024:,.0f}",
                *(f"{ms[n]:.2f}" for n in decs),
                *(f"{ms[p] / ms['amulet_native']:.2f}x" for p in peers),
                "yes" if diff == 0 else f"max diff {diff}",
            ]
        )
    print("amulet_native demo: decode bytes -> RGB uint8 array, median of repeated runs")
    print(f"images: {origin}; JPEG q90 4:2:0 and PNG encoded by Pillow")
    print(f"versions: {versions()}")
    print()
    print(table(rows, right=set(range(2, len(head) - 1))))
    print()
    print("vs X = X's time / amulet_native's time (above 1: amulet_native is faster).")
    if "OpenCV" in decs:
        print("OpenCV is timed returning BGR, its native order (amulet_native and Pillow: RGB).")
    print(f"done in {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
