"""Conformance on the shared corpus (PngSuite, libjpeg-turbo test images, Kodak).

The corpus is not part of the repository: every test here takes the
``corpus_dir`` fixture, which skips with a clear reason when neither
``$AMULET_CORPUS`` nor ``../shared/corpus`` exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import assert_same, corpus_subdir, pil_decode, pil_open

import amulet_native as an

pytestmark = pytest.mark.corpus


def _names(sub: str, pattern: str) -> list[str]:
    folder = corpus_subdir(sub)
    names = sorted(p.name for p in folder.glob(pattern)) if folder.is_dir() else []
    # one placeholder keeps the parametrised test visible (and skipped) without a corpus
    return names or ["<no corpus>"]


PNGSUITE = [n for n in _names("pngsuite", "*.png") if n != "PngSuite.png"]
VALID_PNG = [n for n in PNGSUITE if not n.startswith("x")]
INVALID_PNG = [n for n in PNGSUITE if n.startswith("x") or n == "<no corpus>"]
KODAK = _names("kodak", "*.png")


def corpus_file(corpus_dir: Path, sub: str, name: str) -> bytes:
    path = corpus_dir / sub / name
    if not path.is_file():
        pytest.skip(f"{sub}/{name} is not in the corpus at {corpus_dir}")
    return path.read_bytes()


def png_ihdr_info(data: bytes) -> tuple[int, int]:
    """(bit depth, colour type) straight from the IHDR bytes."""
    return data[24], data[25]


def png_trns_key(data: bytes) -> bytes | None:
    """The raw tRNS payload of a grey/RGB PNG (colour key), else None."""
    i = data.find(b"tRNS")
    if i < 0 or png_ihdr_info(data)[1] not in (0, 2):
        return None
    n = int.from_bytes(data[i - 4 : i], "big")
    return data[i + 4 : i + 4 + n]


def pngsuite_reference(data: bytes, mode: an.Mode) -> npt.NDArray[Any]:
    """Pillow's pixels, with the two places where Pillow departs from the PNG
    specification redone in NumPy *from Pillow's own samples*:
    - 16-bit grey: Pillow keeps I;16 and its convert() clamps; the 8-bit value
      is the high byte of Pillow's 16-bit sample;
    - a tRNS colour key on grey below 8 bits or at 16 bits: Pillow compares the
      key with rescaled samples; the key applies to the raw sample value."""
    im = pil_open(data)
    depth, ct = png_ihdr_info(data)
    key = png_trns_key(data)
    if ct != 0 or (depth == 8 or depth == 1) or (depth < 16 and key is None):
        return pil_decode(data, mode)
    if depth == 16:
        raw = np.asarray(im).astype(np.uint32)
        grey = (raw >> 8).astype(np.uint8)
    else:
        grey = np.asarray(im.convert("L"))
        raw = grey.astype(np.uint32) // (255 // ((1 << depth) - 1))
    alpha = np.full(grey.shape, 255, np.uint8)
    if key is not None:
        alpha[raw == int.from_bytes(key[:2], "big")] = 0
    rgb = np.repeat(grey[:, :, None], 3, axis=-1)
    return {
        "L": grey,
        "LA": np.stack([grey, alpha], axis=-1),
        "RGB": rgb,
        "BGR": rgb,
        "RGBA": np.concatenate([rgb, alpha[:, :, None]], axis=-1),
    }[mode]


@pytest.mark.parametrize("name", VALID_PNG)
def test_pngsuite_valid_matches_pillow(corpus_dir: Path, name: str) -> None:
    data = corpus_file(corpus_dir, "pngsuite", name)
    modes: tuple[an.Mode, ...] = ("RGBA", "RGB", "LA", "L")
    for mode in modes:
        assert_same(an.decode(data, mode), pngsuite_reference(data, mode), f"{name} {mode}")
    info = an.probe(data)
    im = pil_open(data)
    assert (info.format, info.width, info.height) == ("png", *im.size)
    assert info.progressive == (b"\x01" == data[28:29])


@pytest.mark.parametrize("name", [n for n in VALID_PNG if "16" in n])
def test_pngsuite_16bit_full_depth(corpus_dir: Path, name: str) -> None:
    """Where Pillow keeps 16 bits (grey, I;16) the uint16 decode matches it; in
    every case the 8-bit decode is the high byte of the 16-bit one."""
    data = corpus_file(corpus_dir, "pngsuite", name)
    im = pil_open(data)
    if im.mode == "I;16":
        assert_same(an.decode(data, "L", dtype=np.uint16), np.asarray(im), name)
    full = an.decode(data, "RGBA", dtype=np.uint16)
    assert_same(an.decode(data, "RGBA"), (full >> 8).astype(np.uint8), name)


@pytest.mark.parametrize("name", INVALID_PNG)
def test_pngsuite_corrupt_files_are_rejected(corpus_dir: Path, name: str) -> None:
    data = corpus_file(corpus_dir, "pngsuite", name)
    modes: tuple[an.Mode, ...] = ("RGB", "RGBA")
    for mode in modes:
        with pytest.raises((an.DecodeError, an.ValidationError)) as ei:
            an.decode(data, mode)
        assert isinstance(ei.value, an.AmuletError)
        assert ei.value.code


JPEG_TESTS = ["testorig.jpg", "testimgint.jpg", "testimgari.jpg"]


@pytest.mark.parametrize("name", JPEG_TESTS)
def test_libjpeg_turbo_images_match_pillow(corpus_dir: Path, name: str) -> None:
    """Same library, same settings (ISLOW, fancy upsampling): bit-exact.  This
    covers arithmetic coding (testimgari.jpg, SOF9).  L/LA are compared with
    Pillow's draft("L") decode, i.e. libjpeg's own grey output."""
    import io

    from PIL import Image

    data = corpus_file(corpus_dir, "jpeg", name)
    modes: tuple[an.Mode, ...] = ("RGB", "BGR", "RGBA")
    for mode in modes:
        assert_same(an.decode(data, mode), pil_decode(data, mode), f"{name} {mode}")
    im = Image.open(io.BytesIO(data))
    im.draft("L", im.size)
    assert_same(an.decode(data, "L"), np.asarray(im.convert("L")), f"{name} L")
    info = an.probe(data)
    assert (info.format, info.size, info.channels) == ("jpeg", (227, 149), 3)
    assert info.progressive == ("progressive" in pil_open(data).info)


def test_libjpeg_turbo_images_agree_with_reference(corpus_dir: Path) -> None:
    """testorig.png in this corpus is a greyscale rendering of testorig.jpg
    (ITU-R BT.709 luma of the decoded RGB, as ImageMagick makes it; measured
    mean |diff| 0.34, max 1.8).  Tolerance for testorig.jpg: Rec.709 luma of
    our RGB within 3 levels everywhere and 0.6 on average (rounding twice, and
    the reference decoder's own DCT/upsampling).  testimgint.jpg and
    testimgari.jpg are a separate encode of the same picture (other quantised
    coefficients: measured max 6.5, mean 0.44), so they get 8 levels / 0.6."""
    ref = pil_decode(corpus_file(corpus_dir, "jpeg", "testorig.png"), "L").astype(np.float64)
    bounds = {"testorig.jpg": 3.0, "testimgint.jpg": 8.0, "testimgari.jpg": 8.0}
    for name, bound in bounds.items():
        rgb = an.decode(corpus_file(corpus_dir, "jpeg", name)).astype(np.float64)
        assert rgb.shape[:2] == ref.shape
        diff = np.abs(rgb @ np.array([0.212656, 0.715158, 0.072186]) - ref)
        assert diff.max() <= bound, name
        assert diff.mean() <= 0.6, name


def test_arithmetic_and_huffman_coding_decode_identically(corpus_dir: Path) -> None:
    """testimgari.jpg holds the same DCT coefficients as testimgint.jpg with
    arithmetic instead of Huffman entropy coding: identical pixels."""
    ari = an.decode(corpus_file(corpus_dir, "jpeg", "testimgari.jpg"))
    huff = an.decode(corpus_file(corpus_dir, "jpeg", "testimgint.jpg"))
    assert_same(ari, huff, "arithmetic vs Huffman")


def test_twelve_bit_jpeg_is_refused(corpus_dir: Path) -> None:
    data = corpus_file(corpus_dir, "jpeg", "monkey12.jpg")
    for call in (an.probe, an.decode):
        with pytest.raises(an.UnsupportedFormatError) as ei:
            call(data)
        assert ei.value.format == "jpeg"
        assert "12" in str(ei.value)


@pytest.mark.parametrize("name", KODAK)
def test_kodak_round_trip(corpus_dir: Path, name: str) -> None:
    """Decode matches Pillow; re-encoding the pixels losslessly and decoding
    again gives the same pixels."""
    from conftest import png_bytes

    data = corpus_file(corpus_dir, "kodak", name)
    rgb = an.decode(data)
    assert rgb.shape in ((512, 768, 3), (768, 512, 3))
    assert_same(rgb, pil_decode(data, "RGB"), name)
    again = an.decode(png_bytes(rgb, 2, 8))
    assert_same(again, rgb, name + " re-encoded")
    assert_same(an.decode(data, "BGR"), np.ascontiguousarray(rgb[:, :, ::-1]))
