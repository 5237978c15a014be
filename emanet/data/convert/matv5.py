"""A pre-flight walk over a MATLAB v5 ``.mat`` file, for the element codes scipy's reader trusts.

scipy's v5 reader (``scipy.io.loadmat``, up to at least 1.17) looks up the data-type code of each numeric
and character element in a C table without checking its range: a damaged file whose element carries
code 0, 8, 10, 11, 14, 15 or anything above 18 crashes the whole process (segmentation fault) instead of
raising (scipy PRs 25349 and 25829, not released; found here by fuzzing SBD's ``GTcls`` files), and so
does a char array whose dimensions element is empty (found by fuzzing COCO-Stuff-10k files). Such a file
must never reach scipy. Nor must a cell or struct array whose damaged dimensions claim more elements
than the file could hold: scipy allocates them all first (8 bytes each: a flipped byte asks for gigabytes).
:func:`unsafe_element` reads the file the way scipy's reader does (tags, small data elements, compressed
variables, array headers, cells, structs, objects) and reports the first such element. Everything else
that is wrong with a file is left to scipy, which raises.
"""

from __future__ import annotations

import struct
import zlib

#: Data types scipy has a dtype for (miINT8..miUINT64, miUTF8/16/32): the codes safe in a data element.
SAFE_DATA_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18})
_MATRIX, _COMPRESSED = 14, 15
_CELL, _STRUCT, _OBJECT, _CHAR, _SPARSE = 1, 2, 3, 4, 5
_NUMERIC = range(6, 16)  # mxDOUBLE_CLASS .. mxUINT64_CLASS (logical arrays are uint8 with a flag)
_MAX_DEPTH = 64  # nesting deeper than this would exhaust scipy's C stack: refused as well
_MAX_INFLATED = 1 << 28  # 256 MiB: a compressed variable inflating to more is no label map (a zip bomb)


class _Stop(Exception):
    """The walk cannot follow the file further; scipy raises an error at this point too."""


class _Unsafe(Exception):
    """An element scipy would crash on; the message says which."""


class _Stream:
    def __init__(self, data: bytes, order: str):
        self.data, self.pos, self.order = data, 0, order

    def room(self) -> int:
        """How many 8-byte tags can still follow: an upper bound on the elements a cell or struct can hold."""
        return (len(self.data) - self.pos) // 8

    def words(self) -> tuple[int, int]:
        if self.pos + 8 > len(self.data):
            raise _Stop
        first, second = struct.unpack_from(self.order + "II", self.data, self.pos)
        self.pos += 8
        return first, second

    def full_tag(self) -> tuple[int, int]:
        """A matrix tag (no small-element form), leaving the stream at the start of its contents."""
        return self.words()

    def element(self) -> tuple[int, bytes]:
        """A data element, small (type and size packed in one word, data in the next) or full (padded to 8)."""
        first, second = self.words()
        if first >> 16:
            size = first >> 16
            if size > 4:
                raise _Stop
            return first & 0xFFFF, self.data[self.pos - 4 : self.pos - 4 + size]
        start, end = self.pos, self.pos + second
        if end > len(self.data):
            raise _Stop
        self.pos = end + (-second % 8)
        return first, self.data[start:end]


def unsafe_element(data: bytes) -> str | None:
    """What in ``data`` (a whole ``.mat`` file) would crash scipy's v5 reader, or None if nothing would.

    Files that are not v5 (v4, v7.3, garbage) are left to scipy's own checks (None)."""
    if len(data) < 128 or data[:4].count(0):  # as scipy decides: too short, or v4 (a zero in the first 4 bytes)
        return None
    major = data[125] if data[126:127] == b"I" else data[124]
    if major != 1:  # v7.3 (2) or no MAT file at all: scipy refuses it
        return None
    order = "<" if data[126:128] == b"IM" else ">"  # scipy's guess: anything but "IM" reads as big-endian
    top = _Stream(data, order)
    top.pos = 128
    try:
        while top.pos < len(data):
            start = top.pos
            kind, size = top.full_tag()
            if size == 0:
                return None  # scipy: "Did not read any bytes"
            top.pos += size
            # a compressed variable is read from its inflated bytes only; a plain one from the file itself,
            # past its declared size if its contents say so (scipy reads on, then seeks to the next one)
            stream = _Stream(_inflate(data[start + 8 : top.pos]) if kind == _COMPRESSED else data[start:], order)
            if len(stream.data) > _MAX_INFLATED:
                raise _Unsafe(f"a compressed variable inflates to more than {_MAX_INFLATED >> 20} MiB")
            try:
                _variable(stream)
            except _Stop:
                continue  # scipy raises for this variable (or warns and moves on to the next)
    except _Unsafe as exc:
        return str(exc)
    except _Stop:
        return None
    return None


def _inflate(body: bytes) -> bytes:
    """As much of a compressed variable as zlib gives before any error (scipy reads it lazily)."""
    inflater, out, size = zlib.decompressobj(), [], 0
    for start in range(0, len(body), 4096):
        try:
            out.append(inflater.decompress(body[start : start + 4096], _MAX_INFLATED + 1 - size))
        except zlib.error:
            break
        size += len(out[-1])
        if size > _MAX_INFLATED:
            break
    return b"".join(out)


def _variable(s: _Stream) -> None:
    kind, size = s.full_tag()
    if kind != _MATRIX or size == 0:
        raise _Stop
    _matrix(s, 0)


def _nested(s: _Stream, depth: int) -> None:
    kind, size = s.full_tag()
    if kind != _MATRIX:
        raise _Stop
    if size:
        _matrix(s, depth + 1)


def _data(s: _Stream, what: str) -> None:
    kind, _ = s.element()
    if kind not in SAFE_DATA_TYPES:
        raise _Unsafe(f"the {what} element has data type code {kind}, which no MATLAB type has")


def _room(s: _Stream, count: int, claim: str) -> None:
    if count > s.room():
        raise _Unsafe(
            f"a {claim.format(count)}, more than the {s.room():,} the rest of the file could hold "
            f"(damaged dimensions; scipy would allocate them all first)"
        )


def _matrix(s: _Stream, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _Unsafe(f"cells or structs are nested more than {_MAX_DEPTH} deep")
    s.words()  # the flags tag
    flags, _ = s.words()
    mx_class, complex_ = flags & 0xFF, (flags >> 11) & 1
    _, raw_dims = s.element()
    if len(raw_dims) < 8:  # scipy crashes on a char array without dimensions; MATLAB writes 2 or more
        raise _Unsafe(f"an array's dimensions element holds {len(raw_dims)} bytes, fewer than two dimensions")
    count = 1
    for (dim,) in struct.iter_unpack(s.order + "i", raw_dims[: len(raw_dims) // 4 * 4]):
        count *= max(dim, 0)
    s.element()  # the name
    if mx_class in _NUMERIC:
        for part in ("real", "imaginary")[: 1 + complex_]:
            _data(s, f"{part} part")
    elif mx_class == _SPARSE:
        for part in ("row index", "column index", "real part", "imaginary part")[: 3 + complex_]:
            _data(s, f"sparse {part}")
    elif mx_class == _CHAR:
        _data(s, "char")
    elif mx_class == _CELL:
        _room(s, count, "cell array claims {:,} elements")
        for _ in range(count):
            _nested(s, depth)
    elif mx_class in (_STRUCT, _OBJECT):
        if mx_class == _OBJECT:
            s.element()  # the class name
        _, raw_length = s.element()
        _, names = s.element()
        if len(raw_length) < 4:
            raise _Stop
        (length,) = struct.unpack_from(s.order + "i", raw_length)
        if length <= 0:
            raise _Stop
        fields = len(names) // length
        if fields:
            _room(s, count * fields, "struct array claims {:,} field values")
        for _ in range(count * fields):
            _nested(s, depth)
    elif mx_class in (16, 17):
        raise _Unsafe("it holds a MATLAB function handle or opaque object, never part of a label map")
    else:
        raise _Stop  # scipy: unknown class
