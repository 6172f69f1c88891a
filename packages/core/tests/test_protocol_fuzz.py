"""Fuzzing the decoders: arbitrary JSON, arbitrary bytes and near-valid messages either decode
to consistent tensors or raise a typed InvalidInput, nothing else."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moorage.core.errors import InvalidInput
from moorage.core.protocol import Datatype, InferTensor
from moorage.core.protocol import grpc as oip_grpc
from moorage.core.protocol.rest import decode_request, decode_response
from moorage.core.protocol.v1 import decode_v1_request

pytestmark = pytest.mark.timeout(600)

# MOORAGE_FUZZ_SCALE=20 runs twenty times the examples (minutes, not seconds) to search deeper.
_SCALE = float(os.environ.get("MOORAGE_FUZZ_SCALE", "1"))


def _fuzz(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * _SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)

# Near-valid tensors: each field drawn from valid values and the kinds of wrong ones.
datatypes = st.one_of(st.sampled_from([d.value for d in Datatype]), json_scalars)
dims = st.one_of(st.integers(0, 4), st.integers(-3, -1), st.sampled_from([2**62, 2**64 - 1]))
shape_values = st.one_of(
    st.lists(dims, max_size=4), json_values, st.lists(json_scalars, max_size=3)
)
data_values = st.one_of(
    st.lists(st.one_of(st.integers(-300, 300), st.floats(), st.text(max_size=3)), max_size=8),
    st.lists(st.lists(st.integers(0, 3), max_size=3), max_size=3),
    json_values,
)
binary_sizes = st.one_of(st.integers(-2, 40), json_scalars)


@st.composite
def tensor_docs(draw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        doc["name"] = draw(st.one_of(st.text(max_size=3), json_scalars))
    if draw(st.integers(0, 9)):
        doc["datatype"] = draw(datatypes)
    if draw(st.integers(0, 9)):
        doc["shape"] = draw(shape_values)
    if draw(st.booleans()):
        doc["data"] = draw(data_values)
    if draw(st.booleans()):
        params = draw(st.dictionaries(st.text(max_size=4), json_scalars, max_size=2))
        if draw(st.booleans()):
            params["binary_data_size"] = draw(binary_sizes)
        doc["parameters"] = params if draw(st.integers(0, 9)) else draw(json_values)
    return doc


@st.composite
def bodies(draw: Any, key: str) -> tuple[bytes, int | None]:
    doc: dict[str, Any] = {key: draw(st.lists(tensor_docs(), max_size=3))}
    for field in ("id", "parameters", "outputs", "model_name", "model_version"):
        if draw(st.integers(0, 3)) == 0:
            doc[field] = draw(json_values)
    head = orjson.dumps(doc if draw(st.integers(0, 19)) else draw(json_values))
    raw = draw(st.binary(max_size=48))
    if not raw and draw(st.booleans()):
        return head, None
    length = draw(st.one_of(st.just(len(head)), st.integers(-2, len(head) + len(raw) + 2)))
    return head + raw, length


def _typed_or_ok(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except InvalidInput:
        return None


def _consistent(tensors: list[InferTensor]) -> None:
    for tensor in tensors:
        assert isinstance(tensor.datatype, Datatype)
        assert tensor.data.shape == tensor.shape
        assert all(isinstance(d, int) and d >= 0 for d in tensor.shape)
        if tensor.datatype is not Datatype.BYTES:
            assert tensor.data.dtype == tensor.datatype.numpy_dtype


# ----------------------------------------------------------------------------- REST and v1
@given(json_values)
@_fuzz(150)
def test_arbitrary_json_documents(doc: Any) -> None:
    body = orjson.dumps(doc)
    request = _typed_or_ok(lambda: decode_request(body, model_name="m"))
    if request is not None:
        _consistent(request.inputs)
    response = _typed_or_ok(lambda: decode_response(body))
    if response is not None:
        _consistent(response.outputs)
    _typed_or_ok(lambda: decode_v1_request(body))


@given(bodies("inputs"))
@_fuzz(200)
def test_near_valid_request_bodies(body_and_length: tuple[bytes, int | None]) -> None:
    body, length = body_and_length
    request = _typed_or_ok(lambda: decode_request(body, model_name="m", header_length=length))
    if request is not None:
        _consistent(request.inputs)


@given(bodies("outputs"))
@_fuzz(100)
def test_near_valid_response_bodies(body_and_length: tuple[bytes, int | None]) -> None:
    body, length = body_and_length
    response = _typed_or_ok(lambda: decode_response(body, header_length=length))
    if response is not None:
        _consistent(response.outputs)


@given(st.binary(max_size=64), st.one_of(st.none(), st.integers(-4, 80)))
@_fuzz(150)
def test_arbitrary_bytes(body: bytes, length: int | None) -> None:
    _typed_or_ok(lambda: decode_request(body, model_name="m", header_length=length))
    _typed_or_ok(lambda: decode_response(body, header_length=length))
    _typed_or_ok(lambda: decode_v1_request(body))


# ----------------------------------------------------------------------------- protobuf
proto_dims = st.one_of(st.integers(0, 4), st.integers(-3, -1), st.integers(2**40, 2**63 - 1))


@st.composite
def infer_messages(draw: Any, response: bool) -> bytes:
    cls = oip_grpc.pb.ModelInferResponse if response else oip_grpc.pb.ModelInferRequest
    message = cls(model_name=draw(st.text(max_size=3)), id=draw(st.text(max_size=3)))
    items = message.outputs if response else message.inputs
    for _ in range(draw(st.integers(0, 3))):
        item = items.add(
            name=draw(st.text(max_size=3)),
            datatype=draw(st.one_of(st.sampled_from([d.value for d in Datatype]), st.text())),
            shape=draw(st.lists(proto_dims, max_size=3)),
        )
        contents = item.contents
        which = draw(st.integers(0, 9))
        if which == 1:
            contents.int_contents.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1))))
        elif which == 2:
            contents.uint_contents.extend(draw(st.lists(st.integers(0, 2**32 - 1))))
        elif which == 3:
            contents.fp32_contents.extend(draw(st.lists(st.floats(width=32))))
        elif which == 4:
            contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=4))))
        elif which == 5:
            contents.bool_contents.extend(draw(st.lists(st.booleans())))
        elif which == 6:
            contents.uint64_contents.extend(draw(st.lists(st.integers(0, 2**64 - 1))))
        if draw(st.booleans()):
            item.parameters["p"].int64_param = draw(st.integers(-5, 5))
    raw = message.raw_output_contents if response else message.raw_input_contents
    raw.extend(draw(st.lists(st.binary(max_size=24), max_size=3)))
    if draw(st.booleans()):
        message.parameters["q"].string_param = draw(st.text(max_size=3))
    wire = message.SerializeToString()
    if wire and draw(st.integers(0, 3)) == 0:  # flip a byte: damaged framing
        at = draw(st.integers(0, len(wire) - 1))
        wire = wire[:at] + bytes([wire[at] ^ draw(st.integers(1, 255))]) + wire[at + 1 :]
    return wire


def _proto_typed_or_ok(wire: bytes, response: bool) -> None:
    cls = oip_grpc.pb.ModelInferResponse if response else oip_grpc.pb.ModelInferRequest
    try:
        message = cls.FromString(wire)
    except DecodeError:
        return  # not a message at all: protobuf's own error, before our converter runs
    convert = oip_grpc.response_from_proto if response else oip_grpc.request_from_proto
    result = _typed_or_ok(lambda: convert(message))
    if result is not None:
        _consistent(result.outputs if response else result.inputs)


@given(infer_messages(response=False))
@_fuzz(150)
def test_near_valid_infer_requests(wire: bytes) -> None:
    _proto_typed_or_ok(wire, response=False)


@given(infer_messages(response=True))
@_fuzz(80)
def test_near_valid_infer_responses(wire: bytes) -> None:
    _proto_typed_or_ok(wire, response=True)


@given(st.binary(max_size=96))
@_fuzz(150)
def test_arbitrary_bytes_as_protobuf(wire: bytes) -> None:
    _proto_typed_or_ok(wire, response=False)
    _proto_typed_or_ok(wire, response=True)


def test_decoded_bytes_inputs_are_bytes_objects() -> None:
    message = oip_grpc.pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="s", datatype="BYTES", shape=[2])
    message.raw_input_contents.append(b"\x01\x00\x00\x00a\x00\x00\x00\x00")
    data = oip_grpc.request_from_proto(message).inputs[0].data
    assert data.dtype == np.dtype(object) and data.tolist() == [b"a", b""]
