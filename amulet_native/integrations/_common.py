"""What the FastAPI and Streamlit integrations share (no framework imports)."""

from __future__ import annotations

from ..errors import AmuletError, ImageTooLargeError, PayloadTooLargeError
from ..image import ImageInfo, Limits
from ._problem import title_for

#: Declared media type -> the format name probe() reports.
DECLARED_FORMATS = {
    "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/pjpeg": "jpeg", "image/png": "png",
    "image/webp": "webp", "image/gif": "gif", "image/heic": "heic", "image/heif": "heic",
    "image/avif": "avif", "image/bmp": "bmp", "image/tiff": "tiff",
}


def check_limits(info: ImageInfo, limits: Limits) -> None:
    """The Limits checks the decoder makes, from the probed header (so a bomb
    is refused before a worker thread or any pixel memory is involved)."""
    checks = (
        ("limits.width", "width", info.width, limits.max_width),
        ("limits.height", "height", info.height, limits.max_height),
        ("limits.pixels", "pixels", info.width * info.height, limits.max_pixels),
    )
    for code, name, actual, bound in checks:
        if bound and actual > bound:
            raise ImageTooLargeError(
                f"image {name} {actual} exceeds max_{name} {bound}", code=code,
                limit_name=f"max_{name}", actual=actual, limit=bound,
            )


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB"


def friendly_message(exc: AmuletError) -> str:
    """One sentence for an end user (a Streamlit page), from the code table."""
    title = title_for(exc.code)
    ctx = exc.context
    if isinstance(exc, PayloadTooLargeError) and exc.limit:
        got = ctx.get("declared") or exc.received
        return f"{title}: the file is {_mb(int(got or 0))}, the limit is {_mb(exc.limit)}."
    if exc.code.startswith("limits.") and "actual" in ctx and "limit" in ctx:
        return f"{title}: {ctx['actual']:,} over the limit of {ctx['limit']:,}."
    if exc.code.startswith("format."):
        fmt = ctx.get("format")
        return f"{title}" + (f" ({fmt})." if fmt else ".") + " Upload a JPEG or PNG image."
    if exc.code.startswith("decode."):
        return f"{title}: the file is damaged or incomplete."
    if exc.code.startswith("memory."):
        return f"{title}: the image needs more memory than this app allows."
    return f"{title}."
