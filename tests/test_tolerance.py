"""Real-world damage: the three-level policy of ``strict`` and orientation sources.

Pillow is the oracle: every JPEG/PNG of Wuffs' test data that Pillow decodes,
we decode (default policy) to the same pixels after orientation, or the
difference is listed below with its reason.  Crafted files cover each case of
the policy table in :func:`amulet_native.decode`:

=========================================  ==========  ==========  ============
damage                                     None        True        False
=========================================  ==========  ==========  ============
junk bytes between JPEG header markers     ok + warn   error       ok + warn
APPn/COM with a length below 2             ok + warn   error       ok + warn
malformed EXIF (orientation ignored)       ok + warn   error       ok + warn
ancillary PNG chunk with a bad CRC         ok + warn   error       ok + warn
fill bytes (0xFF) between JPEG markers     ok          ok          ok
corrupt JPEG entropy data, truncation,     error       error       ok + warn
bytes left over after a scan
critical PNG chunk CRC, bad Adler-32       error       error       ok (+ warn)
=========================================  ==========  ==========  ============
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import (
    PNG_SIG,
    corpus_subdir,
    exif_bytes,
    jpeg_bytes,
    photo,
    png_bytes,
    png_chunk,
)
from PIL import Image, ImageOps

import amulet_native as an

WUFFS = corpus_subdir("wuffs")

# Wuffs files where our pixels differ from Pillow's, and why.
#  - peacock.progressive.scanNNN: progressive files whose later scans were cut
#    off (an EOI follows scan N).  libjpeg fills the missing AC coefficients by
#    block smoothing, whose implementation differs between the system
#    libjpeg-turbo we link (2.1.5) and the 3.x one Pillow's wheels bundle: up
#    to 9 levels (scan000, DC only), 2 for later scans; the complete file
#    (peacock.progressive.jpeg) matches exactly.
SMOOTHING_DIFF = {f"peacock.progressive.scan00{i}.jpeg": 9 if i == 0 else 2 for i in range(9)}
# Files Pillow refuses, with what we do by default (strict=False then decodes
# them: see test_wuffs_truncated_match_djpeg).
PILLOW_REFUSES = {
    "hippopotamus.interlaced.truncated.png": "decode.truncated",
    "hippopotamus.regular.truncated.png": "decode.truncated",
    "peacock.default.truncated.jpeg": "decode.truncated",
    "peacock.progressive.truncated.jpeg": "decode.truncated",
    # Pillow's exif_transpose raises on the bogus eXIf ("LoremIpsum"); we
    # ignore it with a warning and decode the 1x1 image.
    "artificial-png/exif.png": "",
}


def wuffs_files() -> list[Path]:
    if not WUFFS.is_dir():
        return []
    return sorted(p for p in WUFFS.rglob("*") if p.suffix in (".jpeg", ".png"))


def pillow_pixels(data: bytes) -> npt.NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def decode_quiet(data: bytes, **kw: Any) -> tuple[npt.NDArray[Any], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arr = an.decode(data, **kw)
    return arr, [str(w.message) for w in caught if issubclass(w.category, an.AmuletWarning)]


@pytest.mark.corpus
@pytest.mark.parametrize("path", wuffs_files(), ids=lambda p: str(p.relative_to(WUFFS)))
def test_wuffs_matches_pillow(path: Path) -> None:
    name = str(path.relative_to(WUFFS))
    data = path.read_bytes()
    if name in PILLOW_REFUSES:
        code = PILLOW_REFUSES[name]
        if code:
            with pytest.raises(an.DecodeError) as exc:
                an.decode(data)
            assert exc.value.code == code
        else:
            arr, warned = decode_quiet(data)
            assert warned and arr.size > 0
        return
    ref = pillow_pixels(data)
    arr, _ = decode_quiet(data)
    assert arr.shape == ref.shape
    diff = int(np.abs(arr.astype(np.int16) - ref).max())
    assert diff <= SMOOTHING_DIFF.get(name, 0), (name, diff)


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["peacock.default.truncated", "peacock.progressive.truncated"])
def test_wuffs_truncated_match_djpeg(name: str) -> None:
    """strict=False returns what libjpeg's djpeg shows for a truncated file
    (Wuffs ships djpeg's output; progressive: the smoothing difference above)."""
    if not WUFFS.is_dir():
        pytest.skip("no corpus")
    data = (WUFFS / f"{name}.jpeg").read_bytes()
    arr, warned = decode_quiet(data, strict=False)
    assert warned
    ref = np.asarray(Image.open(WUFFS / f"{name}.decoded-by-djpeg.png").convert("RGB"))
    assert int(np.abs(arr.astype(np.int16) - ref).max()) <= (2 if "progressive" in name else 0)


@pytest.mark.corpus
def test_wuffs_bad_comment_length_policy() -> None:
    if not WUFFS.is_dir():
        pytest.skip("no corpus")
    data = (WUFFS / "artificial-jpeg" / "hippopotamus-bad-comment-length.jpeg").read_bytes()
    arr, warned = decode_quiet(data)
    assert warned
    assert np.array_equal(arr, pillow_pixels(data))
    with pytest.raises(an.DecodeError):
        an.decode(data, strict=True)


# ---- crafted JPEGs -----------------------------------------------------------------

IMG = photo(32, 48, 3, seed=3)


def base_jpeg() -> bytes:
    return jpeg_bytes(IMG, quality=92)


def insert_after_app0(data: bytes, extra: bytes) -> bytes:
    assert data[2:4] == b"\xff\xe0"
    end = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:end] + extra + data[end:]


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def tiff(orientation: int) -> bytes:
    return exif_bytes(orientation)[6:]  # without the "Exif\0\0" of JPEG's APP1


def assert_policy_lossless(data: bytes, clean: npt.NDArray[Any], tolerant_sees: bool = True) -> None:
    """Default and strict=False: the clean pixels with a warning; True: refused.
    (strict=False never reads past the image data: tolerant_sees=False.)"""
    for strict in (None, False):
        arr, warned = decode_quiet(data, strict=strict)
        assert warned or (strict is False and not tolerant_sees), strict
        assert np.array_equal(arr, clean), strict
    with pytest.raises(an.DecodeError) as exc:
        an.decode(data, strict=True)
    assert exc.value.code == "decode.corrupt"


def test_jpeg_junk_between_markers() -> None:
    clean = an.decode(base_jpeg())
    for junk in (b"\x00", b"garbage!", b"\x12\x34\xff\x00\x56"):
        assert_policy_lossless(insert_after_app0(base_jpeg(), junk), clean)


def test_jpeg_fill_bytes_are_no_damage() -> None:
    data = insert_after_app0(base_jpeg(), b"\xff\xff\xff")
    arr, warned = decode_quiet(data, strict=True)
    assert not warned and np.array_equal(arr, an.decode(base_jpeg()))


@pytest.mark.parametrize("marker", [0xFE, 0xE5])
@pytest.mark.parametrize("length", [0, 1])
def test_jpeg_segment_length_below_two(marker: int, length: int) -> None:
    """libjpeg skips nothing and resyncs at the next marker (extraneous bytes)."""
    bad = bytes([0xFF, marker]) + struct.pack(">H", length) + b"a comment"
    assert_policy_lossless(insert_after_app0(base_jpeg(), bad), an.decode(base_jpeg()))


def test_jpeg_bytes_left_after_the_scan_are_an_error_by_default() -> None:
    """After entropy-coded data, leftover bytes mean the decoder lost step with
    its data (how libjpeg-turbo notices most corrupt scans)."""
    data = base_jpeg()
    assert data.endswith(b"\xff\xd9")
    data = data[:-2] + b"tail junk" + data[-2:]
    for strict in (None, True):
        with pytest.raises(an.DecodeError, match="extraneous"):
            an.decode(data, strict=strict)
    assert np.array_equal(an.decode(data, strict=False), an.decode(base_jpeg()))


def test_jpeg_malformed_exif_ignored_with_warning() -> None:
    good = tiff(6)
    for bad in (b"XX" + good[2:], good[:10], good[:4] + b"\xff\xff\xff\x00" + good[8:]):
        data = insert_after_app0(base_jpeg(), segment(0xE1, b"Exif\x00\x00" + bad))
        assert an.probe(data).orientation == 1
        assert_policy_lossless(data, an.decode(base_jpeg()))


def test_jpeg_corrupt_entropy_data_is_an_error_by_default() -> None:
    data = bytearray(base_jpeg())
    sos = data.index(b"\xff\xda")
    for k in range(sos + 40, len(data) - 40, 97):
        data[k] ^= 0x5A
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pillow_ok = pillow_pixels(bytes(data))  # Pillow fills it in silently
    for strict in (None, True):
        with pytest.raises(an.DecodeError):
            an.decode(bytes(data), strict=strict)
    # Tolerant mode stops after the last row: when libjpeg noticed nothing
    # while decoding (the usual case), there is nothing to warn about.
    arr, _ = decode_quiet(bytes(data), strict=False)
    assert np.array_equal(arr, pillow_ok)


def test_jpeg_truncation_is_an_error_by_default() -> None:
    data = base_jpeg()[:-300]
    for strict in (None, True):
        with pytest.raises(an.DecodeError) as exc:
            an.decode(data, strict=strict)
        assert exc.value.code == "decode.truncated"
    assert decode_quiet(data, strict=False)[1]


def xmp_packet(orientation: int, attr: bool = True) -> bytes:
    tag = (f'tiff:Orientation="{orientation}"' if attr
           else f"<tiff:Orientation>{orientation}</tiff:Orientation>")
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-'
        'rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
        f"{tag if attr else ''}>{'' if attr else tag}</rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()


@pytest.mark.parametrize("attr", [True, False])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_jpeg_xmp_orientation_as_pillow(orientation: int, attr: bool) -> None:
    app1 = segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp_packet(orientation, attr))
    data = insert_after_app0(base_jpeg(), app1)
    assert an.probe(data).orientation == orientation
    assert np.array_equal(an.decode(data), pillow_pixels(data))


def test_jpeg_exif_orientation_wins_over_xmp() -> None:
    app1 = segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp_packet(8))
    exif = segment(0xE1, exif_bytes(3))
    data = insert_after_app0(base_jpeg(), exif + app1)
    assert an.probe(data).orientation == 3
    assert np.array_equal(an.decode(data), pillow_pixels(data))


# ---- crafted PNGs ------------------------------------------------------------------

PX = photo(20, 30, 3, seed=5)


def split_iend(data: bytes) -> tuple[bytes, bytes]:
    assert data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND"
    return data[:-12], data[-12:]


def bad_crc_chunk(kind: bytes, payload: bytes) -> bytes:
    c = png_chunk(kind, payload)
    return c[:-4] + bytes(b ^ 0xFF for b in c[-4:])


@pytest.mark.parametrize("where", ["before-idat", "after-idat"])
@pytest.mark.parametrize("interlace", [False, True])
def test_png_ancillary_bad_crc_skipped_with_warning(where: str, interlace: bool) -> None:
    clean = png_bytes(PX, 2, interlace=interlace)
    bad = bad_crc_chunk(b"tEXt", b"Comment\x00hello")
    if where == "before-idat":
        data = clean[:33] + bad + clean[33:]
    else:
        body, iend = split_iend(clean)
        data = body + bad + iend
    assert_policy_lossless(data, an.decode(clean), tolerant_sees=where == "before-idat")


def test_png_critical_bad_crc_is_an_error() -> None:
    data = bytearray(png_bytes(PX, 2))
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4:idat])[0]
    data[idat + 4 + length] ^= 0xFF  # the IDAT CRC
    for strict in (None, True):
        with pytest.raises(an.DecodeError) as exc:
            an.decode(bytes(data), strict=strict)
        assert exc.value.code == "decode.corrupt"


def test_png_bad_adler32_is_an_error_by_default() -> None:
    raw = png_bytes(PX, 2)
    idat = raw.index(b"IDAT")
    length = struct.unpack(">I", raw[idat - 4:idat])[0]
    payload = bytearray(raw[idat + 4:idat + 4 + length])
    payload[-1] ^= 0x01  # the Adler-32's last byte
    data = raw[:idat - 4] + png_chunk(b"IDAT", bytes(payload)) + raw[idat + 8 + length:]
    for strict in (None, True):
        with pytest.raises(an.DecodeError, match="check"):
            an.decode(data, strict=strict)
    assert np.array_equal(an.decode(data, strict=False), PX)  # no row lost


@pytest.mark.parametrize("orientation", [2, 6, 8])
def test_png_exif_after_idat_as_pillow(orientation: int) -> None:
    data = png_bytes(PX, 2, exif=tiff(orientation), exif_after_idat=True)
    assert an.probe(data).orientation == orientation
    assert np.array_equal(an.decode(data), pillow_pixels(data))
    assert np.array_equal(an.decode(data, orient=False), PX)


@pytest.mark.parametrize("kind", [b"iTXt", b"tEXt"])
def test_png_xmp_orientation_as_pillow(kind: bytes) -> None:
    key = b"XML:com.adobe.xmp\x00"
    payload = key + (b"\x00\x00\x00\x00" if kind == b"iTXt" else b"") + xmp_packet(6)
    body, iend = split_iend(png_bytes(PX, 2))
    data = body + png_chunk(kind, payload) + iend
    assert an.probe(data).orientation == 6
    assert np.array_equal(an.decode(data), pillow_pixels(data))


def test_png_small_zlib_window_still_decodes() -> None:
    """A stream declaring a window under 32 KiB goes to zlib (igzip assumes
    32 KiB); the pixels are the same."""
    raw = png_bytes(PX, 2)
    idat = raw.index(b"IDAT")
    length = struct.unpack(">I", raw[idat - 4:idat])[0]
    rows = zlib.decompress(raw[idat + 4:idat + 4 + length])
    comp = zlib.compressobj(6, zlib.DEFLATED, 9)  # 512-byte window
    stream = comp.compress(rows) + comp.flush()
    assert stream[0] != 0x78
    data = PNG_SIG + raw[8:idat - 4] + png_chunk(b"IDAT", stream) + raw[idat + 8 + length:]
    assert np.array_equal(an.decode(data), PX)


def test_incremental_follows_the_policy() -> None:
    data = insert_after_app0(base_jpeg(), b"junk")
    for strict, ok in ((None, True), (True, False), (False, True)):
        dec = an.IncrementalDecoder(strict=strict)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            try:
                dec.feed(data)
                arr = dec.finish()
                assert ok and np.array_equal(arr, an.decode(base_jpeg()))
            except an.DecodeError:
                assert not ok


def restream_png(data: bytes, cinfo: int, split: int) -> bytes:
    """``data`` with its image data deflated again (32 KiB of history used),
    the zlib header then claiming a 2**(cinfo+8)-byte window, and the stream
    cut into IDAT chunks of ``split`` bytes."""
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4:idat])[0]
    stream = bytearray(zlib.compress(zlib.decompress(data[idat + 4:idat + 4 + length]), 9))
    stream[0] = (cinfo << 4) | 8
    stream[1] &= 0xE0
    stream[1] |= (31 - (stream[0] * 256 + stream[1]) % 31) % 31
    chunks = b"".join(png_chunk(b"IDAT", bytes(stream[i:i + split]))
                      for i in range(0, len(stream), split))
    return data[:idat - 4] + chunks + data[idat + 8 + length:]


@pytest.mark.parametrize("kind", ["rgb8", "interlaced", "rgb16"])
@pytest.mark.parametrize("split", [1 << 20, 1000, 7])
def test_png_window_header_smaller_than_distances(kind: str, split: int) -> None:
    """A zlib header may claim a smaller window than the encoder used (the
    distances reach further back).  zlib checks a distance against the window
    only when it leaves the current inflate call's output, so honouring the
    claim makes the outcome depend on where IDAT chunks and feeds are cut.
    Pillow inflates with the 32 KiB window; so must every path here."""
    tile = photo(8, 300, 3, seed=9)
    px = np.tile(tile, (12, 1, 1))  # each 8-row band repeats 7 KiB back
    if kind == "rgb16":
        clean = png_bytes(px.astype(np.uint16) * 257, 2, 16)
    else:
        clean = png_bytes(px, 2, interlace=kind == "interlaced")
    data = restream_png(clean, 1, split)
    with Image.open(io.BytesIO(data)) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), px)  # the oracle decodes it
    assert np.array_equal(an.decode(data), px)
    for step in (100, 4096, len(data)):
        dec = an.IncrementalDecoder()
        for i in range(0, len(data), step):
            dec.feed(data[i:i + step])
        assert np.array_equal(dec.finish(), px), step


def tiff_orientation_entry(type_: int, value: int) -> bytes:
    """A big-endian TIFF stream whose one IFD0 entry is the orientation tag of
    the given TIFF type."""
    data = (bytes([value, 0, 0, 0]) if type_ in (1, 6)
            else struct.pack(">HH", value, 0) if type_ in (3, 8) else struct.pack(">I", value))
    return b"MM" + struct.pack(">HIH", 42, 8, 1) + struct.pack(">HHI", 0x112, type_, 1) + data + (
        b"\x00" * 4)


@pytest.mark.parametrize("container", ["jpeg", "png"])
@pytest.mark.parametrize(("type_", "value"), [(3, 9), (3, 0), (4, 77), (8, 3), (9, 3), (1, 8)])
def test_exif_orientation_tag_read_as_pillow_with_xmp(container: str, type_: int,
                                                      value: int) -> None:
    """Pillow reads the EXIF orientation tag of any integer type, and an
    orientation tag that is present shadows XMP's tiff:Orientation even when
    its value means no rotation (exif_transpose then leaves the image)."""
    t = tiff_orientation_entry(type_, value)
    if container == "jpeg":
        xmp = b"http://ns.adobe.com/xap/1.0/\x00" + xmp_packet(6)
        data = insert_after_app0(base_jpeg(), segment(0xE1, b"Exif\x00\x00" + t)
                                 + segment(0xE1, xmp))
    else:
        body, iend = split_iend(png_bytes(PX, 2, exif=t))
        data = body + png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00"
                                + xmp_packet(6)) + iend
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = pillow_pixels(data)
        got = an.decode(data)
    assert got.shape == expected.shape and np.array_equal(got, expected)


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize(("color_type", "trns"), [(0, struct.pack(">H", 0x0105)),
                                                  (2, struct.pack(">HHH", 1, 2, 0x0300))])
def test_png_trns_out_of_range_is_an_ancillary_problem(color_type: int, trns: bytes,
                                                       interlace: bool) -> None:
    """A tRNS colour key beyond the bit depth is invalid content of an
    ancillary chunk (libpng warns without a 'tRNS:' prefix): no pixel is lost,
    so the default policy decodes with a warning, as Pillow decodes it."""
    px = PX[..., 0] if color_type == 0 else PX
    data = png_bytes(px, color_type, trns=trns, interlace=interlace)
    with Image.open(io.BytesIO(data)) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), an.decode(data, strict=False))
    assert_policy_lossless(data, an.decode(data, strict=False))


@pytest.mark.parametrize("where", ["png-before-idat", "png-after-idat", "jpeg-doubled"])
def test_exif_with_an_extra_exif_prefix_as_pillow(where: str) -> None:
    """Some writers put JPEG's "Exif\\0\\0" prefix in a PNG eXIf chunk, or twice
    in a JPEG APP1; Pillow's Exif.load strips one or two of them and rotates."""
    prefixed = exif_bytes(6)  # "Exif\0\0" + TIFF
    assert prefixed.startswith(b"Exif\x00\x00")
    if where == "jpeg-doubled":
        data = insert_after_app0(base_jpeg(), segment(0xE1, b"Exif\x00\x00" + prefixed))
    else:
        data = png_bytes(PX, 2, exif=prefixed, exif_after_idat=where == "png-after-idat")
    assert an.probe(data).orientation == 6
    assert np.array_equal(an.decode(data), pillow_pixels(data))
