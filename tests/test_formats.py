"""WebP, GIF, HEIC and AVIF (issue 15): Pillow (+ pillow-heif, pillow-avif-plugin)
as the oracle, the limits that stop bombs, and hostile input.

Tolerances, stated once:

- WebP lossless and lossy: pixel-exact against Pillow (Pillow 13 bundles
  libwebp 1.6.0, we link Debian's 1.2.4; the decoders agree bit for bit on
  every file here).
- GIF: pixel-exact against Pillow for every frame (RGBA; the colour under
  alpha 0 is compared only where either side is visible), except that a frame
  reaching outside the logical screen is clipped (browsers) where Pillow grows
  the image.
- HEIC: within 1 per sample of pillow-heif (libheif 1.15 here, 1.23 in the
  wheel: YCbCr->RGB rounding); 10-bit samples exact.
- AVIF 4:4:4: within 1 of pillow-avif-plugin (libavif).  AVIF 4:2:0: libheif
  1.15 upsamples chroma by nearest neighbour where libavif interpolates, so
  the tolerance is on fidelity: our PSNR against the source is within 1.5 dB
  of pillow-avif's.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import corpus_subdir, photo
from PIL import Image

import amulet_native as an

pillow_heif: Any
try:
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - optional oracle
    pillow_heif = None
try:
    import pillow_avif  # noqa: F401

    HAVE_AVIF_ORACLE = True
except ImportError:  # pragma: no cover
    HAVE_AVIF_ORACLE = False

U8 = npt.NDArray[np.uint8]
HEIF_READY = an.features()["formats"]["heic"]
AVIF_READY = an.features()["formats"]["avif"]


def save(img: Image.Image | U8, fmt: str, **kw: Any) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def pil_frames(data: bytes, mode: str = "RGBA") -> list[U8]:
    im = Image.open(io.BytesIO(data))
    out = []
    for k in range(getattr(im, "n_frames", 1)):
        im.seek(k)
        out.append(np.asarray(im.convert(mode)))
    return out


def assert_rgba_equal(ours: U8, ref: U8, what: str) -> None:
    assert ours.shape == ref.shape, what
    assert np.array_equal(ours[..., 3], ref[..., 3]), what
    visible = (ours[..., 3] > 0) | (ref[..., 3] > 0)
    assert np.array_equal(ours[..., :3][visible], ref[..., :3][visible]), what


def psnr(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return 99.0 if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


# ---- fixtures made at test time ------------------------------------------------


def animated_gif() -> bytes:
    """Three frames: a full first frame, a transparent-holed partial frame
    (disposal 2), a frame drawn over a restored canvas (disposal 3)."""
    base = photo(40, 56, 3, seed=1)
    f1 = photo(40, 56, 3, seed=2)
    f2 = photo(40, 56, 3, seed=3)
    frames = [Image.fromarray(a).quantize(64) for a in (base, f1, f2)]
    return save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50,
                disposal=[1, 2, 3], loop=0)


def animated_webp(lossless: bool) -> bytes:
    frames = [Image.fromarray(photo(36, 52, 4, seed=s)) for s in range(3)]
    return save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=40,
                lossless=lossless, quality=80)


STILL_WEBP = {
    "lossy": lambda: save(photo(61, 83, 3), "WEBP", quality=75),
    "lossless": lambda: save(photo(61, 83, 3), "WEBP", lossless=True),
    "lossy-alpha": lambda: save(photo(47, 70, 4), "WEBP", quality=60),
    "lossless-alpha": lambda: save(photo(47, 70, 4), "WEBP", lossless=True, exact=True),
    "grey": lambda: save(photo(30, 41, 1)[..., 0], "WEBP", quality=90),
}


# ---- WebP ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(STILL_WEBP))
def test_webp_matches_pillow(kind: str) -> None:
    data = STILL_WEBP[kind]()
    info = an.probe(data)
    ref = Image.open(io.BytesIO(data))
    assert (info.format, info.width, info.height, info.frames) == ("webp", *ref.size, 1)
    assert info.channels == (4 if ref.mode == "RGBA" else 3)
    modes: tuple[an.Mode, ...] = ("RGB", "RGBA", "L", "LA")
    for mode in modes:
        expected = np.asarray(ref.convert(mode))
        got = an.decode(data, mode)
        assert np.array_equal(got, expected), (kind, mode)
    bgr = an.decode(data, "BGR")
    assert np.array_equal(bgr[..., ::-1], np.asarray(ref.convert("RGB")))


@pytest.mark.parametrize("lossless", [False, True])
def test_webp_animation_frames_match_pillow(lossless: bool) -> None:
    data = animated_webp(lossless)
    info = an.probe(data)
    assert info.format == "webp" and info.frames == 3 and info.channels == 4
    for k, expected in enumerate(pil_frames(data)):
        got = an.decode(data, "RGBA", frame=k)
        assert np.array_equal(got, expected), k
    with pytest.raises(an.ValidationError) as ei:
        an.decode(data, frame=3)
    assert ei.value.code == "value.frame"
    with pytest.raises(an.ImageTooLargeError) as ti:
        an.decode(data, limits=an.Limits(max_frames=2))
    assert ti.value.code == "limits.frames" and ti.value.context["limit_name"] == "max_frames"


def test_encode_webp_round_trip() -> None:
    rgba = photo(33, 47, 4, seed=5)
    rgba[::3, ::4, 3] = 0  # transparent pixels keep their colour (exact)
    cases: list[tuple[U8, an.Mode]] = [(rgba, "RGBA"), (rgba[..., :3], "RGB"), (rgba[..., 0], "L")]
    for arr, mode in cases:
        data = an.encode_webp(arr, lossless=True)
        assert np.array_equal(an.decode(data, mode), arr), mode
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert(mode)), arr)
    # strided views and BGR order
    view = rgba[::-1, ::2, :3]
    assert np.array_equal(an.decode(an.encode_webp(view, lossless=True)), view)
    bgr = an.encode_webp(np.ascontiguousarray(view[..., ::-1]), lossless=True, mode="BGR")
    assert np.array_equal(an.decode(bgr), view)
    # lossy: the same file decodes to the same pixels in Pillow
    lossy = an.encode_webp(photo(64, 80, 3), quality=70, method=6)
    assert np.array_equal(an.decode(lossy), np.asarray(Image.open(io.BytesIO(lossy))))
    small = an.encode_webp(photo(64, 80, 3), quality=10)
    assert len(small) < len(lossy)
    for bad in ({"quality": 101}, {"quality": -1}, {"method": 7}, {"quality": True}):
        with pytest.raises(an.ValidationError):
            an.encode_webp(rgba, **bad)
    with pytest.raises(an.ValidationError) as ei:
        an.encode_webp(rgba.astype(np.uint16))
    assert ei.value.code == "value.array"


def test_webp_exif_orientation() -> None:
    arr = photo(20, 30, 3, seed=7)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = save(arr, "WEBP", lossless=True, exif=exif.tobytes())
    assert an.probe(data).orientation == 6
    assert np.array_equal(an.decode(data), np.rot90(arr, -1))
    assert np.array_equal(an.decode(data, orient=False), arr)


# ---- GIF -------------------------------------------------------------------------


def test_gif_frames_match_pillow() -> None:
    data = animated_gif()
    info = an.probe(data)
    assert (info.format, info.width, info.height, info.frames) == ("gif", 56, 40, 3)
    for k, expected in enumerate(pil_frames(data)):
        assert_rgba_equal(an.decode(data, "RGBA", frame=k), expected, f"frame {k}")
    first = Image.open(io.BytesIO(data))
    assert np.array_equal(an.decode(data, "RGB"), np.asarray(first.convert("RGB")))
    assert np.array_equal(an.decode(data, "L"), np.asarray(first.convert("L")))


def test_gif_transparency_and_grey() -> None:
    arr = photo(24, 31, 1, seed=4)[..., 0]
    img = Image.fromarray(arr).convert("P")
    data = save(img, "GIF", transparency=int(arr[0, 0]))
    assert an.probe(data).channels == 4
    assert_rgba_equal(an.decode(data, "RGBA"), pil_frames(data)[0], "transparent")
    assert np.array_equal(an.decode(data, "RGB"), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def _gif(width: int, height: int, frames: list[tuple[int, int, int, int]], lzw: bytes) -> bytes:
    """A hand-made GIF: 2-colour global palette, frames (left, top, w, h) each
    with the same LZW payload."""
    out = bytearray(b"GIF89a")
    out += width.to_bytes(2, "little") + height.to_bytes(2, "little") + bytes([0x80, 0, 0])
    out += bytes([0, 0, 0, 255, 255, 255])
    for left, top, w, h in frames:
        out += b"\x2c" + b"".join(v.to_bytes(2, "little") for v in (left, top, w, h)) + b"\x00"
        out += b"\x02" + bytes([len(lzw)]) + lzw + b"\x00"
    return bytes(out + b"\x3b")


def test_gif_bombs_refused_before_decoding() -> None:
    lzw = b"\x44\x01"  # a few codes: far fewer pixels than any frame below
    # a canvas over max_pixels: refused from the 13-byte header
    huge = _gif(30000, 30000, [(0, 0, 1, 1)], lzw)
    with pytest.raises(an.ImageTooLargeError) as ei:
        an.decode(huge)
    assert ei.value.code == "limits.pixels"
    # a 1x1 canvas with a 30000x30000 frame: the frame's LZW output is bounded too
    with pytest.raises(an.ImageTooLargeError) as ei:
        an.decode(_gif(1, 1, [(0, 0, 30000, 30000)], lzw))
    assert ei.value.code == "limits.pixels" and "frame 0" in str(ei.value)
    # thousands of frames: max_frames
    many = _gif(8, 8, [(0, 0, 8, 8)] * 5000, lzw)
    assert an.probe(many).frames == 5000
    with pytest.raises(an.ImageTooLargeError) as ei:
        an.decode(many)
    assert ei.value.code == "limits.frames" and ei.value.context["actual"] == 5000
    # the work to reach a late frame: 8 x max_pixels of LZW output at most
    work = _gif(100, 100, [(0, 0, 100, 100)] * 100, lzw)
    lim = an.Limits(max_pixels=100 * 100 * 4)
    with pytest.raises(an.ImageTooLargeError) as ei:
        an.decode(work, frame=50, limits=lim)
    assert ei.value.code == "limits.frames"
    with pytest.warns(an.AmuletWarning):  # the stand-in LZW data is short
        assert an.decode(work, frame=5, limits=lim, strict=False).shape == (100, 100, 3)


# ---- HEIC / AVIF -----------------------------------------------------------------


def _source() -> Image.Image:
    return Image.fromarray(photo(72, 104, 3, seed=9))


@pytest.mark.skipif(pillow_heif is None or not HEIF_READY, reason="needs pillow-heif and HEVC")
def test_heic_matches_pillow_heif() -> None:
    data = save(_source(), "HEIF", quality=90)
    info = an.probe(data)
    assert (info.format, info.width, info.height, info.bit_depth) == ("heic", 104, 72, 8)
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert np.abs(an.decode(data).astype(int) - ref).max() <= 1
    # alpha
    rgba = Image.fromarray(photo(40, 48, 4, seed=3))
    data = save(rgba, "HEIF", quality=90)
    assert an.probe(data).channels == 4
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")).astype(int)
    assert np.abs(an.decode(data, "RGBA").astype(int) - ref).max() <= 1


@pytest.mark.skipif(pillow_heif is None or not HEIF_READY, reason="needs pillow-heif and HEVC")
def test_heic_orientation_from_irot() -> None:
    src = _source()
    exif = Image.Exif()
    exif[0x0112] = 6  # pillow-heif writes it as irot/imir
    data = save(src, "HEIF", quality=90, exif=exif.tobytes())
    info = an.probe(data)
    assert (info.width, info.height, info.orientation) == (72, 104, 1)
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    got = an.decode(data)
    assert got.shape == (104, 72, 3)
    assert np.abs(got.astype(int) - ref).max() <= 1
    assert an.decode(data, orient=False).shape == (72, 104, 3)


@pytest.mark.skipif(pillow_heif is None or not HEIF_READY, reason="needs pillow-heif and HEVC")
def test_heic_10bit_to_uint16() -> None:
    arr = photo(48, 64, 3, seed=2).astype(np.uint16) << 8
    h16 = pillow_heif.from_bytes(mode="RGB;16", size=(64, 48), data=arr.tobytes())
    buf = io.BytesIO()
    h16.save(buf, quality=90)
    data = buf.getvalue()
    assert an.probe(data).bit_depth == 10
    ref = np.asarray(pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False))
    got = an.decode(data, dtype=np.uint16)
    assert got.dtype == np.uint16 and np.array_equal(got, ref)
    assert an.decode(data).dtype == np.uint8
    with pytest.raises(an.ValidationError):
        an.decode(save(photo(8, 8, 3), "WEBP"), dtype=np.uint16)


@pytest.mark.skipif(not HAVE_AVIF_ORACLE or not AVIF_READY, reason="needs pillow-avif-plugin")
@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:0"])
def test_avif_matches_pillow_avif(subsampling: str) -> None:
    src = _source()
    data = save(src, "AVIF", quality=80, subsampling=subsampling)
    info = an.probe(data)
    assert (info.format, info.width, info.height) == ("avif", 104, 72)
    got = an.decode(data)
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    if subsampling == "4:4:4":
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
    else:
        orig = np.asarray(src)
        assert psnr(got, orig) >= psnr(ref, orig) - 1.5


@pytest.mark.skipif(not HEIF_READY, reason="libheif has no HEVC decoder")
def test_heif_limits_from_header() -> None:
    if pillow_heif is None:
        pytest.skip("needs pillow-heif to make a file")
    data = save(_source(), "HEIF", quality=50)
    for lim, code in ((an.Limits(max_pixels=1000), "limits.pixels"),
                      (an.Limits(max_width=100), "limits.width")):
        with pytest.raises(an.ImageTooLargeError) as ei:
            an.decode(data, limits=lim)
        assert ei.value.code == code
    with pytest.raises(an.ValidationError) as fi:
        an.decode(data, frame=1)
    assert fi.value.code == "value.frame"


def test_codec_missing_is_a_typed_error() -> None:
    codes = {code: cls for code, cls, _ in an._core.error_table()}
    assert codes["format.codec_missing"] == "UnsupportedFormatError"
    assert codes["limits.frames"] == "ImageTooLargeError"
    assert codes["value.frame"] == "ValidationError"


# ---- every entry point -------------------------------------------------------------


def format_samples() -> dict[str, bytes]:
    out = {"webp": STILL_WEBP["lossy"](), "webp-anim": animated_webp(True), "gif": animated_gif()}
    if pillow_heif is not None and HEIF_READY:
        out["heic"] = save(_source(), "HEIF", quality=60)
    if HAVE_AVIF_ORACLE and AVIF_READY:
        out["avif"] = save(_source(), "AVIF", quality=60)
    return out


def test_entry_points_support_the_formats() -> None:
    samples = format_samples()
    refs = {k: an.decode(v) for k, v in samples.items()}
    many = an.decode_many(list(samples.values()), threads=2)
    for (k, ref), got in zip(refs.items(), many):
        assert np.array_equal(got, ref), k
    cache = an.ImageCache(max_items=10)
    for k, v in samples.items():
        assert np.array_equal(cache.decode(v), refs[k]), k
        dec = an.IncrementalDecoder()
        for i in range(0, len(v), 301):
            dec.feed(v[i : i + 301])
        assert np.array_equal(dec.finish(), refs[k]), k
        thumb = an.thumbnail(v, (16, 16))
        assert max(thumb.shape[:2]) <= 16, k
        assert an.decode(v, max_size=(20, 20)).shape[0] <= refs[k].shape[0]
        assert np.array_equal(an.decode_base64(an.b64encode(v)), refs[k]), k
    frames = an.decode_many([samples["gif"]] * 2, frame=2)
    assert np.array_equal(frames[0], an.decode(samples["gif"], frame=2))


def test_incremental_matches_decode_on_truncated_webp() -> None:
    data = STILL_WEBP["lossless"]()
    for cut in (len(data) // 3, len(data) * 2 // 3, len(data) - 1):
        for strict in (True, False):
            part = data[:cut]
            try:
                with warnings.catch_warnings(record=True) as w1:
                    warnings.simplefilter("always")
                    ref: Any = an.decode(part, strict=strict)
            except an.AmuletError as e:
                ref = e.code
            dec = an.IncrementalDecoder(strict=strict)
            try:
                with warnings.catch_warnings(record=True) as w2:
                    warnings.simplefilter("always")
                    for i in range(0, len(part), 50):
                        dec.feed(part[i : i + 50])
                    got: Any = dec.finish()
            except an.AmuletError as e:
                got = e.code
            else:
                assert len(w1) == len(w2) == (0 if strict else 1), (cut, strict)
            if isinstance(ref, str):
                assert got == ref, (cut, strict)
            else:
                assert np.array_equal(got, ref), (cut, strict)


def test_memory_limit_charges_codec_memory() -> None:
    data = save(photo(400, 600, 3), "WEBP", lossless=True)
    with pytest.raises(an.MemoryLimitError), an.memory_limit(200_000):
        an.decode(data)
    with an.memory_limit(64 << 20):
        assert an.decode(data).shape == (400, 600, 3)


# ---- hostile input ---------------------------------------------------------------


def outcome(data: bytes, **kw: Any) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", an.AmuletWarning)
            an.decode(data, **kw)
        return "ok"
    except an.AmuletError as e:
        return e.code


def hostile_samples() -> dict[str, bytes]:
    out = format_samples()
    out["webp-alpha"] = STILL_WEBP["lossy-alpha"]()
    out["webp-lossless"] = STILL_WEBP["lossless"]()
    return out


@pytest.mark.parametrize("name", sorted(hostile_samples()))
def test_truncation_at_every_byte(name: str) -> None:
    data = hostile_samples()[name]
    step = max(1, len(data) // 1500)
    for cut in range(0, len(data), step):
        part = data[:cut]
        for strict in (True, False):
            code = outcome(part, strict=strict)
            assert code == "ok" or "." in code, (cut, code)
        if cut > 16:
            try:
                an.probe(part)
            except an.AmuletError:
                pass


@pytest.mark.parametrize("name", sorted(hostile_samples()))
def test_seeded_mutations(name: str) -> None:
    data = hostile_samples()[name]
    rng = np.random.default_rng(15)
    n = 150 if name in ("heic", "avif") else 400
    for _ in range(n):
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 8))):
            pos = int(rng.integers(0, len(buf)))
            buf[pos] = int(rng.integers(0, 256))
        for strict in (True, False):
            code = outcome(bytes(buf), strict=strict, frame=int(rng.integers(0, 3)) if "anim" in
                           name or name == "gif" else 0)
            assert code == "ok" or "." in code


@pytest.mark.parametrize("path", sorted(
    p for p in corpus_subdir("wuffs").glob("*") if p.suffix in (".gif", ".webp")
) + sorted(corpus_subdir("wuffs/artificial-gif").glob("*.gif")) or ["<no corpus>"], ids=str)
@pytest.mark.corpus
def test_wuffs_corpus_matches_pillow(path: Path | str, corpus_dir: Path) -> None:
    if isinstance(path, str):
        pytest.skip("no corpus")
    data = path.read_bytes()
    try:
        expected = pil_frames(data)
    except (OSError, ValueError, SyntaxError):
        # Pillow refuses it: we refuse too, with a typed error, or decode what a
        # browser shows (zero-width frames are skipped, as by browsers).
        code = outcome(data)
        assert code == "ok" or code.startswith(("decode.", "value.")), code
        return
    info = an.probe(data)
    assert info.frames == len(expected)
    for k, ref in enumerate(expected):
        got = an.decode(data, "RGBA", frame=k)
        if path.name == "frame-out-of-bounds.gif":
            # Pillow grows the image to hold the frame; we clip to the screen
            h, w = got.shape[:2]
            ref = ref[:h, :w]
        assert_rgba_equal(got, ref, f"{path.name} frame {k}")


def test_nothing_on_stderr_and_no_growth() -> None:
    """Errors of every kind in a loop, in a subprocess: stderr stays empty and
    the heap does not grow."""
    code = textwrap.dedent("""
        import io, sys, warnings
        warnings.simplefilter("ignore")
        sys.path.insert(0, "tests")
        import numpy as np
        import amulet_native as an
        from conftest import MEMORY_PROBES
        exec(MEMORY_PROBES)
        from test_formats import hostile_samples
        samples = list(hostile_samples().values())
        rng = np.random.default_rng(1)
        def once():
            for data in samples:
                for cut in (len(data) // 2, len(data) - 3):
                    for strict in (True, False):
                        try: an.decode(data[:cut], strict=strict)
                        except an.AmuletError: pass
                buf = bytearray(data)
                for _ in range(6):
                    buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
                try: an.decode(bytes(buf))
                except an.AmuletError: pass
        for _ in range(30): once()
        base = heap()
        for _ in range(150): once()
        grown = heap() - base
        print(grown)
        assert grown < 2_000_000, grown
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, check=False, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stderr == ""


def test_webp_decodes_as_bytes_arrive() -> None:
    """A still WebP is decoded by WebPIDecoder while it streams in (rows
    complete before the end), not collected; 1-byte feeding stays linear."""
    data = save(photo(600, 800, 3, seed=8), "WEBP", quality=95)
    assert len(data) > 4 * 32768
    dec = an.IncrementalDecoder()
    cut = len(data) * 3 // 4
    for i in range(0, cut, 4096):
        dec.feed(data[i : min(i + 4096, cut)])
    assert 0 < dec.rows_done < dec.rows_total == 600
    dec.feed(data[cut:])
    assert np.array_equal(dec.finish(), an.decode(data))
    lossless = save(photo(200, 300, 3, seed=9), "WEBP", lossless=True)
    dec = an.IncrementalDecoder()
    for i in range(len(lossless)):
        dec.feed(lossless[i : i + 1])
    assert np.array_equal(dec.finish(), an.decode(lossless))


def test_animation_work_is_bounded() -> None:
    """Reaching frame k composes k + 1 canvases: bounded by 8 x max_pixels for
    WebP and GIF alike, even when the frames themselves are tiny."""
    frames = [Image.fromarray(photo(20, 30, 4, seed=s)) for s in range(10)]
    webp = save(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    lim = an.Limits(max_pixels=20 * 30)
    assert an.decode(webp, frame=7, limits=lim).shape == (20, 30, 3)
    with pytest.raises(an.ImageTooLargeError) as ei:
        an.decode(webp, frame=8, limits=lim)
    assert ei.value.code == "limits.frames"
    # one-pixel GIF frames on a large canvas still cost a canvas each
    gif = _gif(1000, 1000, [(0, 0, 1, 1)] * 50, b"\x44\x01")
    lim = an.Limits(max_pixels=1000 * 1000)
    with pytest.raises(an.ImageTooLargeError) as ei:
        an.decode(gif, frame=20, limits=lim, strict=False)
    assert ei.value.code == "limits.frames"
