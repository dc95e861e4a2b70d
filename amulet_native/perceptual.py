"""Perceptual fingerprints: find the same picture after re-encoding, resizing or a crop.

``perceptual_hash`` is the 64-bit DCT hash of ``imagehash.phash`` (grey, 32x32,
DCT, 8x8 lowest frequencies, one bit per coefficient above their median),
computed natively with the GIL released.  ``image_descriptor`` is a 128-value
unit-norm float32 vector: a soft RGB colour histogram, a rotation-invariant
gradient-orientation spectrum and a coarse colour layout.  Example::

    import amulet_native as an

    a = an.perceptual_hash(photo_bytes)          # decodes (DCT-scaled) first
    b = an.perceptual_hash(an.decode(other))     # or takes an ndarray
    an.hamming(a, b)                             # 0..64; <= 10 means "same picture"
    float(an.image_descriptor(photo) @ an.image_descriptor(other))  # cosine, 1 = same
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from . import _core
from .errors import ValidationError
from .image import decode

__all__ = ["DESCRIPTOR_SIZE", "hamming", "image_descriptor", "perceptual_hash"]

DESCRIPTOR_SIZE = 128
# Fingerprints never need more than a 64x64 view, so an encoded input is decoded
# with DCT scaling to at least this box (a 4000x3000 JPEG decodes at 1/8).
_DECODE_BOX = (256, 256)

Image = npt.NDArray[Any] | bytes | bytearray | memoryview


def _pixels(image: Image) -> npt.NDArray[Any]:
    if isinstance(image, np.ndarray):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode(image, "RGB", max_size=_DECODE_BOX)
    raise ValidationError(
        f"image must be an ndarray or encoded bytes, got {type(image).__name__}",
        code="input.type",
        field="image",
    )


def perceptual_hash(image: Image) -> int:
    """The 64-bit DCT perceptual hash of an image (ndarray or JPEG/PNG bytes).

    Bit 63 is the DC coefficient, then row-major: ``f"{h:016x}"`` equals
    ``str(imagehash.phash(img))`` up to a few bits (the reduction filter
    differs).  Compare two hashes with :func:`hamming`.

    >>> perceptual_hash(np.zeros((8, 8, 3), np.uint8)) >= 0
    True
    """
    return int(_core.perceptual_hash(_pixels(image)))


def hamming(a: int, b: int) -> int:
    """Number of bits in which two 64-bit hashes differ (0 = identical)."""
    if not (0 <= a < 1 << 64 and 0 <= b < 1 << 64):
        raise ValidationError("hashes must be 64-bit unsigned integers", field="hash")
    return (a ^ b).bit_count()


def image_descriptor(image: Image) -> npt.NDArray[np.float32]:
    """The unit-norm colour/structure descriptor (float32, length 128).

    The dot product of two descriptors is their cosine similarity: near 1 for
    the same picture re-encoded, resized, cropped a little or rotated.
    """
    out: npt.NDArray[np.float32] = _core.image_descriptor(_pixels(image))
    return out
