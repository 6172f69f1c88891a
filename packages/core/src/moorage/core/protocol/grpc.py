"""gRPC side of the Open Inference Protocol: message classes and the one protobuf converter.

Needs the ``grpc`` extra (``protobuf``). The messages are built from an embedded descriptor in a
private descriptor pool (see ``scripts/gen-proto.py``), so they coexist with other libraries'
copies of the ``inference`` protocol in one process. Service wiring uses the method table
:data:`METHODS` with generic handlers; there are no generated ``*_pb2_grpc`` stubs.

Converters: :func:`request_from_proto`, :func:`request_to_proto`, :func:`response_to_proto`,
:func:`response_from_proto`. Raw contents (``raw_input_contents`` / ``raw_output_contents``)
decode to numpy views without copying. :func:`request_to_bytes` and :func:`response_to_bytes`
write the serialized message by hand, straight from the numpy buffers (at memory-copy speed:
upb's ``SerializeToString`` grows its buffer in steps), and without building a protobuf
message for a small one (the per-call cost of a server answering one row).
"""

from __future__ import annotations

import math
import struct
from types import SimpleNamespace
from typing import Any

import numpy as np

try:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "moorage.core.protocol.grpc needs protobuf: pip install 'moorage-core[grpc]'"
    ) from exc

from moorage.core.errors import InvalidInput, InvalidTensor, UnsupportedDatatype
from moorage.core.protocol._datatypes import Datatype
from moorage.core.protocol._generated.oip_descriptor import SERIALIZED
from moorage.core.protocol._types import (
    InferRequest,
    InferResponse,
    InferTensor,
    Parameters,
    RequestedOutput,
    checked_shape,
)
from moorage.core.protocol.rest import Buffer, _as_bytes, decode_bytes_elements, raw_bytes

__all__ = [
    "METHODS",
    "SERVICE_NAME",
    "pb",
    "request_from_proto",
    "request_to_bytes",
    "request_to_proto",
    "response_from_proto",
    "response_to_bytes",
    "response_to_proto",
]

SERVICE_NAME = "inference.GRPCInferenceService"

_pool = descriptor_pool.DescriptorPool()
_pool.Add(descriptor_pb2.FileDescriptorProto.FromString(SERIALIZED))


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"inference.{name}"))


_MESSAGE_NAMES = [
    "ServerLiveRequest", "ServerLiveResponse", "ServerReadyRequest", "ServerReadyResponse",
    "ModelReadyRequest", "ModelReadyResponse", "ServerMetadataRequest", "ServerMetadataResponse",
    "ModelMetadataRequest", "ModelMetadataResponse", "ModelInferRequest", "ModelInferResponse",
    "InferParameter", "InferTensorContents", "RepositoryModelLoadRequest",
    "RepositoryModelLoadResponse", "RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse",
]  # fmt: skip

#: The protocol's message classes by name: ``pb.ModelInferRequest`` and so on.
pb = SimpleNamespace(**{name: _message(name) for name in _MESSAGE_NAMES})

#: RPC name -> (request class, response class), in the service's order.
METHODS: dict[str, tuple[Any, Any]] = {
    method.name: (_message(method.input_type.name), _message(method.output_type.name))
    for method in _pool.FindServiceByName(SERVICE_NAME).methods
}

# Datatype -> InferTensorContents field; FP16 and BF16 travel only as raw contents.
_CONTENTS_FIELD: dict[Datatype, str] = {
    Datatype.BOOL: "bool_contents",
    Datatype.INT8: "int_contents",
    Datatype.INT16: "int_contents",
    Datatype.INT32: "int_contents",
    Datatype.INT64: "int64_contents",
    Datatype.UINT8: "uint_contents",
    Datatype.UINT16: "uint_contents",
    Datatype.UINT32: "uint_contents",
    Datatype.UINT64: "uint64_contents",
    Datatype.FP32: "fp32_contents",
    Datatype.FP64: "fp64_contents",
    Datatype.BYTES: "bytes_contents",
}
_REST_ONLY_PARAMETERS = frozenset({"binary_data", "binary_data_size", "binary_data_output"})
_INT64_MAX = 2**63 - 1


# ----------------------------------------------------------------------------- parameters
def _parameters_from_proto(params: Any) -> Parameters:
    if not params:  # the common case, and iterating an empty map costs a microsecond
        return {}
    out: Parameters = {}
    for key, value in params.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(value, which)
    return out


def _parameters_to_proto(params: Parameters, target: Any) -> None:
    for key, value in params.items():
        if key in _REST_ONLY_PARAMETERS:
            continue
        slot = target[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            if value > _INT64_MAX:
                slot.uint64_param = value
            else:
                slot.int64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        else:
            slot.string_param = str(value)


# ----------------------------------------------------------------------------- tensors
#: Shapes checked already -> their element count (a server sees the same few shapes).
_CHECKED_SHAPES: dict[tuple[int, ...], int] = {}
_CHECKED_SHAPES_KEPT = 256
#: Datatype -> (numpy dtype, bytes per element), for raw contents.
_RAW_LAYOUT = {d: (d.numpy_dtype, d.itemsize) for d in Datatype if d is not Datatype.BYTES}


def _element_count(shape: tuple[int, ...], kind: str, name: str) -> int:
    count = _CHECKED_SHAPES.get(shape)
    if count is not None:
        return count
    if any(d < 0 for d in shape):
        raise InvalidTensor(f"{kind} '{name}': shape {list(shape)} has a negative size")
    count = math.prod(checked_shape(shape, kind, name))
    if len(_CHECKED_SHAPES) >= _CHECKED_SHAPES_KEPT:
        _CHECKED_SHAPES.clear()
    _CHECKED_SHAPES[shape] = count
    return count


def _tensor_from_proto(message: Any, raw: bytes | None, kind: str, model_name: str) -> InferTensor:
    name = message.name
    try:
        datatype = Datatype.parse(message.datatype)
    except UnsupportedDatatype as exc:
        raise UnsupportedDatatype(f"{kind} '{name}': {exc.message}") from None
    shape = tuple(message.shape[:])  # ints; a slice first is twice as fast as iterating
    count = _element_count(shape, kind, name)
    if raw is not None:
        if datatype is Datatype.BYTES:
            data = decode_bytes_elements(raw, count, name=name)
        else:
            dtype, itemsize = _RAW_LAYOUT[datatype]
            if len(raw) != count * itemsize:
                raise InvalidTensor(
                    f"tensor '{name}': shape {list(shape)} of {datatype} needs "
                    f"{count * itemsize} bytes of raw contents, got {len(raw)}"
                )
            # the length is checked: a count would only slow numpy down (but for 0 items)
            data = np.frombuffer(raw, dtype) if count else np.frombuffer(raw, dtype, 0)
    else:
        field = _CONTENTS_FIELD.get(datatype)
        if field is None:
            raise InvalidInput(f"{kind} '{name}' of {datatype} must be sent in raw contents")
        values = getattr(message.contents, field)
        if len(values) != count:
            raise InvalidTensor(
                f"tensor '{name}': shape {list(shape)} needs {count} elements, "
                f"contents have {len(values)}"
            )
        if datatype is Datatype.BYTES:
            data = np.empty(count, dtype=object)
            data[:] = list(values)
        else:
            try:
                data = np.fromiter(values, dtype=datatype.numpy_dtype, count=count)
            except (OverflowError, ValueError) as exc:  # e.g. 1000 in int_contents of INT8
                raise InvalidTensor(
                    f"{kind} '{name}': contents do not fit datatype {datatype}: {exc}",
                    tensor=name,
                ) from None
    return InferTensor(
        name, datatype, shape, data.reshape(shape), _parameters_from_proto(message.parameters)
    )


def _tensors_from_proto(
    messages: Any, raw_contents: Any, kind: str, model_name: str
) -> list[InferTensor]:
    messages, raw_contents = messages[:], raw_contents[:]  # lists: faster to walk
    if not raw_contents:
        return [_tensor_from_proto(m, None, kind, model_name) for m in messages]
    if len(raw_contents) != len(messages):
        raise InvalidInput(
            f"the number of {kind}s ({len(messages)}) does not match the number of raw "
            f"contents ({len(raw_contents)}) for model '{model_name}'"
        )
    tensors = []
    for message, raw in zip(messages, raw_contents, strict=True):
        # An empty ``contents`` message is not data (MLServer sends one beside raw outputs).
        if message.HasField("contents") and message.contents.ListFields():
            raise InvalidInput(
                f"contents field must not be specified when using raw contents for {kind} "
                f"'{message.name}' for model '{model_name}'"
            )
        tensors.append(_tensor_from_proto(message, raw, kind, model_name))
    return tensors


def _tensors_to_proto(tensors: list[InferTensor], messages: Any, raw: bool) -> list[Buffer]:
    """Fill ``messages`` with the tensors; returns their raw contents (views where possible)."""
    use_raw = raw or any(t.datatype not in _CONTENTS_FIELD for t in tensors)
    raw_contents: list[Buffer] = []
    for tensor in tensors:
        message = messages.add()
        message.name = tensor.name
        message.datatype = tensor.datatype.value
        message.shape.extend(tensor.shape)
        _parameters_to_proto(tensor.parameters, message.parameters)
        if use_raw:
            raw_contents.append(raw_bytes(tensor))
        else:
            values = getattr(message.contents, _CONTENTS_FIELD[tensor.datatype])
            flat = tensor.data.reshape(-1)
            if tensor.datatype is Datatype.BYTES:
                values.extend(_as_bytes(v) for v in flat)  # as REST and raw contents do
            else:
                values.extend(flat.tolist())
    return raw_contents


# ----------------------------------------------------------------------------- wire encoding
# ``*_to_bytes`` write the protobuf wire format by hand (proto3: fields in any order, empty
# strings left out, oneof members and map entries always written); ``*_to_proto`` build the
# same message with protobuf's classes, and the tests hold the two to parsing alike. Field
# numbers are the OIP proto's: ModelInferRequest/Response 1 model_name, 2 model_version, 3 id,
# 4 parameters; request 5 inputs, 6 outputs, 7 raw_input_contents; response 5 outputs,
# 6 raw_output_contents; a tensor 1 name, 2 datatype, 3 shape (packed), 4 parameters,
# 5 contents; a requested output 1 name, 2 parameters; a map entry 1 key, 2 value.
_SMALL_VARINTS = tuple(bytes((n,)) for n in range(128))
_UINT64 = (1 << 64) - 1
_DOUBLE = struct.Struct("<d")
#: (name, datatype, shape) -> a tensor message's first three fields, for the tensors seen last.
_TENSOR_HEADS: dict[tuple[str, Datatype, tuple[int, ...]], bytes] = {}
_TENSOR_HEADS_KEPT = 256


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """A length-delimited field: ``key``, the length, ``data``."""
    size = len(data)
    return key + (_SMALL_VARINTS[size] if size < 0x80 else _varint(size)) + data


def _text(key: bytes, text: str) -> bytes:
    return _field(key, text.encode()) if text else b""


def _parameter_bytes(value: Any) -> bytes:
    """An ``InferParameter`` as :func:`_parameters_to_proto` fills it."""
    if isinstance(value, bool):
        return b"\x08\x01" if value else b"\x08\x00"
    if isinstance(value, int):
        if value > _INT64_MAX:
            if value > _UINT64:
                raise ValueError(f"Value out of range: {value}")
            return b"\x28" + _varint(value)
        if value < -_INT64_MAX - 1:
            raise ValueError(f"Value out of range: {value}")
        return b"\x10" + _varint(value & _UINT64)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    return _field(b"\x1a", str(value).encode())


def _parameters_bytes(key: bytes, params: Parameters) -> bytes:
    """A parameters map as its entries, each under ``key`` (REST-only names dropped)."""
    entries = []
    for name, value in params.items():
        if name in _REST_ONLY_PARAMETERS:
            continue
        if not isinstance(name, str):
            raise TypeError(f"parameter name {name!r} is not a string")
        entry = _field(b"\x0a", name.encode()) + _field(b"\x12", _parameter_bytes(value))
        entries.append(_field(key, entry))
    return b"".join(entries)


def _tensor_head(name: str, datatype: Datatype, shape: tuple[int, ...]) -> bytes:
    key = (name, datatype, shape)
    head = _TENSOR_HEADS.get(key)
    if head is None:
        head = _text(b"\x0a", name) + _text(b"\x12", datatype.value)
        if shape:
            head += _field(b"\x1a", b"".join(_varint(int(d) & _UINT64) for d in shape))
        if len(_TENSOR_HEADS) >= _TENSOR_HEADS_KEPT:
            _TENSOR_HEADS.clear()
        _TENSOR_HEADS[key] = head
    return head


def _contents_bytes(tensor: InferTensor) -> bytes:
    """The typed ``contents`` of a tensor (field 5; present even when empty, as protobuf's
    classes write it once touched)."""
    flat = tensor.data.reshape(-1)
    datatype = tensor.datatype
    if datatype is Datatype.FP32 or datatype is Datatype.FP64:  # packed fixed-width: as is
        raw = np.ascontiguousarray(flat, dtype=datatype.numpy_dtype).tobytes()
        field = b"\x32" if datatype is Datatype.FP32 else b"\x3a"
        return _field(b"\x2a", _field(field, raw) if raw else b"")
    contents = pb.InferTensorContents()
    values = getattr(contents, _CONTENTS_FIELD[datatype])
    if datatype is Datatype.BYTES:
        values.extend(_as_bytes(v) for v in flat)  # as REST and raw contents do
    else:
        values.extend(flat.tolist())
    return _field(b"\x2a", contents.SerializeToString())


def _tensors_bytes(
    key: bytes, tensors: list[InferTensor], raw: bool, raw_key: bytes
) -> tuple[list[bytes], list[Buffer]]:
    """The tensor messages (each under ``key``) and the raw contents fields that follow the
    message (views of the arrays where possible: the final join copies them once)."""
    use_raw = raw or any(t.datatype not in _CONTENTS_FIELD for t in tensors)
    messages: list[bytes] = []
    raw_fields: list[Buffer] = []
    for tensor in tensors:
        body = _tensor_head(tensor.name, tensor.datatype, tensor.shape)
        if tensor.parameters:
            body += _parameters_bytes(b"\x22", tensor.parameters)
        if use_raw:
            buffer = raw_bytes(tensor)
            size = len(buffer)
            raw_fields += [raw_key + (_SMALL_VARINTS[size] if size < 0x80 else _varint(size)),
                           buffer]  # fmt: skip
        else:
            body += _contents_bytes(tensor)
        messages.append(_field(key, body))
    return messages, raw_fields


def _head_bytes(message: InferRequest | InferResponse) -> bytes:
    head = _text(b"\x0a", message.model_name) + _text(b"\x12", message.model_version or "")
    head += _text(b"\x1a", message.id or "")
    if message.parameters:
        head += _parameters_bytes(b"\x22", message.parameters)
    return head


# ----------------------------------------------------------------------------- requests
def request_from_proto(message: Any) -> InferRequest:
    """A core request from a ``ModelInferRequest``."""
    model_name = message.model_name
    inputs = _tensors_from_proto(message.inputs, message.raw_input_contents, "input", model_name)
    return InferRequest(
        model_name=model_name,
        model_version=message.model_version or None,
        id=message.id or None,
        inputs=inputs,
        parameters=_parameters_from_proto(message.parameters),
        outputs=[
            RequestedOutput(o.name, _parameters_from_proto(o.parameters))
            for o in message.outputs[:]
        ]
        or None,
    )


def _request_head(request: InferRequest, raw: bool) -> tuple[Any, list[Buffer]]:
    message = pb.ModelInferRequest(
        model_name=request.model_name,
        model_version=request.model_version or "",
        id=request.id or "",
    )
    _parameters_to_proto(request.parameters, message.parameters)
    buffers = _tensors_to_proto(request.inputs, message.inputs, raw)
    for output in request.outputs or []:
        wanted = message.outputs.add()
        wanted.name = output.name
        _parameters_to_proto(output.parameters, wanted.parameters)
    return message, buffers


def request_to_proto(request: InferRequest, /, *, raw: bool = True) -> Any:
    """A ``ModelInferRequest`` from a core request; ``raw`` puts tensors in raw contents."""
    message, buffers = _request_head(request, raw)
    message.raw_input_contents.extend([bytes(b) for b in buffers])
    return message


def request_to_bytes(request: InferRequest, /, *, raw: bool = True) -> bytes:
    """The serialized ``ModelInferRequest`` for a core request, written by hand (tensors at
    memory-copy speed: upb's ``SerializeToString`` grows its buffer in steps).

    Parses to the same message as ``request_to_proto(request, raw=raw).SerializeToString()``.
    """
    tensors, raw_fields = _tensors_bytes(b"\x2a", request.inputs, raw, b"\x3a")
    outputs = []
    for output in request.outputs or []:
        body = _text(b"\x0a", output.name)
        if output.parameters:
            body += _parameters_bytes(b"\x12", output.parameters)
        outputs.append(_field(b"\x32", body))
    return b"".join([_head_bytes(request), *tensors, *outputs, *raw_fields])


def _response_head(response: InferResponse, raw: bool) -> tuple[Any, list[Buffer]]:
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    _parameters_to_proto(response.parameters, message.parameters)
    return message, _tensors_to_proto(response.outputs, message.outputs, raw)


def response_to_proto(response: InferResponse, /, *, raw: bool = True) -> Any:
    """A ``ModelInferResponse`` from a core response."""
    message, buffers = _response_head(response, raw)
    message.raw_output_contents.extend([bytes(b) for b in buffers])
    return message


def response_to_bytes(response: InferResponse, /, *, raw: bool = True) -> bytes:
    """The serialized ``ModelInferResponse`` for a core response, written by hand (see
    :func:`request_to_bytes`).

    Parses to the same message as ``response_to_proto(response, raw=raw).SerializeToString()``;
    a servicer can return these bytes from a handler registered without a response serializer.
    """
    tensors, raw_fields = _tensors_bytes(b"\x2a", response.outputs, raw, b"\x32")
    return b"".join([_head_bytes(response), *tensors, *raw_fields])


def response_from_proto(message: Any) -> InferResponse:
    """A core response from a ``ModelInferResponse``."""
    model_name = message.model_name
    return InferResponse(
        model_name=model_name,
        model_version=message.model_version or None,
        id=message.id or None,
        outputs=_tensors_from_proto(
            message.outputs, message.raw_output_contents, "output", model_name
        ),
        parameters=_parameters_from_proto(message.parameters),
    )
