"""REST codec: OIP v2 JSON bodies and the binary tensor data extension.

A binary-extension body is the JSON header followed by the raw tensor bytes, in tensor order;
``Inference-Header-Content-Length`` gives the JSON header's length. Tensors sent in binary carry
``parameters.binary_data_size`` and no ``data``. Numeric raw data is little-endian C-order; BYTES
elements are each a 4-byte little-endian length followed by the bytes.

Decoding builds numpy arrays that are views into the body (no copy) wherever the bytes allow:
a numeric tensor whose bytes are not aligned for its datatype is copied once, since unaligned
arrays make numpy math ~2x slower and C extensions unsafe. Encoding pads the JSON header with
trailing spaces to a multiple of 8 bytes, so the first binary tensor of our bodies is aligned.
Every malformed input raises a :class:`~moorage.core.errors.InvalidInput` subclass that names
the tensor and the problem.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson

from moorage.core.errors import InvalidInput, InvalidTensor, UnsupportedDatatype
from moorage.core.protocol._datatypes import Datatype
from moorage.core.protocol._types import (
    InferRequest,
    InferResponse,
    InferTensor,
    RequestedOutput,
    bf16_to_float32,
    checked_shape,
    float32_to_bf16,
    select_outputs,
)

__all__ = [
    "HEADER_LENGTH",
    "decode_bytes_elements",
    "decode_request",
    "decode_response",
    "encode_bytes_elements",
    "encode_request",
    "encode_response",
]

#: Header naming the JSON part's length in a binary-extension body (lower case as KServe sends).
HEADER_LENGTH = "inference-header-content-length"

_LEN = struct.Struct("<I")
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
Buffer = bytes | bytearray | memoryview


# ----------------------------------------------------------------------------- public API
def decode_request(
    body: Buffer,
    /,
    *,
    model_name: str,
    header_length: int | None = None,
    model_version: str | None = None,
) -> InferRequest:
    """Parse an OIP v2 REST request body (JSON, or JSON + binary tensors)."""
    doc, raw = _split(body, header_length)
    if not isinstance(doc, dict):
        raise InvalidInput("request body must be a JSON object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidInput("request field 'inputs' must be a list of tensors")
    tensors = _decode_tensors(inputs, raw, "input", model_name)
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=tensors,
        id=_optional_str(doc.get("id"), "id"),
        parameters=_parameters(doc.get("parameters"), "request"),
        outputs=_requested_outputs(doc.get("outputs")),
    )


def encode_response(
    response: InferResponse, /, *, request: InferRequest | None = None
) -> tuple[bytes, int | None]:
    """Serialize a response; returns ``(body, json_length)``, the length ``None`` when all-JSON.

    With ``request``, only the outputs it asks for are sent, binary where it asks for binary.
    """
    outputs = select_outputs(response, request) if request is not None else response.outputs
    items, buffers = _encode_tensors(outputs, "output")
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
    }
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = items
    return _join(doc, buffers)


def encode_request(request: InferRequest, /) -> tuple[bytes, int | None]:
    """Serialize a request (client side); inputs with ``binary_data`` set go in binary."""
    items, buffers = _encode_tensors(request.inputs, "input")
    doc: dict[str, Any] = {}
    if request.id is not None:
        doc["id"] = request.id
    if request.parameters:
        doc["parameters"] = request.parameters
    doc["inputs"] = items
    if request.outputs is not None:
        doc["outputs"] = [
            {"name": o.name, "parameters": o.parameters} if o.parameters else {"name": o.name}
            for o in request.outputs
        ]
    return _join(doc, buffers)


def decode_response(body: Buffer, /, *, header_length: int | None = None) -> InferResponse:
    """Parse an OIP v2 REST response body (client side)."""
    doc, raw = _split(body, header_length)
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        raise InvalidInput("response body must be a JSON object with an 'outputs' list")
    model_name = _optional_str(doc.get("model_name"), "model_name") or ""
    return InferResponse(
        model_name=model_name,
        model_version=_optional_str(doc.get("model_version"), "model_version"),
        outputs=_decode_tensors(doc["outputs"], raw, "output", model_name),
        id=_optional_str(doc.get("id"), "id"),
        parameters=_parameters(doc.get("parameters"), "response"),
    )


def encode_bytes_elements(values: Iterable[Any]) -> bytes:
    """BYTES elements in the raw layout: each a 4-byte LE length then its bytes."""
    parts: list[bytes] = []
    for value in values:
        item = _as_bytes(value)
        parts.append(_LEN.pack(len(item)))
        parts.append(item)
    return b"".join(parts)


def decode_bytes_elements(raw: Buffer, count: int, *, name: str = "") -> np.ndarray:
    """``count`` length-prefixed BYTES elements from ``raw`` (which must hold exactly those)."""
    view = memoryview(raw).cast("B") if not isinstance(raw, bytes) else raw
    pos, end = 0, len(view)
    if count * 4 > end:  # checked before allocating ``count`` slots a hostile shape may ask for
        raise InvalidTensor(
            f"tensor '{name}': {count} BYTES elements need at least {count * 4} bytes of length "
            f"prefixes, the data has {end}",
            tensor=name,
        )
    out = np.empty(count, dtype=object)
    for i in range(count):
        if pos + 4 > end:
            raise InvalidTensor(
                f"tensor '{name}': BYTES element {i} length prefix runs past the end of its data",
                tensor=name,
            )
        (size,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + size > end:
            raise InvalidTensor(
                f"tensor '{name}': BYTES element {i} of {size} bytes runs past the end of its data",
                tensor=name,
            )
        out[i] = bytes(view[pos : pos + size])
        pos += size
    if pos != end:
        raise InvalidTensor(
            f"tensor '{name}': {end - pos} bytes left over after {count} BYTES elements",
            tensor=name,
        )
    return out


# ----------------------------------------------------------------------------- decoding
def _split(body: Buffer, header_length: int | None) -> tuple[Any, memoryview]:
    view = memoryview(body)
    if header_length is None:
        head, raw = view, view[0:0]
    else:
        if header_length < 0 or header_length > len(view):
            raise InvalidInput(
                f"{HEADER_LENGTH} is {header_length} but the body has only {len(view)} bytes"
            )
        head, raw = view[:header_length], view[header_length:]
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        hint = (
            f"; a binary body needs the '{HEADER_LENGTH}' header" if header_length is None else ""
        )
        raise InvalidInput(f"invalid JSON in request body: {exc}{hint}") from None
    return doc, raw


def _decode_tensors(
    items: list[Any], raw: memoryview, kind: str, model_name: str
) -> list[InferTensor]:
    tensors: list[InferTensor] = []
    offset = 0
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidInput(f"{kind} {index} must be a JSON object")
        name = item.get("name")
        if not isinstance(name, str):
            raise InvalidInput(f"{kind} {index} needs a string 'name'")
        try:
            datatype = Datatype.parse(item.get("datatype"))
        except UnsupportedDatatype as exc:
            raise UnsupportedDatatype(f"{kind} '{name}': {exc.message}", tensor=name) from None
        shape = _shape(item.get("shape"), kind, name)
        params = _parameters(item.get("parameters"), f"{kind} '{name}'")
        size = params.pop("binary_data_size", None)
        if size is not None:
            if "data" in item:
                raise InvalidInput(
                    f"both 'data' and binary data are set for {kind} '{name}' "
                    f"of model '{model_name}'; send one of them"
                )
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(f"{kind} '{name}': binary_data_size must be an integer >= 0")
            if offset + size > len(raw):
                raise InvalidInput(
                    f"{kind} '{name}': binary_data_size {size} runs past the end of the body "
                    f"({len(raw) - offset} binary bytes left)"
                )
            data = _from_raw(raw[offset : offset + size], datatype, shape, name)
            offset += size
            params.setdefault("binary_data", True)
        elif "data" in item:
            data = _from_json(item["data"], datatype, shape, name)
        else:
            raise InvalidInput(
                f"'data' field is missing for {kind} '{name}' for model '{model_name}'"
            )
        tensors.append(InferTensor(name, datatype, shape, data, params))
    if offset != len(raw):
        raise InvalidInput(
            f"the body has {len(raw) - offset} binary bytes "
            "that no tensor's binary_data_size covers"
        )
    return tensors


def _shape(value: Any, kind: str, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise InvalidTensor(
            f"{kind} '{name}': 'shape' must be a list of non-negative integers, got {value!r}",
            tensor=name,
        )
    return checked_shape(value, kind, name)


def _from_raw(raw: memoryview, datatype: Datatype, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype is Datatype.BYTES:
        return decode_bytes_elements(raw, count, name=name).reshape(shape)
    expected = count * datatype.itemsize
    if len(raw) != expected:
        raise InvalidTensor(
            f"tensor '{name}': shape {list(shape)} of {datatype} needs {expected} bytes, "
            f"got {len(raw)}",
            tensor=name,
        )
    arr = np.frombuffer(raw, dtype=datatype.numpy_dtype, count=count)
    if not arr.flags.aligned:
        arr = arr.copy()
    return arr.reshape(shape)


def _from_json(data: Any, datatype: Datatype, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    try:
        if datatype is Datatype.BYTES:
            flat = _flatten(data)
            if len(flat) != count:
                raise _size_error(name, shape, len(flat))
            arr = np.empty(count, dtype=object)
            for value in flat:
                if not isinstance(value, str):
                    raise InvalidTensor(
                        f"tensor '{name}': BYTES data in JSON must be strings, got {value!r}",
                        tensor=name,
                    )
            arr[:] = flat
        elif datatype is Datatype.BF16:
            arr = float32_to_bf16(np.asarray(data, dtype=np.float32))
        else:
            arr = np.asarray(data, dtype=datatype.numpy_dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidTensor(
            f"tensor '{name}': data does not fit datatype {datatype}: {exc}", tensor=name
        ) from None
    if arr.size != count:
        raise _size_error(name, shape, arr.size)
    return arr.reshape(shape)


def _size_error(name: str, shape: tuple[int, ...], got: int) -> InvalidTensor:
    return InvalidTensor(
        f"tensor '{name}': shape {list(shape)} needs {math.prod(shape)} elements, data has {got}",
        tensor=name,
    )


def _flatten(data: Any) -> list[Any]:
    # Iterative: JSON may nest ~1000 levels deep, past Python's recursion limit.
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} 'parameters' must be a JSON object")
    return dict(value)


def _optional_str(value: Any, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidInput(f"'{field}' must be a string")


def _requested_outputs(value: Any) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidInput("request field 'outputs' must be a list")
    outputs = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"requested output {index} needs a string 'name'")
        outputs.append(RequestedOutput(item["name"], _parameters(item.get("parameters"), "output")))
    return outputs


# ----------------------------------------------------------------------------- encoding
def _encode_tensors(
    tensors: list[InferTensor], kind: str
) -> tuple[list[dict[str, Any]], list[Buffer]]:
    items: list[dict[str, Any]] = []
    buffers: list[Buffer] = []
    for tensor in tensors:
        params = {k: v for k, v in tensor.parameters.items() if k != "binary_data"}
        item: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype.value,
            "shape": list(tensor.shape),
        }
        if tensor.binary:
            raw = raw_bytes(tensor)
            params["binary_data_size"] = len(raw)
            buffers.append(raw)
            item["parameters"] = params
        else:
            if params:
                item["parameters"] = params
            item["data"] = _json_data(tensor, kind)
        items.append(item)
    return items, buffers


def raw_bytes(tensor: InferTensor) -> Buffer:
    """A tensor's raw wire bytes (a view of the array where possible)."""
    if tensor.datatype is Datatype.BYTES:
        return encode_bytes_elements(tensor.data.reshape(-1))
    arr = np.ascontiguousarray(tensor.data, dtype=tensor.datatype.numpy_dtype)
    return memoryview(arr).cast("B") if arr.size else b""  # type: ignore[arg-type]


def _json_data(tensor: InferTensor, kind: str) -> Any:
    if tensor.datatype is Datatype.BYTES:
        flat = tensor.data.reshape(-1)
        try:
            return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat]
        except UnicodeDecodeError:
            raise InvalidInput(
                f"{kind} '{tensor.name}' holds bytes that are not UTF-8 and cannot go in JSON; "
                "use binary_data=True"
            ) from None
    if tensor.datatype is Datatype.BF16:
        return bf16_to_float32(tensor.data.reshape(-1))
    arr = tensor.data.reshape(-1)
    if arr.dtype.byteorder == ">" or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, dtype=tensor.datatype.numpy_dtype)
    return arr


def _join(doc: dict[str, Any], buffers: list[Buffer]) -> tuple[bytes, int | None]:
    head = orjson.dumps(doc, option=_DUMPS_OPTIONS)
    if not buffers:
        return head, None
    head += b" " * (-len(head) % 8)  # trailing whitespace is valid JSON; aligns the tensors
    return b"".join([head, *buffers]), len(head)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytearray | memoryview | np.bytes_):
        return bytes(value)
    return str(value).encode("utf-8")
