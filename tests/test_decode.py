"""Correctness of decode()/probe() on generated images, against Pillow.

JPEG: amulet_native and Pillow both run libjpeg(-turbo) with ISLOW DCT and
fancy upsampling, so RGB/BGR/RGBA must match Pillow bit for bit (even across
libjpeg-turbo versions: the bundled one in Pillow's wheel vs the system one).
Mode L of a colour JPEG is libjpeg's own luma plane (out_color_space
JCS_GRAYSCALE), which is exactly what Pillow's draft("L") gives; it differs from
Pillow's convert("L") of the RGB pixels by a few levels, see
test_jpeg_grey_of_colour_is_close_to_pillow_convert.

PNG: lossless, so the reference is the encoded array itself (png_reference, the
PNG specification in NumPy) and, in every case where Pillow implements the
specification, Pillow too, both bit-exact.
"""

from __future__ import annotations

import io
import mmap
import struct
import subprocess
import sys
import threading
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import (
    CT_CHANNELS,
    PNG_SIG,
    assert_same,
    block_mean,
    exif_bytes,
    jpeg_bytes,
    noise,
    photo,
    pil_decode,
    pil_open,
    png_bytes,
    png_chunk,
    png_ihdr,
    png_reference,
    ycck_bytes,
)
from PIL import Image, ImageOps

import amulet_native as an

MODES: tuple[an.Mode, ...] = ("RGB", "BGR", "RGBA", "L", "LA")
# (height, width): 1x1, one row, one column, odd sizes that are not MCU multiples.
SIZES = ((1, 1), (1, 13), (13, 1), (17, 9), (33, 65))


# ---- JPEG fixtures ---------------------------------------------------------------

JPEG_VARIANTS: dict[str, dict[str, Any]] = {
    "baseline-444": {"subsampling": 0},
    "baseline-422": {"subsampling": 1},
    "baseline-420": {"subsampling": 2},
    "progressive-444": {"subsampling": 0, "progressive": True},
    "progressive-420": {"subsampling": 2, "progressive": True},
    "grey": {},
    "grey-progressive": {"progressive": True},
    "cmyk": {},
}


def make_jpeg(variant: str, h: int, w: int, seed: int = 0, **extra: Any) -> bytes:
    opts = {**JPEG_VARIANTS[variant], **extra}
    if variant.startswith("grey"):
        return jpeg_bytes(photo(h, w, 1, seed)[:, :, 0], **opts)
    if variant == "cmyk":
        # Pillow stores CMYK JPEGs Adobe-style: inverted samples plus an APP14 marker.
        return jpeg_bytes(Image.fromarray(photo(h, w, 4, seed), "CMYK"), **opts)
    return jpeg_bytes(photo(h, w, 3, seed), **opts)


def pil_jpeg(data: bytes, mode: an.Mode, denom: int = 1) -> npt.NDArray[Any]:
    """Pillow's decode with the libjpeg settings amulet_native uses: grey output
    straight from libjpeg for L/LA of a YCbCr file (draft), DCT scaling by
    draft() for denom > 1."""
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    draft_mode = "L" if mode in ("L", "LA") and im.mode == "RGB" else im.mode
    if denom > 1 or draft_mode != im.mode:
        # draft() picks the largest scale whose result is >= the request: asking
        # for floor(size / denom) yields libjpeg's ceil(size / denom).
        im.draft(draft_mode, (max(1, w // denom), max(1, h // denom)))
    im.load()
    if mode == "BGR":
        return np.ascontiguousarray(np.asarray(im.convert("RGB"))[:, :, ::-1])
    return np.asarray(im.convert(mode))


def test_pil_jpeg_draft_really_scales() -> None:
    """Guards the reference: draft() must have produced libjpeg's scaled size."""
    data = make_jpeg("baseline-420", 33, 65)
    assert pil_jpeg(data, "RGB", 2).shape == (17, 33, 3)
    assert pil_jpeg(data, "RGB", 8).shape == (5, 9, 3)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("variant", list(JPEG_VARIANTS))
def test_jpeg_matches_pillow(variant: str, size: tuple[int, int]) -> None:
    h, w = size
    data = make_jpeg(variant, h, w, seed=h * 100 + w)
    for mode in MODES:
        got = an.decode(data, mode)
        assert_same(got, pil_jpeg(data, mode), f"{variant} {mode}")
        assert got.flags.c_contiguous and got.flags.writeable
        assert got.shape[:2] == (h, w)
        assert got.ndim == (2 if mode == "L" else 3)


def test_jpeg_modes_are_consistent() -> None:
    """BGR is RGB reversed; RGBA is RGB plus opaque alpha; LA is L plus opaque alpha."""
    data = make_jpeg("baseline-420", 33, 65)
    rgb = an.decode(data, "RGB")
    assert_same(an.decode(data, "BGR"), np.ascontiguousarray(rgb[:, :, ::-1]))
    rgba = an.decode(data, "RGBA")
    assert_same(rgba[:, :, :3], rgb)
    assert (rgba[:, :, 3] == 255).all()
    la = an.decode(data, "LA")
    assert_same(la[:, :, 0], an.decode(data, "L"))
    assert (la[:, :, 1] == 255).all()


def test_jpeg_grey_of_colour_is_close_to_pillow_convert() -> None:
    """Mode L of a YCbCr JPEG is the decoded Y plane; Pillow's convert("L") is
    the ITU-R 601 luma of the decoded RGB.  Both estimate the same luma, but
    RGB is clipped to 0..255 and rounded before Pillow recomputes it, so they
    differ by a few levels where a colour saturates.  Tolerance: at most 6
    levels, and on average well under one."""
    data = make_jpeg("baseline-420", 64, 96, seed=7)
    got = an.decode(data, "L").astype(np.int64)
    ref = pil_decode(data, "L").astype(np.int64)
    assert int(np.abs(got - ref).max()) <= 6
    assert float(np.abs(got - ref).mean()) < 0.5


def test_jpeg_ycck_matches_pillow() -> None:
    cmyk = photo(24, 40, 4, seed=3)
    data = ycck_bytes(cmyk)
    info = an.probe(data)
    assert (info.format, info.channels, info.width, info.height) == ("jpeg", 4, 40, 24)
    assert pil_open(data).mode == "CMYK"
    for mode in MODES:
        assert_same(an.decode(data, mode), pil_jpeg(data, mode), f"YCCK {mode}")


def test_jpeg_cmyk_converts_like_pillow_formula() -> None:
    """Independent of Pillow's decoder: a flat CMYK colour (which JPEG keeps
    almost exactly) becomes R = (255-C)(255-K)/255 etc., within JPEG error."""
    cmyk = np.zeros((16, 16, 4), np.uint8)
    cmyk[...] = (40, 120, 200, 30)
    data = jpeg_bytes(Image.fromarray(cmyk, "CMYK"), quality=100)
    rgb = an.decode(data).astype(np.int64)
    expect = [round((255 - c) * (255 - 30) / 255) for c in (40, 120, 200)]
    assert int(np.abs(rgb - np.array(expect)).max()) <= 2


def test_jpeg_twelve_bit_is_refused() -> None:
    """Patch the SOF precision byte of a valid 8-bit file to 12."""
    data = bytearray(make_jpeg("baseline-444", 16, 16))
    sof = data.find(b"\xff\xc0")
    data[sof + 4] = 12
    calls: list[Callable[[], object]] = [lambda: an.decode(bytes(data)),
                                         lambda: an.probe(bytes(data))]
    for call in calls:
        with pytest.raises(an.UnsupportedFormatError) as ei:
            call()
        assert ei.value.code == "format.unsupported_variant"
        assert ei.value.format == "jpeg"


def test_jpeg_uint16_is_refused() -> None:
    with pytest.raises(an.ValidationError):
        an.decode(make_jpeg("baseline-444", 8, 8), dtype=np.uint16)


# ---- PNG fixtures -----------------------------------------------------------------


def png_cases() -> list[tuple[int, int, bool, bool]]:
    """(colour type, bit depth, tRNS, interlaced) for every legal combination."""
    out = []
    for ct, depths in ((0, (1, 2, 4, 8, 16)), (2, (8, 16)), (3, (1, 2, 4, 8)), (4, (8, 16)),
                       (6, (8, 16))):
        for bd in depths:
            for trns in (False, True) if ct in (0, 2, 3) else (False,):
                for interlace in (False, True):
                    out.append((ct, bd, trns, interlace))
    return out


class PngCase:
    """A generated PNG and what it holds."""

    def __init__(self, ct: int, bd: int, trns: bool, interlace: bool, h: int, w: int,
                 seed: int = 0) -> None:
        self.ct, self.bd, self.has_trns = ct, bd, trns
        dtype = np.uint16 if bd == 16 else np.uint8
        self.samples = noise((h, w, CT_CHANNELS[ct]), seed, dtype, 1 << bd)
        self.palette: npt.NDArray[np.uint8] | None = None
        self.trns: bytes | None = None
        if ct == 3:
            self.palette = noise((1 << bd, 3), seed + 1)
            if trns:  # shorter than the palette: later entries stay opaque
                self.trns = bytes(noise(((1 << bd) // 2 + 1,), seed + 2))
        elif trns:  # colour key = the first pixel, so some pixels are transparent
            self.trns = b"".join(int(v).to_bytes(2, "big") for v in self.samples[0, 0])
        self.data = png_bytes(self.samples, ct, bd, palette=self.palette, trns=self.trns,
                              interlace=interlace)

    def reference(self, mode: an.Mode, depth16: bool = False) -> npt.NDArray[Any]:
        return png_reference(self.samples, self.ct, self.bd, mode, palette=self.palette,
                             trns=self.trns, depth16=depth16)

    def pillow_is_right(self, mode: an.Mode) -> bool:
        """Cases where Pillow 10-13 departs from the PNG specification:
        - 16-bit grey opens as I;16 and convert() clamps to 255 instead of
          taking the high byte;
        - a tRNS key on 2/4/16-bit grey or 16-bit RGB is compared with the
          rescaled 8-bit samples instead of the raw ones;
        - RGB + tRNS -> LA puts R, not the luma, in a transparent pixel."""
        if self.ct == 0 and self.bd == 16:
            return False
        if self.has_trns and self.ct == 0 and self.bd in (2, 4) and "A" in mode:
            return False
        colour_key = self.has_trns and self.ct == 2
        return not (colour_key and (self.bd == 16 and "A" in mode or mode == "LA"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize(
    "ct,bd,trns,interlace", png_cases(),
    ids=lambda v: str(v),
)
def test_png_matches_reference_and_pillow(ct: int, bd: int, trns: bool, interlace: bool,
                                          size: tuple[int, int]) -> None:
    case = PngCase(ct, bd, trns, interlace, *size, seed=ct * 1000 + bd * 10 + size[1])
    for mode in MODES:
        got = an.decode(case.data, mode)
        what = f"ct={ct} bd={bd} trns={trns} adam7={interlace} {mode}"
        assert_same(got, case.reference(mode), what + " vs spec")
        if case.pillow_is_right(mode):
            assert_same(got, pil_decode(case.data, mode), what + " vs Pillow")
        got16 = an.decode(case.data, mode, dtype=np.uint16)
        assert got16.flags.c_contiguous
        assert_same(got16, case.reference(mode, depth16=True), what + " uint16 vs spec")


@pytest.mark.parametrize("interlace", [False, True])
def test_png_16bit_grey_full_depth_matches_pillow(interlace: bool) -> None:
    """Pillow keeps 16-bit grey as I;16: compare the full-depth samples."""
    case = PngCase(0, 16, False, interlace, 33, 65, seed=5)
    im = pil_open(case.data)
    assert im.mode == "I;16"
    got = an.decode(case.data, "L", dtype=np.uint16)
    assert_same(got, np.asarray(im), "16-bit grey")
    assert_same(got, case.samples[:, :, 0], "16-bit grey vs encoded")


@pytest.mark.parametrize("ct", [0, 2, 4, 6])
def test_png_16bit_to_8bit_is_high_byte(ct: int) -> None:
    case = PngCase(ct, 16, False, False, 17, 9, seed=ct)
    full = an.decode(case.data, "RGBA", dtype=np.uint16)
    assert full.dtype == np.uint16
    assert_same(an.decode(case.data, "RGBA"), (full >> 8).astype(np.uint8))


def test_png_palette_with_trns_matches_pillow_rgba() -> None:
    case = PngCase(3, 8, True, False, 33, 65, seed=11)
    assert case.trns is not None and len(case.trns) < 256
    got = an.decode(case.data, "RGBA")
    assert_same(got, pil_decode(case.data, "RGBA"))
    assert (got[:, :, 3] == 255).any() and (got[:, :, 3] != 255).any()


def test_png_grey_and_rgb_trns_make_key_pixels_transparent() -> None:
    for ct in (0, 2):
        case = PngCase(ct, 8, True, False, 33, 65, seed=3)
        alpha = an.decode(case.data, "RGBA")[:, :, 3]
        assert alpha[0, 0] == 0
        key = case.samples[0, 0]
        hit = np.all(case.samples == key, axis=-1)
        assert_same(alpha, np.where(hit, 0, 255).astype(np.uint8))
        # without an alpha channel requested, the key has no effect on colour
        assert_same(an.decode(case.data, "RGB"), case.reference("RGB"))


def test_png_pillow_written_modes_match_pillow() -> None:
    """Files written by Pillow's own encoder (different filters/zlib settings)."""
    rgb = photo(33, 65, 3, seed=9)
    rgba = photo(33, 65, 4, seed=9)
    images = [
        Image.fromarray(rgb),
        Image.fromarray(rgba, "RGBA"),
        Image.fromarray(rgb[:, :, 0]),
        Image.fromarray(rgba[:, :, :2], "LA"),
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=200),
        Image.fromarray(rgb[:, :, 0] > 128),
    ]
    for img in images:
        b = io.BytesIO()
        img.save(b, "PNG", optimize=True)
        data = b.getvalue()
        for mode in MODES:
            assert_same(an.decode(data, mode), pil_decode(data, mode), f"{img.mode} {mode}")


# ---- EXIF orientation -----------------------------------------------------------------


def orient_np(a: npt.NDArray[Any], k: int) -> npt.NDArray[Any]:
    """EXIF orientation k applied to a stored (H, W[, C]) array."""
    ops = {
        1: lambda x: x,
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.swapaxes(0, 1),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: x[::-1, ::-1].swapaxes(0, 1),
        8: lambda x: np.rot90(x, 1),
    }
    return np.ascontiguousarray(ops[k](a))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", range(1, 9))
def test_jpeg_exif_orientation_matches_exif_transpose(k: int, mode: an.Mode) -> None:
    data = make_jpeg("baseline-420", 17, 33, seed=k, exif=exif_bytes(k))
    assert an.probe(data).orientation == k
    im = ImageOps.exif_transpose(pil_open(data))
    assert im is not None
    expected = np.asarray(im.convert("RGB"))
    got = an.decode(data, mode)
    rgb_equiv = an.decode(data, "RGB")
    assert_same(rgb_equiv, expected, f"orientation {k}")
    raw = an.decode(data, mode, orient=False)
    assert raw.shape[:2] == (17, 33)
    assert_same(got, orient_np(raw, k), f"orientation {k} {mode}")
    assert_same(an.decode(data, "RGB", orient=False), pil_decode(data, "RGB"))
    info = an.probe(data)
    assert info.oriented_size == (got.shape[1], got.shape[0])


@pytest.mark.parametrize("k", range(1, 9))
def test_jpeg_orientation_with_scale_matches_pillow(k: int) -> None:
    data = make_jpeg("baseline-444", 40, 70, seed=k, exif=exif_bytes(k))
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (70 // 4, 40 // 4))
    im.load()
    ref = ImageOps.exif_transpose(im)
    assert ref is not None
    assert_same(an.decode(data, scale=Fraction(1, 4)), np.asarray(ref.convert("RGB")))


def tiff_exif(k: int) -> bytes:
    """The TIFF stream an eXIf chunk holds (no "Exif\\0\\0" prefix)."""
    raw = exif_bytes(k)
    return raw[6:] if raw.startswith(b"Exif\x00\x00") else raw


@pytest.mark.parametrize("k", range(1, 9))
def test_png_exif_orientation(k: int) -> None:
    """Pillow writes the eXIf chunk; also a 16-bit file (6- and 8-byte pixels)."""
    rgb = photo(17, 33, 3, seed=k)
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "PNG", exif=exif_bytes(k))
    data = b.getvalue()
    assert an.probe(data).orientation == k
    ref = ImageOps.exif_transpose(pil_open(data))
    assert ref is not None
    assert_same(an.decode(data), np.asarray(ref.convert("RGB")), f"PNG orientation {k}")
    assert_same(an.decode(data, orient=False), rgb)

    deep = noise((9, 13, 4), k, np.uint16, 1 << 16)
    data16 = png_bytes(deep, 6, 16, exif=tiff_exif(k))
    assert an.probe(data16).orientation == k
    assert_same(an.decode(data16, "RGBA", dtype=np.uint16), orient_np(deep, k))
    assert_same(an.decode(data16, "RGB", dtype=np.uint16), orient_np(deep[:, :, :3], k))
    la = an.decode(data16, "LA", dtype=np.uint16)
    assert la.shape == ((13, 9, 2) if k >= 5 else (9, 13, 2))


def test_no_or_bogus_exif_means_orientation_one() -> None:
    plain = make_jpeg("baseline-444", 8, 16)
    assert an.probe(plain).orientation == 1
    for bogus in (0, 9, 65535):
        data = make_jpeg("baseline-444", 8, 16, exif=exif_bytes(bogus))
        assert an.probe(data).orientation == 1
        # An orientation out of 1..8 is a malformed EXIF block: ignored, with
        # a warning (strict=True refuses it; tests/test_tolerance.py).
        with pytest.warns(an.AmuletWarning, match="EXIF"):
            assert an.decode(data).shape == (8, 16, 3)


# ---- scaling -------------------------------------------------------------------------


@pytest.mark.parametrize("denom", [2, 4, 8])
@pytest.mark.parametrize("variant", ["baseline-444", "baseline-420", "progressive-420", "grey",
                                     "cmyk"])
def test_jpeg_scale_matches_pillow_draft(variant: str, denom: int) -> None:
    h, w = 33, 65
    data = make_jpeg(variant, h, w, seed=denom)
    modes: tuple[an.Mode, ...] = ("RGB", "L", "RGBA")
    for mode in modes:
        got = an.decode(data, mode, scale=1 / denom)
        assert got.shape[:2] == (-(-h // denom), -(-w // denom))
        assert_same(got, pil_jpeg(data, mode, denom), f"{variant} 1/{denom} {mode}")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_jpeg_scale_shape_is_ceil(size: tuple[int, int]) -> None:
    h, w = size
    data = make_jpeg("baseline-420", h, w)
    for d in (1, 2, 4, 8):
        assert an.decode(data, scale=Fraction(1, d)).shape == (-(-h // d), -(-w // d), 3)


def test_scale_spellings_agree() -> None:
    data = make_jpeg("baseline-420", 33, 65)
    ref = an.decode(data, scale=0.5)
    for s in ("1/2", Fraction(1, 2), " 1/2 "):
        assert_same(an.decode(data, scale=s), ref)
    assert_same(an.decode(data, scale=1), an.decode(data))


@pytest.mark.parametrize("bad", [1 / 3, 2, 0, -0.5, "half", 0.3, 1 / 16])
def test_invalid_scale_raises(bad: Any) -> None:
    with pytest.raises(an.ValidationError) as ei:
        an.decode(make_jpeg("baseline-444", 8, 8), scale=bad)
    assert ei.value.code == "value.scale" and ei.value.field == "scale"


def expected_denom(ow: int, oh: int, box: tuple[int, int]) -> int:
    """The smallest libjpeg output (largest d) that still covers the box."""
    for d in (8, 4, 2):
        if -(-ow // d) >= box[0] and -(-oh // d) >= box[1]:
            return d
    return 1


BOXES = [(70, 40), (40, 70), (35, 20), (20, 35), (36, 20), (9, 5), (5, 9), (18, 10), (10, 18),
         (1, 1), (1000, 1000), (70, 1), (1, 40)]


@pytest.mark.parametrize("k", [1, 6, 8])
def test_jpeg_max_size_picks_smallest_covering_scale(k: int) -> None:
    data = make_jpeg("baseline-420", 40, 70, exif=exif_bytes(k))
    ow, oh = an.probe(data).oriented_size
    assert (ow, oh) == ((40, 70) if k >= 5 else (70, 40))
    for box in BOXES:
        d = expected_denom(ow, oh, box)
        got = an.decode(data, max_size=box)
        assert got.shape == (-(-oh // d), -(-ow // d), 3), (box, d)
        assert_same(got, an.decode(data, scale=Fraction(1, d)), f"box {box}")
        if box[0] <= ow and box[1] <= oh:
            assert got.shape[1] >= box[0] and got.shape[0] >= box[1]


def test_max_size_with_orient_false_uses_stored_box() -> None:
    data = make_jpeg("baseline-420", 40, 70, exif=exif_bytes(6))
    # stored 70x40: the box (35, 20) fits 1/2 of the stored size
    assert an.decode(data, max_size=(35, 20), orient=False).shape == (20, 35, 3)
    # oriented 40x70: (35, 20) needs full size width-wise
    assert an.decode(data, max_size=(35, 20)).shape == (70, 40, 3)


@pytest.mark.parametrize("bad", [(0, 10), (10, -1), (10,), "ab", (1, 2, 3), None])
def test_invalid_max_size(bad: Any) -> None:
    data = make_jpeg("baseline-444", 8, 8)
    if bad is None:  # scale and max_size together
        with pytest.raises(an.ValidationError) as ei:
            an.decode(data, scale=0.5, max_size=(4, 4))
        assert ei.value.field == "max_size"
        return
    with pytest.raises(an.ValidationError) as ei:
        an.decode(data, max_size=bad)
    assert ei.value.field == "max_size"


@pytest.mark.parametrize("denom", [2, 4, 8])
@pytest.mark.parametrize("size", [(33, 65), (17, 9), (1, 13), (8, 8)], ids=str)
def test_png_scale_is_block_mean(size: tuple[int, int], denom: int) -> None:
    h, w = size
    case = PngCase(6, 16, False, False, h, w, seed=denom)
    modes: tuple[an.Mode, ...] = ("RGB", "RGBA", "L", "LA")
    for mode in modes:
        for dtype in (np.uint8, np.uint16):
            full = an.decode(case.data, mode, dtype=dtype)
            got = an.decode(case.data, mode, dtype=dtype, scale=Fraction(1, denom))
            assert got.shape[:2] == (-(-h // denom), -(-w // denom))
            assert_same(got, block_mean(full, denom), f"{mode} {np.dtype(dtype)} 1/{denom}")


def test_png_max_size_and_orientation_with_scale() -> None:
    rgb = photo(40, 70, 3, seed=1)
    data = png_bytes(rgb, 2, 8, exif=tiff_exif(6))
    got = an.decode(data, max_size=(10, 18))  # oriented 40x70 -> 1/4 covers 10x18
    assert_same(got, orient_np(block_mean(rgb, 4), 6))
    assert got.shape == (18, 10, 3)


# ---- out= ------------------------------------------------------------------------------


def out_cases() -> list[tuple[bytes, an.Mode, Any]]:
    jpg = make_jpeg("baseline-420", 33, 65)
    png = PngCase(6, 16, False, True, 17, 9).data
    return [(jpg, "RGB", np.uint8), (jpg, "L", np.uint8), (jpg, "LA", np.uint8),
            (png, "RGBA", np.uint8), (png, "L", np.uint16), (png, "BGR", np.uint16)]


def test_out_receives_identical_pixels() -> None:
    for data, mode, dtype in out_cases():
        ref = an.decode(data, mode, dtype=dtype)
        out = np.full(ref.shape, 77, dtype)
        res = an.decode(data, mode, dtype=dtype, out=out)
        assert np.shares_memory(res, out)
        assert_same(out, ref, f"out {mode}")
    # with orientation and scaling too
    data = make_jpeg("baseline-420", 40, 70, exif=exif_bytes(6))
    ref = an.decode(data, scale=0.5)
    out = np.zeros_like(ref)
    an.decode(data, scale=0.5, out=out)
    assert_same(out, ref)
    # tolerant decoding into a dirty out: what was not decoded is zero, not stale
    rgb = photo(200, 120, 3, seed=4)
    png = png_bytes(rgb, 2, 8)
    cut = png[: len(png) // 2]
    with pytest.warns(an.AmuletWarning):
        fresh = an.decode(cut, strict=False)
    dirty = np.full(rgb.shape, 77, np.uint8)
    with pytest.warns(an.AmuletWarning):
        an.decode(cut, strict=False, out=dirty)
    assert_same(dirty, fresh)
    assert (dirty[-1] == 0).all()


def test_out_validation() -> None:
    data = make_jpeg("baseline-420", 33, 65)
    good = np.zeros((33, 65, 3), np.uint8)
    storage = np.zeros(len(data) + good.nbytes, np.uint8)
    storage[: len(data)] = np.frombuffer(data, np.uint8)
    readonly = good.copy()
    readonly.flags.writeable = False
    bad_outs: list[Any] = [
        np.zeros((65, 33, 3), np.uint8),                 # transposed shape
        np.zeros((33, 65, 4), np.uint8),                 # channels
        np.zeros((33, 65), np.uint8),                    # 2-D for RGB
        np.zeros((33, 65, 3), np.uint16),                # dtype
        np.zeros((33, 65, 3), np.int8),
        np.zeros((33, 65, 3), np.float32),
        np.zeros((33, 130, 3), np.uint8)[:, ::2],        # not contiguous
        np.asfortranarray(np.zeros((33, 65, 3), np.uint8)),
        readonly,
        bytearray(good.nbytes),                          # not an ndarray
    ]
    for out in bad_outs:
        with pytest.raises(an.ValidationError) as ei:
            an.decode(data, out=out)
        assert ei.value.code == "value.out" and ei.value.field == "out", type(out)
    # out overlapping the input buffer
    src = storage[: len(data)]
    overlapping = storage[len(data) - 10 : len(data) - 10 + good.nbytes].reshape(good.shape)
    with pytest.raises(an.ValidationError) as ei:
        an.decode(src, out=overlapping)
    assert ei.value.code == "value.out" and ei.value.field == "out"
    # L mode wants 2-D
    with pytest.raises(an.ValidationError):
        an.decode(data, "L", out=np.zeros((33, 65, 1), np.uint8))
    # 16-bit must be native byte order
    png = PngCase(0, 16, False, False, 4, 4).data
    with pytest.raises(an.ValidationError) as ei:
        an.decode(png, "L", dtype=np.uint16, out=np.zeros((4, 4), ">u2"))
    assert ei.value.code == "value.out"
    # a rejected out is left untouched
    assert (good == 0).all()


# ---- input types -------------------------------------------------------------------------


def test_input_types(tmp_path: Path) -> None:
    data = make_jpeg("baseline-420", 17, 9)
    ref = an.decode(data)
    path = tmp_path / "img.jpg"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert_same(an.decode(mm), ref, "mmap")
        # a buffer, not a file: used in place, its position untouched, reusable
        assert mm.tell() == 0
        assert an.probe(mm).width == 9
        assert_same(an.decode(mm), ref, "mmap again")
    with open(path, "rb") as f:
        assert_same(an.decode(f), ref, "open file")
    padded = b"xx" + data
    sources: dict[str, Any] = {
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "memoryview slice": memoryview(padded)[2:],
        "ndarray": np.frombuffer(data, np.uint8),
        "ndarray copy": np.array(bytearray(data), np.uint8),
        "BytesIO": io.BytesIO(data),
    }
    for name, src in sources.items():
        assert_same(an.decode(src), ref, name)
    assert an.probe(io.BytesIO(data)).height == 17
    assert_same(an.decode_file(str(path)), ref, "decode_file(str)")
    assert_same(an.decode_file(path, "L"), an.decode(data, "L"), "decode_file(Path)")
    assert_same(an.decode_file(path, scale=0.5), an.decode(data, scale=0.5))


def test_bad_input_types(tmp_path: Path) -> None:
    data = make_jpeg("baseline-444", 8, 8)
    bads: list[Any] = ["img.jpg", Path("img.jpg"), 123, None, [1, 2, 3],
                       memoryview(data)[::2], np.frombuffer(data * 2, np.uint8)[::2]]
    for bad in bads:
        with pytest.raises(an.ValidationError) as ei:
            an.decode(bad)
        assert ei.value.field == "data", repr(bad)
    text = tmp_path / "t.txt"
    text.write_text("hello")
    with open(text) as f, pytest.raises(an.ValidationError) as ei:
        an.decode(f)  # type: ignore[arg-type]
    assert ei.value.code == "input.type"
    with pytest.raises(an.ValidationError) as ei:
        an.decode(b"")
    assert ei.value.code == "input.empty"
    with pytest.raises(FileNotFoundError):
        an.decode_file(tmp_path / "missing.png")


def test_decode_jpeg_and_decode_png_check_format() -> None:
    jpg = make_jpeg("baseline-444", 8, 8)
    png = PngCase(2, 8, False, False, 8, 8).data
    assert an.decode_jpeg(jpg).shape == (8, 8, 3)
    assert an.decode_png(png, "RGBA").shape == (8, 8, 4)
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: an.decode_jpeg(png), "png"), (lambda: an.decode_png(jpg), "jpeg")]
    for call, fmt in calls:
        with pytest.raises(an.UnsupportedFormatError) as ei:
            call()
        assert ei.value.code == "format.mismatch"
        assert ei.value.format == fmt


def test_invalid_mode_and_dtype() -> None:
    data = make_jpeg("baseline-444", 8, 8)
    for mode in ("rgb", "CMYK", "P", "", None):
        with pytest.raises(an.ValidationError) as ei:
            an.decode(data, mode)  # type: ignore[arg-type]
        assert ei.value.code == "value.mode" and ei.value.field == "mode"
    for dtype in (np.float32, np.int16, "u4", "nonsense"):
        with pytest.raises(an.ValidationError) as ei:
            an.decode(data, dtype=dtype)
        assert ei.value.field == "dtype"


# ---- probe -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant,channels,progressive",
    [("baseline-444", 3, False), ("baseline-420", 3, False), ("progressive-420", 3, True),
     ("grey", 1, False), ("grey-progressive", 1, True), ("cmyk", 4, False)],
)
def test_probe_jpeg(variant: str, channels: int, progressive: bool) -> None:
    data = make_jpeg(variant, 33, 65, exif=exif_bytes(3))
    info = an.probe(data)
    assert info == an.ImageInfo("jpeg", 65, 33, channels, 8, progressive, 3)
    assert info.size == (65, 33)
    assert progressive == ("progressive" in pil_open(data).info)


@pytest.mark.parametrize("ct,bd,trns,interlace", png_cases(), ids=lambda v: str(v))
def test_probe_png(ct: int, bd: int, trns: bool, interlace: bool) -> None:
    case = PngCase(ct, bd, trns, interlace, 17, 9)
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}[ct] + (1 if trns else 0)
    assert an.probe(case.data) == an.ImageInfo("png", 9, 17, channels, bd, interlace, 1)


def other_formats() -> dict[str, bytes]:
    img = Image.fromarray(photo(16, 16, 3))
    out: dict[str, bytes] = {}
    for fmt, name in (("GIF", "gif"), ("TIFF", "tiff"), ("BMP", "bmp"), ("ICO", "ico"),
                      ("WEBP", "webp")):
        b = io.BytesIO()
        try:
            img.save(b, fmt)
        except (KeyError, OSError):  # Pillow built without this codec
            continue
        out[name] = b.getvalue()
    out["tiff-be"] = b"MM\x00*\x00\x00\x00\x08" + bytes(64)
    out["heic"] = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(32)
    out["unknown"] = b"hello, world! this is not an image at all"
    out["unknown-short"] = b"\xff\xd8"  # two bytes of JPEG magic are not enough
    return out


def test_probe_and_decode_reject_other_formats() -> None:
    formats = other_formats()
    assert {"gif", "tiff", "bmp", "ico", "heic", "unknown"} <= set(formats)
    for name, data in formats.items():
        expect = name.split("-")[0]
        if expect in ("gif", "webp", "heic"):
            continue  # decoded since issue 15 (tests/test_formats.py)
        for call in (an.probe, an.decode, an.decode_png):
            with pytest.raises(an.UnsupportedFormatError) as ei:
                call(data)
            assert ei.value.format == expect, (name, call)
            assert ei.value.code == "format.unsupported"
            assert isinstance(ei.value, an.ValidationError)


def test_probe_reads_only_the_header() -> None:
    data = make_jpeg("progressive-420", 33, 65, exif=exif_bytes(8))
    info = an.probe(data)
    sof = data.find(b"\xff\xc2")
    sof_end = sof + 2 + struct.unpack(">H", data[sof + 2 : sof + 4])[0]
    sos = data.find(b"\xff\xda")
    for cut in (sof_end, sos, sos + 2, sos + 12):
        assert an.probe(data[:cut]) == info, cut
    with pytest.raises(an.DecodeError):
        an.decode(data[:sos + 12])
    png = PngCase(2, 8, True, True, 17, 9).data
    head = png[: png.find(b"IDAT") - 4]
    assert an.probe(head) == an.probe(png)
    assert an.probe(png[:33]).size == (9, 17)  # signature + IHDR only
    with pytest.raises(an.DecodeError) as ei:
        an.decode(head)
    assert ei.value.code == "decode.truncated"


def test_probe_truncated_header_raises() -> None:
    data = make_jpeg("baseline-444", 8, 8)
    sof = data.find(b"\xff\xc0")
    for cut in (3, 10, sof + 4):
        with pytest.raises(an.DecodeError):
            an.probe(data[:cut])
    with pytest.raises(an.DecodeError):
        an.probe(PNG_SIG + b"\x00\x00")


# ---- limits -------------------------------------------------------------------------------


def huge_png(w: int, h: int) -> bytes:
    """A valid (CRC-correct) IHDR claiming w x h, one tiny IDAT, IEND."""
    return (PNG_SIG + png_ihdr(w, h, 8, 2) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


def huge_jpeg(w: int, h: int) -> bytes:
    data = bytearray(make_jpeg("baseline-444", 16, 16))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def test_huge_claimed_png_is_refused_before_allocating() -> None:
    data = huge_png(100_000, 100_000)
    assert len(data) < 1024
    assert an.probe(data).size == (100_000, 100_000)
    tracemalloc.start()
    try:
        with pytest.raises(an.ImageTooLargeError) as ei:
            an.decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # no output array was allocated
    e = ei.value
    assert isinstance(e, an.SecurityError)
    assert (e.limit_name, e.actual, e.limit) == ("max_width", 100_000, 32768)
    assert e.code == "limits.width"
    with pytest.raises(an.ImageTooLargeError) as ei:
        an.decode(data, limits=an.Limits(max_width=0, max_height=0))
    e = ei.value
    assert (e.limit_name, e.actual, e.limit) == ("max_pixels", 10**10, 100_000_000)
    assert e.code == "limits.pixels"


def test_huge_claimed_jpeg_is_refused() -> None:
    data = huge_jpeg(65535, 65535)
    assert an.probe(data).size == (65535, 65535)
    with pytest.raises(an.ImageTooLargeError) as ei:
        an.decode(data)
    assert (ei.value.limit_name, ei.value.actual) == ("max_width", 65535)
    with pytest.raises(an.ImageTooLargeError) as ei:
        an.decode(data, limits=an.Limits(max_width=0, max_height=0))
    assert (ei.value.limit_name, ei.value.actual, ei.value.limit) == (
        "max_pixels", 65535 * 65535, 100_000_000)
    with pytest.raises(an.ImageTooLargeError) as ei:
        an.decode(huge_jpeg(100, 40000))
    assert (ei.value.limit_name, ei.value.actual) == ("max_height", 40000)


def test_per_call_limits() -> None:
    data = make_jpeg("baseline-444", 33, 65)
    ok = [an.Limits(max_pixels=33 * 65), an.Limits(max_width=65, max_height=33),
          an.Limits(max_bytes=len(data)), an.Limits(0, 0, 0, 0, 0)]
    for lim in ok:
        assert an.decode(data, limits=lim).shape == (33, 65, 3)
    bad = [
        (an.Limits(max_pixels=33 * 65 - 1), "max_pixels", 33 * 65, 33 * 65 - 1),
        (an.Limits(max_width=64), "max_width", 65, 64),
        (an.Limits(max_height=32), "max_height", 33, 32),
        (an.Limits(max_bytes=len(data) - 1), "max_bytes", len(data), len(data) - 1),
    ]
    for lim, name, actual, limit in bad:
        for src in (data, io.BytesIO(data)):
            with pytest.raises(an.ImageTooLargeError) as ei:
                an.decode(src, limits=lim)
            assert (ei.value.limit_name, ei.value.actual, ei.value.limit) == (name, actual, limit)


def test_decode_file_checks_max_bytes_first(tmp_path: Path) -> None:
    data = make_jpeg("baseline-444", 33, 65)
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    with pytest.raises(an.ImageTooLargeError) as ei:
        an.decode_file(path, limits=an.Limits(max_bytes=100))
    assert (ei.value.limit_name, ei.value.actual, ei.value.limit) == ("max_bytes", len(data), 100)


def test_max_jpeg_scans() -> None:
    prog = make_jpeg("progressive-420", 33, 65)
    nscans = prog.count(b"\xff\xda")
    assert nscans > 3
    assert an.decode(prog, limits=an.Limits(max_jpeg_scans=nscans)).shape == (33, 65, 3)
    with pytest.raises(an.ImageTooLargeError) as ei:
        an.decode(prog, limits=an.Limits(max_jpeg_scans=2))
    assert ei.value.limit_name == "max_jpeg_scans" and ei.value.limit == 2
    assert ei.value.code == "limits.jpeg_scans"
    base = make_jpeg("baseline-420", 33, 65)
    assert an.decode(base, limits=an.Limits(max_jpeg_scans=1)).shape == (33, 65, 3)


def test_process_default_limits() -> None:
    data = make_jpeg("baseline-444", 33, 65)
    original = an.get_default_limits()
    assert original == an.Limits()
    tight = an.Limits(max_pixels=100)
    previous = an.set_default_limits(tight)
    try:
        assert previous == original
        assert an.get_default_limits() is tight
        calls: list[Callable[[], object]] = [lambda: an.decode(data), lambda: an.decode_jpeg(data)]
        for call in calls:
            with pytest.raises(an.ImageTooLargeError) as ei:
                call()
            assert ei.value.limit == 100
        # a per-call Limits replaces the default entirely
        assert an.decode(data, limits=an.Limits()).shape == (33, 65, 3)
    finally:
        assert an.set_default_limits(previous) is tight
    assert an.decode(data).shape == (33, 65, 3)
    with pytest.raises(an.ValidationError):
        an.set_default_limits((1, 2, 3, 4, 5))  # type: ignore[arg-type]


def test_limits_defaults_are_safe() -> None:
    lim = an.Limits()
    assert lim.max_bytes == 64 << 20
    assert lim.max_pixels == 100_000_000
    assert 0 < lim.max_width <= 65535 and 0 < lim.max_height <= 65535
    assert 0 < lim.max_jpeg_scans <= 1000


@pytest.mark.parametrize(
    "field,value",
    [("max_pixels", -1), ("max_bytes", 2**64), ("max_width", 2**32), ("max_height", -5),
     ("max_jpeg_scans", 1.5), ("max_pixels", "10"), ("max_width", True), ("max_bytes", None)],
)
def test_invalid_limits(field: str, value: Any) -> None:
    with pytest.raises(an.ValidationError) as ei:
        an.Limits(**{field: value})
    assert ei.value.field == field
    assert isinstance(ei.value, ValueError)


def test_limits_argument_must_be_limits() -> None:
    with pytest.raises(an.ValidationError) as ei:
        an.decode(make_jpeg("baseline-444", 8, 8), limits=(0, 0, 0, 0, 0))  # type: ignore
    assert ei.value.field == "limits"


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AMULET_MAX")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_env_limits_are_read_at_import() -> None:
    code = (
        "import amulet_native as an, numpy as np\n"
        "print(an.get_default_limits().max_pixels, an.get_default_limits().max_width)\n"
        "try:\n"
        "    an.decode(bytes.fromhex({!r}))\n"
        "except an.ImageTooLargeError as e:\n"
        "    print(e.limit_name, e.limit)\n"
    ).format(make_jpeg("baseline-444", 64, 64).hex())
    r = run_python(code, AMULET_MAX_PIXELS="1234", AMULET_MAX_WIDTH="5000")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1234", "5000", "max_pixels", "1234"]
    assert r.stderr == ""
    bad = run_python("import amulet_native", AMULET_MAX_PIXELS="lots")
    assert bad.returncode != 0
    assert "AMULET_MAX_PIXELS" in bad.stderr and "ValidationError" in bad.stderr


# ---- damaged data, strict and tolerant ---------------------------------------------------


def test_truncated_jpeg() -> None:
    data = make_jpeg("baseline-420", 64, 48, seed=3)
    full = an.decode(data)
    cut = data[: int(len(data) * 0.7)]
    with pytest.raises(an.DecodeError) as ei:
        an.decode(cut)
    assert ei.value.code == "decode.truncated"
    assert ei.value.stage == "decode" and ei.value.context["format"] == "jpeg"
    with pytest.warns(an.AmuletWarning, match="jpeg"):
        got = an.decode(cut, strict=False)
    assert got.shape == full.shape
    assert_same(got[:16], full[:16], "rows before the cut")
    assert not np.array_equal(got, full)
    # missing EOI only
    with pytest.raises(an.DecodeError):
        an.decode(data[:-2])
    with pytest.warns(an.AmuletWarning):
        assert_same(an.decode(data[:-2], strict=False), full)


def test_corrupt_jpeg() -> None:
    data = make_jpeg("baseline-420", 64, 48, seed=3)
    sos = data.find(b"\xff\xda")
    mid = (sos + len(data)) // 2
    bad = data[:mid] + b"\xff\xd3" + data[mid:]  # a stray restart marker
    with pytest.raises(an.DecodeError) as ei:
        an.decode(bad)
    assert ei.value.code in ("decode.corrupt", "decode.truncated")
    with pytest.warns(an.AmuletWarning):
        assert an.decode(bad, strict=False).shape == (64, 48, 3)


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("size", [(8, 8), (200, 200)], ids=str)
def test_truncated_png(size: tuple[int, int], interlace: bool) -> None:
    rgb = photo(*size, 3, seed=1)
    data = png_bytes(rgb, 2, 8, interlace=interlace)
    idat = data.find(b"IDAT")
    cut = data[: (idat + len(data)) // 2]
    with pytest.raises(an.DecodeError) as ei:
        an.decode(cut)
    assert ei.value.code == "decode.truncated"
    assert ei.value.context["format"] == "png"
    with pytest.warns(an.AmuletWarning, match="png"):
        got = an.decode(cut, strict=False)
    assert got.shape == rgb.shape
    if not interlace:
        # complete rows first, zeros after
        good = 0
        while good < size[0] and np.array_equal(got[good], rgb[good]):
            good += 1
        assert (got[good + 1 :] == 0).all()
        if size[0] > 100:
            assert good > 10
    # the file without IEND: pixels complete, strict mode still complains
    no_iend = data[:-12]
    with pytest.raises(an.DecodeError):
        an.decode(no_iend)
    assert_same(an.decode(no_iend, strict=False), rgb)


def test_corrupt_png() -> None:
    rgb = photo(16, 16, 3, seed=2)
    data = bytearray(png_bytes(rgb, 2, 8))
    idat = data.find(b"IDAT")
    data[idat + 20] ^= 0xFF  # CRC no longer matches
    with pytest.raises(an.DecodeError) as ei:
        an.decode(bytes(data))
    assert ei.value.code == "decode.corrupt"
    assert ei.value.stage == "decode"


def test_nothing_reaches_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    jpg = make_jpeg("progressive-420", 64, 48)
    png = png_bytes(photo(64, 48, 3), 2, 8)
    damaged = [jpg[: len(jpg) // 2], jpg[:-2], jpg[:600] + b"\xff\xd3" + jpg[600:],
               png[: len(png) // 2], png[:-12], b"\xff\xd8\xff" + bytes(40)]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for data in damaged:
            for strict in (True, False):
                try:
                    an.decode(data, strict=strict)
                except an.AmuletError:
                    pass
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


# ---- threads -------------------------------------------------------------------------------


def test_threads_give_serial_results() -> None:
    jobs: list[tuple[bytes, dict[str, Any]]] = [
        (make_jpeg("baseline-420", 96, 128, seed=1), {}),
        (make_jpeg("progressive-444", 80, 72, seed=2), {"mode": "BGR"}),
        (make_jpeg("cmyk", 40, 56, seed=3), {"mode": "RGBA"}),
        (make_jpeg("baseline-422", 100, 60, seed=4, exif=exif_bytes(6)), {"scale": 0.5}),
        (PngCase(3, 4, True, True, 64, 80, seed=5).data, {"mode": "RGBA"}),
        (PngCase(6, 16, False, False, 70, 50, seed=6).data, {"dtype": np.uint16}),
        (png_bytes(photo(90, 110, 3, seed=7), 2, 8), {"mode": "L", "scale": 0.25}),
    ]
    expected = [an.decode(data, **kw) for data, kw in jobs]
    n_threads, iterations = 8, 60
    errors: list[str] = []
    barrier = threading.Barrier(n_threads)

    def worker(tid: int) -> None:
        rng = np.random.default_rng(tid)
        barrier.wait()
        for it in range(iterations):
            # half the threads hammer one image, the others mix them all
            i = 0 if tid % 2 == 0 else int(rng.integers(len(jobs)))
            data, kw = jobs[i]
            try:
                got = an.decode(data, **kw)
            except Exception as e:  # noqa: BLE001 - reported below, never swallowed
                errors.append(f"thread {tid} iteration {it}: {e!r}")
                return
            if got.shape != expected[i].shape or not np.array_equal(got, expected[i]):
                errors.append(f"thread {tid} iteration {it}: job {i} differs")
                return

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
