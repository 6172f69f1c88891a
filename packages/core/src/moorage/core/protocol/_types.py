"""The Open Inference Protocol v2 data model: tensors, requests and responses.

These are plain slotted dataclasses carrying numpy arrays, shared by REST and gRPC and by the
server and the client. They are not validated element by element: the codecs check shape,
datatype and sizes once, when bytes become tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moorage.core.errors import InvalidInput, InvalidTensor
from moorage.core.protocol._datatypes import _FROM_NUMPY, Datatype

__all__ = [
    "InferRequest",
    "InferResponse",
    "InferTensor",
    "Parameters",
    "RequestedOutput",
]

#: Tensor, request and output parameters: OIP allows bool, int, str (and Triton double).
Parameters = dict[str, Any]


def _element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


# numpy's own limits: at most 64 dimensions (32 before numpy 2), and the elements of the
# non-zero dimensions times the item size must fit in a signed 64-bit integer.
_MAX_RANK = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32
_MAX_ELEMENTS = (2**63 - 1) // 8


def checked_shape(shape: Sequence[int], kind: str, name: str) -> tuple[int, ...]:
    """``shape`` (non-negative ints) as a tuple, or :class:`InvalidTensor` if numpy cannot hold it.

    Decoders call this before building arrays, so a zero-sized tensor with absurd dimensions or
    too many dimensions is a typed error, not a ``ValueError`` from numpy.
    """
    if len(shape) > _MAX_RANK:
        raise InvalidTensor(
            f"{kind} '{name}': shape has {len(shape)} dimensions; "
            f"at most {_MAX_RANK} are supported",
            tensor=name,
        )
    if math.prod(d for d in shape if d) > _MAX_ELEMENTS:
        raise InvalidTensor(f"{kind} '{name}': shape {list(shape)} is too large", tensor=name)
    return tuple(shape)


@dataclass(slots=True, eq=False)
class InferTensor:
    """A named tensor: ``data`` is a numpy array of ``shape`` holding ``datatype`` elements.

    For BYTES, ``data`` is an object array of ``bytes`` or ``str``. For BF16, ``data`` holds the
    raw 16-bit patterns as ``uint16``. Construct from numpy with :meth:`from_numpy`.
    """

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: Parameters = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data.shape != self.shape:
            if self.data.size != _element_count(self.shape):
                raise InvalidTensor(
                    f"tensor '{self.name}' has shape {list(self.shape)} "
                    f"({_element_count(self.shape)} elements) but {self.data.size} data elements",
                    tensor=self.name,
                )
            self.data = self.data.reshape(self.shape)

    @classmethod
    def from_numpy(
        cls,
        name: str,
        array: Any,
        /,
        *,
        datatype: Datatype | str | None = None,
        binary: bool | None = None,
        parameters: Parameters | None = None,
    ) -> InferTensor:
        """A tensor from a numpy array (or anything ``np.asarray`` takes).

        ``datatype`` defaults to the array's; ``binary=True`` asks the REST codec to send this
        tensor in the binary extension (sets ``parameters["binary_data"]``).
        """
        if type(array) is np.ndarray and datatype is None and binary is None and not parameters:
            # the common case (a model's numeric output): the array as it is
            found = _FROM_NUMPY.get(array.dtype)
            if found is not None:
                return cls(name, found, array.shape, array, {})
        dt = Datatype.parse(datatype) if datatype is not None else None
        if dt is Datatype.BYTES or (dt is None and _is_text(array)):
            arr = np.asarray(array, dtype=object)
            dt = Datatype.BYTES
        else:
            arr = np.asarray(array)
            if dt is None:
                dt = Datatype.from_numpy(arr.dtype)
            elif dt is Datatype.BF16 and arr.dtype != np.uint16:
                arr = float32_to_bf16(arr)
            else:
                arr = arr.astype(dt.numpy_dtype, copy=False)
        params = dict(parameters or {})
        if binary is not None:
            params["binary_data"] = binary
        return cls(name, dt, tuple(int(s) for s in arr.shape), arr, params)

    def as_numpy(self) -> np.ndarray:
        """The data as a numpy array of ``shape`` (BF16 widened to float32)."""
        if self.datatype is Datatype.BF16:
            return bf16_to_float32(self.data)
        return self.data

    @property
    def binary(self) -> bool | None:
        """The tensor's ``binary_data`` parameter, if set."""
        value = self.parameters.get("binary_data")
        return None if value is None else bool(value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InferTensor):
            return NotImplemented
        return (
            self.name == other.name
            and self.datatype == other.datatype
            and self.shape == other.shape
            and self.parameters == other.parameters
            and _arrays_equal(self.data, other.data)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(slots=True)
class RequestedOutput:
    """An output the caller asks for, with its own parameters (``binary_data``, ...)."""

    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """An inference request for ``model_name`` (and optionally ``model_version``)."""

    model_name: str
    inputs: list[InferTensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None
    model_version: str | None = None

    def input(self, name: str) -> InferTensor:
        """The input called ``name`` or :class:`InvalidInput`."""
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise InvalidInput(f"input '{name}' is missing for model '{self.model_name}'")

    @property
    def binary_outputs(self) -> bool:
        """Whether the request asks for every output in the binary extension."""
        return bool(self.parameters.get("binary_data_output", False))


@dataclass(slots=True)
class InferResponse:
    """The result of an inference request."""

    model_name: str
    outputs: list[InferTensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    model_version: str | None = None

    def output(self, name: str) -> InferTensor:
        """The output called ``name`` or :class:`InvalidInput`."""
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise InvalidInput(f"output '{name}' is missing from the response of '{self.model_name}'")


def select_outputs(response: InferResponse, request: InferRequest) -> list[InferTensor]:
    """The response outputs the request asked for, in the request's order, with binary flags.

    Without requested outputs, every output is returned. Each output's ``binary_data`` parameter
    is resolved: the requested output's own flag wins over the request's ``binary_data_output``.
    An unknown requested name raises :class:`InvalidInput`.
    """
    default_binary = request.binary_outputs
    if request.outputs is None:
        return [
            _with_binary(t, t.binary if t.binary is not None else default_binary)
            for t in response.outputs
        ]
    by_name = {t.name: t for t in response.outputs}
    selected = []
    for wanted in request.outputs:
        tensor = by_name.get(wanted.name)
        if tensor is None:
            raise InvalidInput(
                f"Unexpected inference output '{wanted.name}' for model '{response.model_name}'"
            )
        flag = wanted.parameters.get("binary_data")
        selected.append(_with_binary(tensor, default_binary if flag is None else bool(flag)))
    return selected


def _with_binary(tensor: InferTensor, binary: bool) -> InferTensor:
    if tensor.binary is binary:
        return tensor
    params = dict(tensor.parameters)
    params["binary_data"] = binary
    return InferTensor(tensor.name, tensor.datatype, tensor.shape, tensor.data, params)


def _is_text(array: Any) -> bool:
    if isinstance(array, np.ndarray):
        return array.dtype.kind in "OSU"
    if isinstance(array, str | bytes):
        return True
    if isinstance(array, list | tuple) and array:
        first = array[0]
        while isinstance(first, list | tuple) and first:
            first = first[0]
        return isinstance(first, str | bytes)
    return False


def _arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def float32_to_bf16(values: Any) -> np.ndarray:
    """Round float32 values to the nearest bfloat16, returned as raw ``uint16`` patterns."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    nan = np.isnan(bits.view(np.float32))
    out = (rounded >> np.uint32(16)).astype(np.uint16)
    out[nan] = 0x7FC0
    return out


def bf16_to_float32(patterns: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 ``uint16`` patterns to float32 (exact)."""
    return (patterns.astype(np.uint32) << np.uint32(16)).view(np.float32)
