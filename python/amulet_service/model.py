"""The models behind the service: a ``Classifier`` protocol and two classifiers.

* :class:`GalleryRecognizer` (the embedded default, no download): which known
  picture is this photo of?  Nearest neighbour over labelled reference images,
  scored by the native 64-bit DCT hash (``an.perceptual_hash``) and the
  colour/structure descriptor (``an.image_descriptor``).  Each reference is
  stored in its four quarter turns and their mirrors, so a photo taken
  sideways (or a selfie-mirrored one) still matches.
* :class:`OnnxClassifier`: a real network through onnxruntime (extra
  ``[onnx]``), batched NCHW float32 input made with ``an.resize``, sessions
  held in an ``an.ObjectPool``.

Both are thread-safe and release the GIL in their hot loops (the fingerprints
and onnxruntime run natively), so the micro-batcher's threads run in parallel.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

import amulet_native as an
from amulet_native.perceptual import DESCRIPTOR_SIZE

Array = npt.NDArray[Any]

# How the two fingerprints combine into one similarity in [0, 1]: the hash
# contributes 1 at 0 differing bits and 0 from 32 bits (unrelated pictures sit
# near 32), the descriptor its cosine.  Weighted towards the descriptor, which
# survives crops and small rotations that move many hash bits.
_VARIANTS = 8  # stored per reference: 4 quarter turns x (as is, mirrored)
_HASH_WEIGHT = 0.35
_DESC_WEIGHT = 0.65


@dataclass(frozen=True)
class Prediction:
    """The top labels for one image, best first, with scores in [0, 1]."""

    labels: tuple[str, ...]
    scores: tuple[float, ...]

    def top(self) -> tuple[str, float]:
        return self.labels[0], self.scores[0]

    def to_json(self) -> list[dict[str, Any]]:
        return [{"label": lb, "score": round(s, 4)} for lb, s in zip(self.labels, self.scores)]


@runtime_checkable
class Classifier(Protocol):
    """What the service needs from a model."""

    name: str
    version: str

    def classify(self, batch: Sequence[Array], *, top_k: int = 5) -> list[Prediction]:
        """One prediction per image of the batch (RGB uint8 arrays)."""
        ...

    def warm_up(self) -> None:
        """Make the first real call as fast as the others."""
        ...


@dataclass(frozen=True)
class GalleryEntry:
    id: str
    label: str
    hashes: npt.NDArray[np.uint64]  # (8,): quarter turns 0..270, then of the mirror
    descriptors: npt.NDArray[np.float32]  # (8, 128)


def fingerprint(image: Array) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
    """The hashes and descriptors of the eight quarter turns of image and of its
    mirror (np.rot90 / flipped views: the native code reads them through their
    strides, no copy)."""
    turns = [np.rot90(v, k) for v in (image, image[:, ::-1]) for k in range(4)]
    hashes = np.array([an.perceptual_hash(t) for t in turns], dtype=np.uint64)
    descs = np.stack([an.image_descriptor(t) for t in turns])
    return hashes, descs


_POPCOUNT = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


def _hamming_many(hashes: npt.NDArray[np.uint64], h: int) -> npt.NDArray[np.int64]:
    x = np.bitwise_xor(hashes, np.uint64(h))
    bits: npt.NDArray[np.int64] = _POPCOUNT[x.view(np.uint8).reshape(-1, 8)].sum(
        axis=1, dtype=np.int64
    )
    return bits


class GalleryRecognizer:
    """Nearest-neighbour recogniser over a gallery of labelled reference images.

    ``add(label, image)`` fingerprints a reference (any number per label);
    ``classify(batch)`` scores every reference against each image and returns
    the best score per label.  Adding is copy-on-write: readers never wait.

    >>> rec = GalleryRecognizer()
    >>> rec.add("sunflower", rgb)
    >>> rec.classify([photo_of_it])[0].top()
    ('sunflower', 0.97)
    """

    name = "gallery-phash"
    version = "1"
    batchable = False  # scores image by image: batching saves nothing

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: tuple[GalleryEntry, ...] = ()
        # Flattened views of _entries, rebuilt on add: (8N,) hashes, (8N, 128)
        # descriptors, (8N,) label index; swapped in as one tuple.
        self._index: tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32], Array, list[str]] = (
            np.zeros(0, np.uint64),
            np.zeros((0, DESCRIPTOR_SIZE), np.float32),
            np.zeros(0, np.int64),
            [],
        )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> tuple[GalleryEntry, ...]:
        return self._entries

    def labels(self) -> list[str]:
        return list(self._index[3])

    def add(self, label: str, image: Array, *, entry_id: str | None = None) -> GalleryEntry:
        hashes, descs = fingerprint(image)
        with self._lock:
            entry = GalleryEntry(entry_id or f"{label}-{len(self._entries)}", label, hashes, descs)
            self._entries = (*self._entries, entry)
            self._rebuild()
        return entry

    def _rebuild(self) -> None:
        names = sorted({e.label for e in self._entries})
        pos = {n: i for i, n in enumerate(names)}
        hashes = np.concatenate([e.hashes for e in self._entries])
        descs = np.concatenate([e.descriptors for e in self._entries])
        owners = np.repeat([pos[e.label] for e in self._entries], _VARIANTS)
        self._index = (hashes, descs, owners, names)

    def similarity(self, image: Array) -> npt.NDArray[np.float64]:
        """Best similarity per label (in ``labels()`` order) for one image."""
        hashes, descs, owners, names = self._index
        if not names:
            return np.zeros(0)
        h = an.perceptual_hash(image)
        d = an.image_descriptor(image)
        hash_sim = np.clip(1.0 - _hamming_many(hashes, h) / 32.0, 0.0, 1.0)
        desc_sim = np.clip(descs @ d, 0.0, 1.0)
        sim = _HASH_WEIGHT * hash_sim + _DESC_WEIGHT * desc_sim
        best = np.zeros(len(names))
        np.maximum.at(best, owners, sim)
        return best

    def classify(self, batch: Sequence[Array], *, top_k: int = 5) -> list[Prediction]:
        names = self._index[3]
        out = []
        for image in batch:
            best = self.similarity(image)
            order = np.argsort(-best, kind="stable")[:top_k]
            out.append(
                Prediction(tuple(names[i] for i in order), tuple(float(best[i]) for i in order))
            )
        return out

    def warm_up(self) -> None:
        self.classify([np.zeros((64, 64, 3), np.uint8)])


class OnnxClassifier:
    """An image classification network run by onnxruntime (extra ``[onnx]``).

    ``path``: the .onnx file, with one NCHW float32 input and one (N, classes)
    output (logits or probabilities: a softmax is applied unless the rows
    already sum to 1).  Images are resized to ``input_size`` (width, height)
    by ``an.resize`` (area), scaled to [0, 1], normalised by ``mean``/``std``
    per channel.  ``sessions`` InferenceSessions live in an ``an.ObjectPool``,
    so that many threads may run batches at once.
    """

    def __init__(
        self,
        path: str,
        labels: Sequence[str],
        input_size: tuple[int, int] = (224, 224),
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        *,
        sessions: int = 2,
        threads_per_session: int = 1,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(
                "OnnxClassifier needs onnxruntime: pip install 'amulet_native[onnx]'"
            ) from exc
        self._ort = ort
        self.path = str(path)
        self.labels_ = list(labels)
        self.input_size = input_size
        self.mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
        self.threads_per_session = threads_per_session
        self.name = f"onnx:{self.path.rsplit('/', 1)[-1]}"
        self.version = "1"
        self.batchable = True  # one session run per batch amortises the call
        self._pool: an.ObjectPool[Any] = an.ObjectPool(self._new_session, max_size=sessions)
        with self._pool.acquire() as probe:
            self._input = probe.get_inputs()[0].name

    def _new_session(self) -> Any:
        opts = self._ort.SessionOptions()
        opts.intra_op_num_threads = self.threads_per_session
        opts.inter_op_num_threads = 1
        return self._ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])

    def preprocess(self, batch: Sequence[Array]) -> npt.NDArray[np.float32]:
        """The NCHW float32 tensor of a batch of RGB (or grey) uint8 images."""
        w, h = self.input_size
        planes = []
        for image in batch:
            rgb = image if image.ndim == 3 else image[:, :, None]
            if rgb.shape[2] == 1:
                rgb = np.repeat(rgb, 3, axis=2)
            planes.append(an.resize(rgb[:, :, :3], (w, h)))
        x = np.stack(planes).astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
        return np.ascontiguousarray((x - self.mean) / self.std, dtype=np.float32)

    def classify(self, batch: Sequence[Array], *, top_k: int = 5) -> list[Prediction]:
        if not batch:
            return []
        x = self.preprocess(batch)
        with self._pool.acquire(timeout=30) as session:
            (scores,) = session.run(None, {self._input: x})[:1]
        scores = np.asarray(scores, np.float64)
        if not (np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)):
            e = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = e / e.sum(axis=1, keepdims=True)
        out = []
        for row in scores:
            order = np.argsort(-row, kind="stable")[:top_k]
            out.append(
                Prediction(
                    tuple(self.labels_[i] for i in order), tuple(float(row[i]) for i in order)
                )
            )
        return out

    def warm_up(self) -> None:
        w, h = self.input_size
        self.classify([np.zeros((h, w, 3), np.uint8)])

    def close(self) -> None:
        self._pool.close()
