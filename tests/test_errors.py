"""The exception hierarchy: classes, codes, context, pickling, messages."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import pytest

import amulet_native as an
from amulet_native import _core, errors

ALL_CLASSES = [
    getattr(errors, name)
    for name in errors.__all__
    if not issubclass(getattr(errors, name), Warning)  # AmuletWarning and its subclasses
]

# class -> (expected bases that must hold, example fields)
HIERARCHY: dict[type[Exception], tuple[tuple[type, ...], dict[str, Any]]] = {
    errors.AmuletError: ((Exception,), {}),
    errors.ValidationError: ((errors.AmuletError, ValueError), {"field": "mode"}),
    errors.UnsupportedFormatError: ((errors.ValidationError, ValueError),
                                    {"field": "data", "format": "gif"}),
    errors.ModelError: ((errors.AmuletError,), {}),
    errors.ProcessingError: ((errors.AmuletError,), {"stage": "decode"}),
    errors.DecodeError: ((errors.ProcessingError, errors.AmuletError), {"stage": "decode"}),
    errors.NetworkError: ((errors.AmuletError,), {}),
    errors.SecurityError: ((errors.AmuletError,), {"severity": "medium"}),
    errors.ImageTooLargeError: ((errors.SecurityError, errors.AmuletError),
                                {"limit_name": "max_pixels", "actual": 10**10, "limit": 10**8}),
    errors.MemoryLimitError: ((errors.AmuletError, MemoryError),
                              {"requested": 1 << 30, "limit": 1 << 20, "in_use": 5}),
    errors.SerializationError: ((errors.ValidationError, ValueError, TypeError),
                                {"field": "value", "type_name": "object"}),
    errors.PayloadTooLargeError: ((errors.ValidationError, ValueError),
                                  {"field": "body", "limit": 100, "received": 101}),
    errors.ReentrantCallError: ((errors.AmuletError, RuntimeError), {"function": "f"}),
    errors.LockTimeoutError: ((errors.AmuletError, TimeoutError), {"name": "db", "timeout": 1.5}),
    errors.DeadlockError: ((errors.AmuletError, RuntimeError),
                           {"name": "a", "cycle": [(1, "a"), (2, "b")]}),
    errors.LockReleaseError: ((errors.AmuletError, RuntimeError), {"name": "a"}),
    errors.PoolTimeoutError: ((errors.AmuletError, TimeoutError), {"timeout": 0.5, "max_size": 2}),
    errors.PoolClosedError: ((errors.AmuletError, RuntimeError), {}),
    errors.QueueClosed: ((errors.AmuletError,), {}),
    errors.MissingDependencyError: ((errors.AmuletError, ImportError),
                                    {"module": "redis", "extra": "redis"}),
    errors.ArenaError: ((errors.AmuletError,), {"path": "/dev/shm/m.arena"}),
    errors.ArenaFullError: ((errors.ArenaError, errors.AmuletError), {"path": "/dev/shm/m.arena"}),
    errors.RateLimitExceeded: ((errors.AmuletError,), {"retry_after": 1.5}),
    # resilience
    errors.CircuitOpenError: ((errors.AmuletError,), {"name": "db", "retry_after": 2.5}),
    errors.BulkheadFullError: ((errors.AmuletError,), {"name": "model", "max_concurrent": 4}),
    errors.OperationTimeoutError: ((errors.AmuletError, TimeoutError), {"seconds": 1.0}),
}


def test_every_class_is_covered() -> None:
    assert set(HIERARCHY) == set(ALL_CLASSES)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_hierarchy(cls: type[Exception]) -> None:
    bases, _ = HIERARCHY[cls]
    for base in bases:
        assert issubclass(cls, base), (cls, base)
    assert issubclass(cls, errors.AmuletError)
    # the same object from both import paths
    assert getattr(an, cls.__name__) is cls
    assert getattr(errors, cls.__name__) is cls


def test_specific_relations() -> None:
    assert issubclass(an.ValidationError, ValueError)
    assert issubclass(an.MemoryLimitError, MemoryError)
    assert issubclass(an.ImageTooLargeError, an.SecurityError)
    assert issubclass(an.DecodeError, an.ProcessingError)
    assert issubclass(an.UnsupportedFormatError, an.ValidationError)
    assert not issubclass(an.DecodeError, ValueError)
    assert not issubclass(an.ImageTooLargeError, ValueError)
    assert issubclass(an.AmuletWarning, Warning)
    assert an.AmuletWarning is errors.AmuletWarning
    assert issubclass(an.CacheCallbackWarning, an.AmuletWarning)


def test_error_table_names_existing_classes_and_unique_codes() -> None:
    table = _core.error_table()
    assert len(table) >= 15
    codes = [code for code, _, _ in table]
    assert len(codes) == len(set(codes)), "duplicate error codes"
    for code, class_name, message in table:
        cls = getattr(errors, class_name, None)
        assert isinstance(cls, type) and issubclass(cls, errors.AmuletError), class_name
        assert code and code == code.strip() and " " not in code
        assert message
    by_code = {code: cls for code, cls, _ in table}
    expected = {
        "decode.truncated": "DecodeError",
        "decode.corrupt": "DecodeError",
        "format.unsupported": "UnsupportedFormatError",
        "format.mismatch": "UnsupportedFormatError",
        "limits.pixels": "ImageTooLargeError",
        "limits.bytes": "ImageTooLargeError",
        "limits.jpeg_scans": "ImageTooLargeError",
        "value.out": "ValidationError",
        "input.type": "ValidationError",
        "memory.limit": "MemoryLimitError",
    }
    for code, cls in expected.items():
        assert by_code.get(code) == cls, code


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_pickle_round_trip(cls: type[errors.AmuletError]) -> None:
    _, fields = HIERARCHY[cls]
    e = cls("something went wrong", code="test.code", context={"detail": "x", "n": 3}, **fields)
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(e, protocol=proto))
        assert type(back) is cls
        assert back.code == "test.code"
        assert back.message == "something went wrong"
        assert back.context == e.context
        assert back.context["n"] == 3
        for name, value in fields.items():
            assert getattr(back, name) == value
        assert str(back) == str(e)
        assert repr(back) == repr(e)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_defaults_and_messages(cls: type[errors.AmuletError]) -> None:
    e = cls("image too big")
    assert isinstance(e.code, str) and e.code
    assert e.context == {}
    assert "image too big" in str(e) and e.code in str(e)
    assert repr(e).startswith(cls.__name__ + "(")
    assert "image too big" in repr(e)
    bare = cls()
    assert str(bare) == f"[{bare.code}]"
    with pytest.raises(TypeError):
        cls("x", no_such_field=1)


def test_typed_attributes() -> None:
    e = an.ImageTooLargeError("big", limit_name="max_width", actual=5, limit=4)
    assert (e.limit_name, e.actual, e.limit) == ("max_width", 5, 4)
    assert e.severity == "high"  # SecurityError's default
    assert an.UnsupportedFormatError("x").format == "unknown"
    assert an.UnsupportedFormatError("x", format="gif").format == "gif"
    assert an.ValidationError("x", field="out").field == "out"
    assert an.DecodeError("x", stage="decode").stage == "decode"
    m = an.MemoryLimitError("x", requested=10, limit=5, in_use=1)
    assert (m.requested, m.limit, m.in_use) == (10, 5, 1)
    assert an.DecodeError("x").code == "decode.corrupt"


def raised_by_library() -> list[errors.AmuletError]:
    """Real exceptions from the C binding (not constructed by hand)."""
    out: list[errors.AmuletError] = []
    attempts: list[Callable[[], object]] = [
        lambda: an.decode(b"II*\x00" + bytes(20)),  # TIFF: not decoded
        lambda: an.decode(b"\xff\xd8\xff\xe0" + bytes(10)),
        lambda: an.decode(b""),
        lambda: an.decode(b"\x89PNG\r\n\x1a\n" + bytes(40)),
        lambda: an.decode(object()),  # type: ignore[arg-type]
        lambda: an.Limits(max_pixels=-1),
    ]
    for attempt in attempts:
        try:
            attempt()
        except errors.AmuletError as e:
            out.append(e)
    return out


def test_library_errors_pickle_with_context() -> None:
    raised = raised_by_library()
    assert len(raised) == 6
    for e in raised:
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e)
        assert (back.code, back.context, str(back)) == (e.code, e.context, str(e))
    tiff = raised[0]
    assert isinstance(tiff, an.UnsupportedFormatError) and tiff.format == "tiff"
    assert "tiff" in str(tiff).lower()
    for e in raised:
        assert str(e).endswith(f"[{e.code}]")
        assert len(str(e)) > len(e.code) + 5  # a sentence, not just the code
