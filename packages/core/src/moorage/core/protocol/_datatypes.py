"""The Open Inference Protocol datatype table and its numpy mapping."""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from moorage.core.errors import UnsupportedDatatype

__all__ = ["Datatype"]


class Datatype(StrEnum):
    """A tensor datatype name as the Open Inference Protocol spells it.

    ``BYTES`` tensors are numpy object arrays whose elements are ``bytes`` (or ``str``, which is
    sent as UTF-8). ``BF16`` has no numpy type: its tensors carry the raw 16-bit patterns as
    ``uint16`` and convert from/to float32 in JSON.
    """

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BF16 = "BF16"
    BYTES = "BYTES"

    @classmethod
    def parse(cls, name: object) -> Datatype:
        """The datatype called ``name``, or :class:`UnsupportedDatatype` naming the valid ones."""
        try:
            return _BY_NAME[name]  # type: ignore[index]
        except (KeyError, TypeError):
            valid = ", ".join(d.value for d in cls)
            raise UnsupportedDatatype(
                f"unsupported datatype {name!r}; expected one of {valid}", datatype=str(name)
            ) from None

    @property
    def numpy_dtype(self) -> np.dtype:
        """The little-endian numpy dtype that holds this datatype's elements."""
        return _TO_NUMPY[self]

    @property
    def itemsize(self) -> int:
        """Bytes per element on the wire; 0 for BYTES (variable length)."""
        return 0 if self is Datatype.BYTES else _TO_NUMPY[self].itemsize

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> Datatype:
        """The datatype for a numpy dtype (``object``, ``str_`` and ``bytes_`` give BYTES)."""
        dt = np.dtype(dtype)
        if dt.kind in "OSU":
            return cls.BYTES
        try:
            return _FROM_NUMPY[dt.newbyteorder("=") if dt.byteorder == ">" else dt]
        except KeyError:
            raise UnsupportedDatatype(
                f"numpy dtype {dt} has no Open Inference Protocol datatype"
            ) from None


_TO_NUMPY: dict[Datatype, np.dtype] = {
    Datatype.BOOL: np.dtype(np.bool_),
    Datatype.UINT8: np.dtype("<u1"),
    Datatype.UINT16: np.dtype("<u2"),
    Datatype.UINT32: np.dtype("<u4"),
    Datatype.UINT64: np.dtype("<u8"),
    Datatype.INT8: np.dtype("<i1"),
    Datatype.INT16: np.dtype("<i2"),
    Datatype.INT32: np.dtype("<i4"),
    Datatype.INT64: np.dtype("<i8"),
    Datatype.FP16: np.dtype("<f2"),
    Datatype.FP32: np.dtype("<f4"),
    Datatype.FP64: np.dtype("<f8"),
    Datatype.BF16: np.dtype("<u2"),
    Datatype.BYTES: np.dtype(object),
}

_FROM_NUMPY: dict[np.dtype, Datatype] = {
    dt: d for d, dt in _TO_NUMPY.items() if d not in (Datatype.BF16, Datatype.BYTES)
}
_BY_NAME: dict[str, Datatype] = {d.value: d for d in Datatype}
