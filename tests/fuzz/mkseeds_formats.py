"""Seed files for the WebP, GIF and HEIF fuzzers (tests/fuzz/format_fuzzer.c).

    python mkseeds_formats.py OUTDIR

Writes small files made by Pillow (and pillow-heif / pillow-avif-plugin when
installed) into OUTDIR/webp, OUTDIR/gif and OUTDIR/heif: lossy, lossless,
alpha and animated WebP; still, transparent, interlaced and animated GIF;
8-bit, alpha and 10-bit HEIC, 4:2:0 and 4:4:4 AVIF.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def img(h: int, w: int, ch: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), (x + y) % 256]
                    + [np.full((h, w), 200)], -1)[..., :ch]
    arr = (base + rng.integers(0, 40, base.shape)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr if ch > 1 else arr[..., 0])


def save(im: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def main(out: Path) -> None:
    seeds: dict[str, dict[str, bytes]] = {"webp": {}, "gif": {}, "heif": {}}
    w = seeds["webp"]
    w["lossy"] = save(img(16, 24, 3, 1), "WEBP", quality=50)
    w["lossless"] = save(img(16, 24, 3, 2), "WEBP", lossless=True)
    w["alpha"] = save(img(12, 20, 4, 3), "WEBP", quality=60)
    w["alpha-lossless"] = save(img(12, 20, 4, 3), "WEBP", lossless=True)
    frames = [img(10, 14, 4, s) for s in range(3)]
    w["anim"] = save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=20)
    g = seeds["gif"]
    g["still"] = save(img(16, 24, 3, 4).quantize(16), "GIF")
    g["transparent"] = save(img(16, 24, 1, 5).convert("P"), "GIF", transparency=3)
    g["interlaced"] = save(img(20, 20, 3, 6).quantize(8), "GIF", interlace=True)
    pf = [img(12, 16, 3, s).quantize(8) for s in range(3)]
    g["anim"] = save(pf[0], "GIF", save_all=True, append_images=pf[1:], disposal=[1, 2, 3])
    h = seeds["heif"]
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        h["heic"] = save(img(16, 24, 3, 7), "HEIF", quality=30)
        h["heic-alpha"] = save(img(16, 24, 4, 8), "HEIF", quality=30)
        arr = (np.asarray(img(16, 24, 3, 9)).astype(np.uint16) << 8).tobytes()
        hdr = pillow_heif.from_bytes(mode="RGB;16", size=(24, 16), data=arr)
        buf = io.BytesIO()
        hdr.save(buf, quality=30)
        h["heic-10bit"] = buf.getvalue()
    except ImportError:
        pass
    try:
        import pillow_avif  # noqa: F401

        h["avif"] = save(img(16, 24, 3, 10), "AVIF", quality=30)
        h["avif-444"] = save(img(16, 24, 3, 11), "AVIF", quality=30, subsampling="4:4:4")
    except ImportError:
        pass
    for fmt, files in seeds.items():
        folder = out / fmt
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / f"{name}.{'heif' if fmt == 'heif' else fmt}").write_bytes(data)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
