"""gRPC side of the Open Inference Protocol: message classes and the one protobuf converter.

Needs the ``grpc`` extra (``protobuf``). The messages are built from an embedded descriptor in a
private descriptor pool (see ``scripts/gen-proto.py``), so they coexist with other libraries'
copies of the ``inference`` protocol in one process. Service wiring uses the method table
:data:`METHODS` with generic handlers; there are no generated ``*_pb2_grpc`` stubs.

Converters: :func:`request_from_proto`, :func:`request_to_proto`, :func:`response_to_proto`,
:func:`response_from_proto`. Raw contents (``raw_input_contents`` / ``raw_output_contents``)
decode to numpy views without copying. :func:`request_to_bytes` and :func:`response_to_bytes`
give the serialized message straight from the numpy buffers, at memory-copy speed: upb's
``SerializeToString`` grows its buffer in steps and runs at ~100 MB/s for a 16 MiB tensor.
"""

from __future__ import annotations

import math
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
# Wire tags of the raw contents fields (length-delimited), for serializing them by hand.
_RAW_INPUT_TAG = (
    pb.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number << 3
) | 2
_RAW_OUTPUT_TAG = (
    pb.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number << 3
) | 2
_REST_ONLY_PARAMETERS = frozenset({"binary_data", "binary_data_size", "binary_data_output"})
_INT64_MAX = 2**63 - 1


# ----------------------------------------------------------------------------- parameters
def _parameters_from_proto(params: Any) -> Parameters:
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
def _tensor_from_proto(message: Any, raw: bytes | None, kind: str, model_name: str) -> InferTensor:
    try:
        datatype = Datatype.parse(message.datatype)
    except UnsupportedDatatype as exc:
        raise UnsupportedDatatype(f"{kind} '{message.name}': {exc.message}") from None
    shape = tuple(int(d) for d in message.shape)
    if any(d < 0 for d in shape):
        raise InvalidTensor(f"{kind} '{message.name}': shape {list(shape)} has a negative size")
    shape = checked_shape(shape, kind, message.name)
    count = math.prod(shape)
    if raw is not None:
        if datatype is Datatype.BYTES:
            data = decode_bytes_elements(raw, count, name=message.name)
        else:
            if len(raw) != count * datatype.itemsize:
                raise InvalidTensor(
                    f"tensor '{message.name}': shape {list(shape)} of {datatype} needs "
                    f"{count * datatype.itemsize} bytes of raw contents, got {len(raw)}"
                )
            data = np.frombuffer(raw, dtype=datatype.numpy_dtype, count=count)
    else:
        field = _CONTENTS_FIELD.get(datatype)
        if field is None:
            raise InvalidInput(
                f"{kind} '{message.name}' of {datatype} must be sent in raw contents"
            )
        values = getattr(message.contents, field)
        if len(values) != count:
            raise InvalidTensor(
                f"tensor '{message.name}': shape {list(shape)} needs {count} elements, "
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
                    f"{kind} '{message.name}': contents do not fit datatype {datatype}: {exc}",
                    tensor=message.name,
                ) from None
    return InferTensor(
        message.name,
        datatype,
        shape,
        data.reshape(shape),
        _parameters_from_proto(message.parameters),
    )


def _tensors_from_proto(
    messages: Any, raw_contents: Any, kind: str, model_name: str
) -> list[InferTensor]:
    if len(raw_contents) == 0:
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


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _serialize(head: Any, tag: int, buffers: list[Buffer]) -> bytes:
    # A message's fields may come in any order on the wire, so the raw contents can follow the
    # rest of the message as length-delimited fields; one join copies each buffer once.
    parts: list[Buffer] = [head.SerializeToString()]
    prefix = _varint(tag)
    for buffer in buffers:
        parts += [prefix, _varint(len(buffer)), buffer]
    return b"".join(parts)


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
            RequestedOutput(o.name, _parameters_from_proto(o.parameters)) for o in message.outputs
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
    """The serialized ``ModelInferRequest`` for a core request, built at memory-copy speed.

    Parses to the same message as ``request_to_proto(request, raw=raw).SerializeToString()``.
    """
    message, buffers = _request_head(request, raw)
    return _serialize(message, _RAW_INPUT_TAG, buffers)


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
    """The serialized ``ModelInferResponse`` for a core response, built at memory-copy speed.

    Parses to the same message as ``response_to_proto(response, raw=raw).SerializeToString()``;
    a servicer can return these bytes from a handler registered without a response serializer.
    """
    message, buffers = _response_head(response, raw)
    return _serialize(message, _RAW_OUTPUT_TAG, buffers)


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
