"""perceptual_hash / hamming / image_descriptor: agreement with imagehash.phash
and robustness to the edits a photo goes through on its way to an upload API.

Tolerances (stated, not tuned per image): against imagehash.phash on the same
pixels the hash differs by at most 4 of 64 bits (the reduction filter is
Pillow's bilinear, not LANCZOS); a JPEG re-encode or a half-size resize moves
at most 4 bits; a 5% crop or a 3 degree rotation (where a DCT hash is known to
be weak) at most 20, 12 on average; distinct pictures stay at least 16 bits
apart; the descriptor's cosine stays at or above 0.95 for every edited copy.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import corpus_subdir, jpeg_bytes
from PIL import Image

import amulet_native as an
from amulet_native import _core

imagehash = pytest.importorskip("imagehash")

KODAK = sorted(corpus_subdir("kodak").glob("*.png")) if corpus_subdir("kodak").is_dir() else []


def reference_hash(img: Image.Image) -> int:
    return int(str(imagehash.phash(img)), 16)


def scene(seed: int, h: int = 240, w: int = 320) -> np.ndarray:
    """A distinct synthetic picture per seed: coloured discs and bars on a gradient."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack(
        [
            x / w * rng.uniform(50, 200),
            y / h * rng.uniform(50, 200),
            np.full_like(x, rng.uniform(0, 255)),
        ],
        axis=-1,
    )
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(15, 70)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    out: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
    return out


def pictures() -> list[np.ndarray]:
    if KODAK:
        return [np.asarray(Image.open(p).convert("RGB")) for p in KODAK[:12]]
    return [scene(s) for s in range(12)]


def edits(rgb: np.ndarray) -> dict[str, np.ndarray]:
    h, w = rgb.shape[:2]
    dy, dx = h // 20, w // 20
    return {
        "jpeg q60": an.decode(jpeg_bytes(rgb, quality=60)),
        "half size": an.resize(rgb, (w // 2, h // 2)),
        "crop 5%": rgb[dy : h - dy, dx : w - dx],
        "rotate 3deg": np.asarray(
            Image.fromarray(rgb).rotate(3, resample=Image.Resampling.BILINEAR, expand=False)
        ),
    }


def test_matches_imagehash_on_the_same_pixels() -> None:
    dists = []
    for rgb in pictures():
        dists.append(an.hamming(an.perceptual_hash(rgb), reference_hash(Image.fromarray(rgb))))
    assert max(dists) <= 4, dists
    assert np.mean(dists) <= 2, dists


@pytest.mark.corpus
@pytest.mark.skipif(not KODAK, reason="kodak corpus not found")
def test_matches_imagehash_on_kodak_files() -> None:
    for path in KODAK:
        data = path.read_bytes()
        ours = an.perceptual_hash(an.decode(data))
        assert an.hamming(ours, reference_hash(Image.open(path))) <= 4, path.name


def test_edits_move_few_bits_and_keep_the_descriptor() -> None:
    moved: dict[str, list[int]] = {}
    for rgb in pictures():
        h0, d0 = an.perceptual_hash(rgb), an.image_descriptor(rgb)
        for name, edited in edits(rgb).items():
            bits = an.hamming(h0, an.perceptual_hash(edited))
            assert bits <= (4 if name in ("jpeg q60", "half size") else 20), name
            moved.setdefault(name, []).append(bits)
            assert float(d0 @ an.image_descriptor(edited)) >= 0.95, name
    for name, bits_list in moved.items():
        assert np.mean(bits_list) <= 12, name


def test_distinct_pictures_are_far_apart() -> None:
    hashes = [an.perceptual_hash(p) for p in pictures()]
    for i, a in enumerate(hashes):
        for b in hashes[i + 1 :]:
            assert an.hamming(a, b) >= 16


def test_rot90_gives_the_same_orientation_spectrum() -> None:
    rgb = pictures()[0]
    d0, d1 = an.image_descriptor(rgb), an.image_descriptor(np.rot90(rgb))
    orient = slice(64, 80)
    np.testing.assert_allclose(d0[orient], d1[orient], atol=0.02)


def test_layouts_grey_alpha_and_16_bit_agree() -> None:
    rgb = pictures()[1]
    h = an.perceptual_hash(rgb)
    assert an.perceptual_hash(np.ascontiguousarray(rgb[:, ::-1][:, ::-1])) == h  # strided view
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    assert an.perceptual_hash(rgba) == h
    assert an.hamming(an.perceptual_hash(rgb.astype(np.uint16) * 257), h) <= 2
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    assert an.hamming(an.perceptual_hash(grey), h) <= 4
    assert an.hamming(an.perceptual_hash(grey[:, :, None]), an.perceptual_hash(grey)) == 0


def test_bytes_are_decoded_first() -> None:
    rgb = pictures()[2]
    data = jpeg_bytes(rgb, quality=95)
    assert an.hamming(an.perceptual_hash(data), an.perceptual_hash(an.decode(data))) <= 6
    desc = an.image_descriptor(data)
    assert desc.dtype == np.float32 and desc.shape == (an.perceptual.DESCRIPTOR_SIZE,)
    assert abs(float(np.linalg.norm(desc)) - 1.0) < 1e-5


def test_flat_and_tiny_images() -> None:
    flat = np.full((10, 10, 3), 128, np.uint8)
    assert an.perceptual_hash(flat) >= 0
    desc = an.image_descriptor(flat)
    assert abs(float(np.linalg.norm(desc)) - 1.0) < 1e-5
    assert not desc[64:].any()  # no gradients, no layout
    assert an.perceptual_hash(np.zeros((1, 1), np.uint8)) == 0


def test_hamming() -> None:
    assert an.hamming(0, (1 << 64) - 1) == 64
    assert an.hamming(0b1011, 0b0001) == 2
    with pytest.raises(an.ValidationError):
        an.hamming(-1, 0)
    with pytest.raises(an.ValidationError):
        an.hamming(1 << 64, 0)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.float32),
        np.zeros((4,), np.uint8),
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((0, 4, 3), np.uint8),
    ],
)
def test_bad_arrays_raise_value_array(bad: np.ndarray) -> None:
    for fn in (an.perceptual_hash, an.image_descriptor):
        with pytest.raises(an.ValidationError) as e:
            fn(bad)
        assert e.value.code == "value.array"


def test_hostile_inputs_raise_typed_errors() -> None:
    with pytest.raises(an.ValidationError):
        an.perceptual_hash("not an image")  # type: ignore[arg-type]
    with pytest.raises(an.DecodeError):
        an.perceptual_hash(jpeg_bytes(pictures()[0])[:300])
    with pytest.raises(an.UnsupportedFormatError):
        an.image_descriptor(b"II*\x00" + b"\0" * 64)  # TIFF: not decoded
    with pytest.raises(an.ValidationError) as e:
        _core.perceptual_hash([[1, 2], [3, 4]])  # type: ignore[arg-type]
    assert e.value.code == "value.array"
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "BMP")
    with pytest.raises(an.UnsupportedFormatError):
        an.perceptual_hash(buf.getvalue())
