"""The primitive binary encoding shared by controller commands and snapshots.

Every value has exactly one encoding, so ``decode(encode(v)) == v`` and, for
any bytes that decode, ``encode(decode(b)) == b``: equal values are equal
bytes, which is what makes commands and snapshots deterministic.

All integers are big-endian and fixed-width:

============= ==================================================================
primitive     bytes
============= ==================================================================
``u8``        1
``u16``       2
``u32``       4
``u64``       8
``i64``       8, two's complement
``flag``      1: 0 or 1 (any other byte is an error, not "true")
``opt_i64``   ``flag`` present, then ``i64`` only when present
``text``      ``u16`` length, then that many bytes of UTF-8
``blob``      ``u16`` length, then the raw bytes
``ids``       ``u16`` count, then ``u64`` each (order kept: it can matter)
============= ==================================================================

Invariants:

- ``Writer`` refuses (``ValueError``) a value its field cannot hold (a
  negative ``u64``, a string longer than 65,535 UTF-8 bytes, ...) instead
  of silently wrapping it.
- ``Reader`` raises only ``WireError`` — for bytes that run short, a flag
  that is not 0 or 1, invalid UTF-8, or bytes left over at ``finish`` —
  never a bare ``struct.error`` or ``UnicodeDecodeError``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = ["Reader", "WireError", "Writer"]

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")

_LIMITS = {"u8": 0xFF, "u16": 0xFFFF, "u32": 0xFFFF_FFFF, "u64": 0xFFFF_FFFF_FFFF_FFFF}


class WireError(ValueError):
    """Bytes that this encoding never produces."""


def _check_unsigned(kind: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _LIMITS[kind]:
        raise ValueError(f"{value!r} does not fit in a {kind}")
    return value


class Writer:
    """Appends fields; ``bytes()`` is the encoding so far."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)

    def raw(self, data: bytes) -> Writer:
        self._parts.append(bytes(data))
        return self

    def u8(self, value: int) -> Writer:
        self._parts.append(_U8.pack(_check_unsigned("u8", value)))
        return self

    def u16(self, value: int) -> Writer:
        self._parts.append(_U16.pack(_check_unsigned("u16", value)))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(_U32.pack(_check_unsigned("u32", value)))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(_U64.pack(_check_unsigned("u64", value)))
        return self

    def i64(self, value: int) -> Writer:
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
            raise ValueError(f"{value!r} does not fit in an i64")
        self._parts.append(_I64.pack(value))
        return self

    def flag(self, value: bool) -> Writer:
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not a bool")
        return self.u8(1 if value else 0)

    def opt_i64(self, value: int | None) -> Writer:
        self.flag(value is not None)
        if value is not None:
            self.i64(value)
        return self

    def text(self, value: str) -> Writer:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a str")
        return self.blob(value.encode("utf-8"))

    def blob(self, value: bytes) -> Writer:
        if not isinstance(value, bytes):
            raise ValueError(f"{value!r} is not bytes")
        self.u16(len(value))
        self._parts.append(value)
        return self

    def ids(self, values: Sequence[int]) -> Writer:
        self.u16(len(values))
        for value in values:
            self.u64(value)
        return self


class Reader:
    """Reads fields in the order a ``Writer`` wrote them. ``what`` names the
    thing being decoded, for error messages."""

    __slots__ = ("_data", "_pos", "what")

    def __init__(self, data: bytes, what: str, start: int = 0) -> None:
        self._data = memoryview(data)
        self._pos = start
        self.what = what

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self._data) - self._pos

    def _take(self, size: int, field: str) -> memoryview:
        end = self._pos + size
        if end > len(self._data):
            raise WireError(
                f"{self.what}: {field} needs {size} bytes at offset {self._pos}, "
                f"only {len(self._data) - self._pos} left"
            )
        view = self._data[self._pos : end]
        self._pos = end
        return view

    def raw(self, size: int, field: str) -> bytes:
        """Exactly ``size`` bytes (a ``Writer.raw`` field of known size)."""
        return bytes(self._take(size, field))

    def u8(self, field: str) -> int:
        value: int = _U8.unpack(self._take(1, field))[0]
        return value

    def u16(self, field: str) -> int:
        value: int = _U16.unpack(self._take(2, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = _U32.unpack(self._take(4, field))[0]
        return value

    def u64(self, field: str) -> int:
        value: int = _U64.unpack(self._take(8, field))[0]
        return value

    def i64(self, field: str) -> int:
        value: int = _I64.unpack(self._take(8, field))[0]
        return value

    def flag(self, field: str) -> bool:
        value = self.u8(field)
        if value > 1:
            raise WireError(f"{self.what}: {field} is {value}, a flag must be 0 or 1")
        return value == 1

    def opt_i64(self, field: str) -> int | None:
        return self.i64(field) if self.flag(f"{field} (present)") else None

    def text(self, field: str) -> str:
        raw = self.blob(field)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WireError(f"{self.what}: {field} is not valid UTF-8") from None

    def blob(self, field: str) -> bytes:
        size = self.u16(f"{field} (length)")
        return bytes(self._take(size, field))

    def ids(self, field: str) -> tuple[int, ...]:
        count = self.u16(f"{field} (count)")
        return tuple(self.u64(field) for _ in range(count))

    def finish(self) -> None:
        """Raise unless every byte was read."""
        left = len(self._data) - self._pos
        if left:
            raise WireError(f"{self.what}: {left} unexpected trailing bytes")
