"""The gallery of labelled reference images, kept as files in one directory.

A reference is ``<dir>/<label>__<digest16>.jpg``.  The directory is the store
that every worker of a host shares: a worker notices additions by the
directory's modification time and loads only the new files.  At first start
an empty directory is filled with a sample gallery: the Kodak photos from the
corpus (``$AMULET_CORPUS`` or ``../shared/corpus``) when present, otherwise
generated pictures ("amulets": discs, rings and glyphs in seeded colours).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import amulet_native as an

from .model import GalleryRecognizer

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
_FILE = re.compile(r"^(?P<label>.+)__(?P<id>[0-9a-f]{16})\.(jpg|png)$")
SAMPLE_SIZE = 24


def valid_label(label: str) -> bool:
    return bool(_LABEL.match(label)) and "__" not in label


def find_corpus() -> Path | None:
    """$AMULET_CORPUS, else ../shared/corpus next to the repository, if it has kodak/."""
    env = os.environ.get("AMULET_CORPUS")
    cand = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "corpus"
    return cand if (cand / "kodak").is_dir() else None


def generated_picture(seed: int, size: tuple[int, int] = (384, 256)) -> npt.NDArray[np.uint8]:
    """A distinct synthetic "amulet" photo per seed: a medallion (disc, ring,
    inner glyphs) in seeded colours on a textured, lit background."""
    w, h = size
    rng = np.random.default_rng(1000 + seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = rng.uniform(30, 200, 3).astype(np.float32)
    light = 0.7 + 0.3 * np.cos((x / w - rng.uniform()) * 3) * np.cos((y / h - rng.uniform()) * 3)
    img = bg * light[..., None] + rng.normal(0, 6, (h, w, 1)).astype(np.float32)
    cx, cy = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.35, 0.65)
    r = min(w, h) * rng.uniform(0.28, 0.42)
    d2 = (x - cx) ** 2 + (y - cy) ** 2
    img[d2 < r * r] = rng.uniform(0, 255, 3)
    ring = (d2 < r * r) & (d2 > (0.8 * r) ** 2)
    img[ring] = rng.uniform(0, 255, 3)
    for _ in range(int(rng.integers(2, 6))):
        gx, gy = cx + rng.uniform(-0.5, 0.5) * r, cy + rng.uniform(-0.5, 0.5) * r
        gw, gh = rng.uniform(0.08, 0.3) * r, rng.uniform(0.08, 0.3) * r
        ang = rng.uniform(0, np.pi)
        u = (x - gx) * np.cos(ang) + (y - gy) * np.sin(ang)
        v = -(x - gx) * np.sin(ang) + (y - gy) * np.cos(ang)
        img[(np.abs(u) < gw) & (np.abs(v) < gh)] = rng.uniform(0, 255, 3)
    out: npt.NDArray[np.uint8] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def sample_images(n: int = SAMPLE_SIZE) -> Iterator[tuple[str, bytes]]:
    """(label, encoded image) pairs of the sample gallery."""
    corpus = find_corpus()
    if corpus is not None:
        for path in sorted((corpus / "kodak").glob("*.png"))[:n]:
            rgb = an.decode(path.read_bytes())
            yield path.stem, an.encode_jpeg(rgb, quality=92)
        return
    for i in range(n):
        yield f"amulet-{i + 1:02d}", an.encode_jpeg(generated_picture(i), quality=92)


class Gallery:
    """A directory of reference images and the recogniser built from it."""

    def __init__(self, directory: str | os.PathLike[str], *, max_side: int = 512) -> None:
        self.dir = Path(directory)
        self.max_side = max_side
        self.recognizer = GalleryRecognizer()
        self._loaded: set[str] = set()
        self._mtime = -1.0
        self._lock = threading.Lock()

    def ensure_sample(self) -> int:
        """Fill an empty directory with the sample gallery; the number added."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if any(_FILE.match(p.name) for p in self.dir.iterdir()):
            return 0
        added = 0
        for label, data in sample_images():
            self._write(label, data)
            added += 1
        return added

    def _write(self, label: str, data: bytes) -> str:
        entry_id = hashlib.blake2b(data, digest_size=8).hexdigest()
        ext = "png" if data[:4] == b"\x89PNG" else "jpg"
        final = self.dir / f"{label}__{entry_id}.{ext}"
        tmp = self.dir / f".{final.name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, final)  # atomic: other workers never read a partial file
        return entry_id

    def refresh(self) -> int:
        """Load references other workers added since the last look; the number loaded."""
        try:
            mtime = self.dir.stat().st_mtime
        except FileNotFoundError:
            return 0
        if mtime == self._mtime:
            return 0
        with self._lock:
            self._mtime = mtime
            added = 0
            for path in sorted(self.dir.iterdir()):
                m = _FILE.match(path.name)
                if m is None or m["id"] in self._loaded:
                    continue
                try:
                    rgb = an.decode(path.read_bytes(), max_size=(self.max_side, self.max_side))
                except an.AmuletError:
                    continue  # a damaged reference is skipped, never fatal
                self.recognizer.add(m["label"], rgb, entry_id=m["id"])
                self._loaded.add(m["id"])
                added += 1
            return added

    def add(self, label: str, data: bytes, rgb: npt.NDArray[Any]) -> str:
        """Store a new reference (encoded bytes) and index it (decoded rgb)."""
        with self._lock:
            entry_id = self._write(label, data)
            if entry_id not in self._loaded:
                self.recognizer.add(label, rgb, entry_id=entry_id)
                self._loaded.add(entry_id)
            return entry_id

    def listing(self) -> list[dict[str, str]]:
        return [{"id": e.id, "label": e.label} for e in self.recognizer.entries]
