"""Round trips through every OIP codec: JSON, binary tensor extension and protobuf.

``decode(encode(x)) == x`` for every datatype, empty, zero-sized and high-rank shapes, BYTES with
embedded NULs and non-UTF-8 bytes (binary and protobuf only), NaN and infinities (binary and
protobuf exactly; JSON carries NaN as ``null``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from moorage.core.protocol import (
    Datatype,
    InferRequest,
    InferResponse,
    InferTensor,
    RequestedOutput,
    bf16_to_float32,
    float32_to_bf16,
)
from moorage.core.protocol import grpc as oip_grpc
from moorage.core.protocol.rest import (
    HEADER_LENGTH,
    decode_bytes_elements,
    decode_request,
    decode_response,
    encode_bytes_elements,
    encode_request,
    encode_response,
)

FAST = settings(max_examples=20, deadline=None)
NUMERIC = [d for d in Datatype if d is not Datatype.BYTES]

# ----------------------------------------------------------------------------- strategies
names = st.text(min_size=1, max_size=8)
small_shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
high_rank_shapes = st.lists(st.sampled_from([1, 1, 1, 1, 1, 2, 0]), min_size=5, max_size=32).map(
    tuple
)
shapes = st.one_of(small_shapes, small_shapes, high_rank_shapes).filter(
    lambda s: int(np.prod(s)) <= 64
)


def _elements(datatype: Datatype, *, json: bool, proto_typed: bool = False) -> st.SearchStrategy:
    """Element values of ``datatype``; JSON has no infinities and no non-UTF-8 strings."""
    if datatype is Datatype.BYTES:
        if json:
            return st.text(max_size=6)
        return st.one_of(st.binary(max_size=6), st.just(b"\x00\xff\x00"), st.just(b""))
    if datatype is Datatype.BF16:
        if json:  # finite patterns: the exponent is not all ones
            return st.integers(0, 0xFFFF).filter(lambda p: (p >> 7) & 0xFF != 0xFF)
        return st.integers(0, 0xFFFF)  # every bit pattern, NaN and inf included
    dtype = datatype.numpy_dtype
    if dtype.kind == "f":
        return st.floats(
            width=dtype.itemsize * 8, allow_nan=True, allow_infinity=not json, allow_subnormal=True
        )
    return hnp.from_dtype(dtype)


@st.composite
def tensors(
    draw: Any,
    datatype: Datatype | None = None,
    *,
    json: bool = False,
    name: str | None = None,
) -> InferTensor:
    dt = datatype or draw(st.sampled_from(list(Datatype)))
    shape = draw(shapes)
    np_dtype = object if dt is Datatype.BYTES else dt.numpy_dtype
    data = draw(hnp.arrays(np_dtype, shape, elements=_elements(dt, json=json)))
    return InferTensor(name or draw(names), dt, tuple(shape), data)


def _distinct_names(items: list[InferTensor]) -> list[InferTensor]:
    for i, tensor in enumerate(items):
        tensor.name = f"t{i}-{tensor.name}"
    return items


parameters = st.dictionaries(
    st.text(min_size=1, max_size=6).filter(lambda k: not k.startswith("binary_data")),
    st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=8)),
    max_size=3,
)
optional_ids = st.one_of(st.none(), st.text(min_size=1, max_size=8))


def _with_binary(tensor: InferTensor, binary: bool) -> InferTensor:
    if binary:
        tensor.parameters["binary_data"] = True
    return tensor


# ----------------------------------------------------------------------------- JSON
@pytest.mark.parametrize("datatype", list(Datatype), ids=str)
@given(data=st.data())
@FAST
def test_json_request_round_trip_each_datatype(datatype: Datatype, data: st.DataObject) -> None:
    tensor = data.draw(tensors(datatype, json=True))
    request = InferRequest(
        "m",
        [tensor],
        id=data.draw(optional_ids),
        parameters=data.draw(parameters),
        outputs=data.draw(
            st.one_of(st.none(), st.lists(st.builds(RequestedOutput, names, parameters)))
        ),
    )
    body, length = encode_request(request)
    assert length is None
    back = decode_request(body, model_name="m")
    assert back == request


@pytest.mark.parametrize("datatype", list(Datatype), ids=str)
@given(data=st.data())
@FAST
def test_json_response_round_trip_each_datatype(datatype: Datatype, data: st.DataObject) -> None:
    outputs = _distinct_names(data.draw(st.lists(tensors(datatype, json=True), max_size=3)))
    response = InferResponse(
        data.draw(names),
        outputs,
        id=data.draw(optional_ids),
        parameters=data.draw(parameters),
        model_version=data.draw(optional_ids),
    )
    body, length = encode_response(response)
    assert length is None
    assert decode_response(body) == response


def test_json_nan_is_null_and_comes_back_nan() -> None:
    tensor = InferTensor.from_numpy("x", np.array([np.nan, 1.5, -0.0], dtype=np.float32))
    body, _ = encode_request(InferRequest("m", [tensor]))
    assert b'"data":[null,1.5,-0.0]' in body
    back = decode_request(body, model_name="m").inputs[0]
    assert back.data.dtype == np.float32
    assert np.isnan(back.data[0]) and back.data[1] == 1.5 and np.signbit(back.data[2])


def test_json_tensor_layout_matches_kserve() -> None:
    tensor = InferTensor.from_numpy("in", np.arange(6, dtype=np.int32).reshape(2, 3))
    body, _ = encode_request(InferRequest("m", [tensor], id="1"))
    assert body == (
        b'{"id":"1","inputs":[{"name":"in","datatype":"INT32","shape":[2,3],"data":[0,1,2,3,4,5]}]}'
    )
    # Nested data as KServe clients often send it is accepted as well as flat data.
    nested = b'{"inputs":[{"name":"in","datatype":"INT32","shape":[2,3],"data":[[0,1,2],[3,4,5]]}]}'
    assert decode_request(nested, model_name="m").inputs[0] == tensor


def test_json_bytes_are_utf8_text() -> None:
    tensor = InferTensor.from_numpy("s", np.array([b"a\x00b", "h\u00e9"], dtype=object))
    body, _ = encode_request(InferRequest("m", [tensor]))
    back = decode_request(body, model_name="m").inputs[0]
    assert back.data.tolist() == ["a\x00b", "h\u00e9"]


# ----------------------------------------------------------------------------- binary extension
@pytest.mark.parametrize("datatype", list(Datatype), ids=str)
@given(data=st.data())
@FAST
def test_binary_request_round_trip_each_datatype(datatype: Datatype, data: st.DataObject) -> None:
    inputs = _distinct_names(
        [
            _with_binary(t, True)
            for t in data.draw(st.lists(tensors(datatype), min_size=1, max_size=3))
        ]
    )
    request = InferRequest(
        "m", inputs, id=data.draw(optional_ids), parameters=data.draw(parameters)
    )
    body, length = encode_request(request)
    assert length is not None and 0 < length <= len(body)
    back = decode_request(body, model_name="m", header_length=length)
    assert back == request


@pytest.mark.parametrize("datatype", list(Datatype), ids=str)
@given(data=st.data())
@FAST
def test_binary_response_round_trip_each_datatype(datatype: Datatype, data: st.DataObject) -> None:
    outputs = _distinct_names(
        [
            _with_binary(t, True)
            for t in data.draw(st.lists(tensors(datatype), min_size=1, max_size=3))
        ]
    )
    response = InferResponse("m", outputs, id=data.draw(optional_ids), model_version="2")
    body, length = encode_response(response)
    assert length is not None
    assert decode_response(body, header_length=length) == response


@given(data=st.data())
@settings(max_examples=80, deadline=None)
def test_mixed_binary_and_json_tensors_in_one_body(data: st.DataObject) -> None:
    # Binary tensors take their bytes in order; JSON tensors between them take none.
    count = data.draw(st.integers(1, 5))
    inputs = []
    for i in range(count):
        binary = data.draw(st.booleans())
        tensor = data.draw(tensors(json=not binary, name=f"in{i}"))
        inputs.append(_with_binary(tensor, binary))
    request = InferRequest("m", inputs)
    body, length = encode_request(request)
    if any(t.binary for t in inputs):
        assert length is not None
    back = decode_request(body, model_name="m", header_length=length)
    assert back == request
    response = InferResponse("m", inputs)
    body, length = encode_response(response)
    assert decode_response(body, header_length=length) == response


def test_binary_body_layout() -> None:
    a = InferTensor.from_numpy("a", np.array([1, 2], dtype=np.int16), binary=True)
    b = InferTensor.from_numpy("b", [b"xy", b""], binary=True)
    c = InferTensor.from_numpy("c", np.array([True]))
    body, length = encode_request(InferRequest("m", [a, c, b]))
    assert HEADER_LENGTH == "inference-header-content-length"
    head = body[:length]
    assert b'"parameters":{"binary_data_size":4}' in head
    assert b'"parameters":{"binary_data_size":10}' in head
    assert b'"data":[true]' in head
    assert b'binary_data"' not in head  # the client-side flag is not sent
    assert body[length:] == b"\x01\x00\x02\x00" + b"\x02\x00\x00\x00xy" + b"\x00\x00\x00\x00"


@given(st.lists(st.binary(max_size=20), max_size=20))
@settings(max_examples=100, deadline=None)
def test_bytes_elements_round_trip(values: list[bytes]) -> None:
    raw = encode_bytes_elements(values)
    assert len(raw) == 4 * len(values) + sum(map(len, values))
    assert decode_bytes_elements(raw, len(values)).tolist() == values
    assert decode_bytes_elements(memoryview(raw), len(values)).tolist() == values
    assert decode_bytes_elements(bytearray(raw), len(values)).tolist() == values


def test_bytes_elements_str_is_utf8() -> None:
    assert (
        encode_bytes_elements(["h\u00e9", b"\x00"])
        == b"\x03\x00\x00\x00h\xc3\xa9\x01\x00\x00\x00\x00"
    )


@pytest.mark.parametrize("datatype", NUMERIC, ids=str)
def test_binary_decode_is_a_view_of_the_body(datatype: Datatype) -> None:
    dtype = datatype.numpy_dtype
    first = InferTensor("a", datatype, (2, 3), np.zeros((2, 3), dtype=dtype), {"binary_data": True})
    second = InferTensor("b", datatype, (4,), np.ones(4, dtype=dtype), {"binary_data": True})
    body, length = encode_request(InferRequest("m", [first, second]))
    whole = np.frombuffer(body, dtype=np.uint8)
    back = decode_request(body, model_name="m", header_length=length)
    for tensor in back.inputs:
        assert np.shares_memory(tensor.data, whole)
        assert not tensor.data.flags.owndata
        assert tensor.data.dtype == dtype
    response_body, response_length = encode_response(InferResponse("m", [first, second]))
    decoded = decode_response(memoryview(response_body), header_length=response_length)
    whole = np.frombuffer(response_body, dtype=np.uint8)
    assert all(np.shares_memory(t.data, whole) for t in decoded.outputs)


def test_binary_encode_does_not_copy_into_intermediate_buffers() -> None:
    from moorage.core.protocol.rest import raw_bytes

    array = np.arange(1000, dtype=np.float32)
    raw = raw_bytes(InferTensor.from_numpy("a", array, binary=True))
    assert np.shares_memory(np.frombuffer(raw, dtype=np.float32), array)


# ----------------------------------------------------------------------------- floats
@pytest.mark.parametrize("datatype", [Datatype.FP16, Datatype.FP32, Datatype.FP64], ids=str)
def test_nan_and_infinities_exact_in_binary_and_protobuf(datatype: Datatype) -> None:
    values = np.array([np.nan, np.inf, -np.inf, -0.0, 1.0], dtype=datatype.numpy_dtype)
    tensor = InferTensor.from_numpy("f", values, binary=True)
    body, length = encode_request(InferRequest("m", [tensor]))
    back = decode_request(body, model_name="m", header_length=length).inputs[0].data
    assert back.tobytes() == values.tobytes()
    for raw in (True, False):
        message = oip_grpc.request_to_proto(InferRequest("m", [tensor]), raw=raw)
        parsed = oip_grpc.pb.ModelInferRequest.FromString(message.SerializeToString())
        got = oip_grpc.request_from_proto(parsed).inputs[0].data
        assert got.dtype == datatype.numpy_dtype
        assert got.tobytes() == values.tobytes()


def test_bf16_conversion() -> None:
    floats = np.array([1.0, -2.5, 3.0e38, np.inf, -np.inf, 1.00390625], dtype=np.float32)
    patterns = float32_to_bf16(floats)
    assert patterns.dtype == np.uint16
    assert patterns.tolist()[:5] == [0x3F80, 0xC020, 0x7F62, 0x7F80, 0xFF80]
    assert patterns[5] == 0x3F80  # ties round to even
    assert float32_to_bf16(np.array([np.nan], np.float32))[0] == 0x7FC0
    assert bf16_to_float32(patterns).tolist()[:2] == [1.0, -2.5]
    tensor = InferTensor.from_numpy("b", [1.0, 2.0], datatype="BF16")
    assert tensor.data.dtype == np.uint16 and tensor.as_numpy().tolist() == [1.0, 2.0]


@given(st.integers(0, 0xFFFF))
@settings(max_examples=150, deadline=None)
def test_bf16_widening_is_exact(pattern: int) -> None:
    patterns = np.array([pattern], dtype=np.uint16)
    wide = bf16_to_float32(patterns)
    if np.isnan(wide[0]):
        assert float32_to_bf16(wide)[0] == 0x7FC0
    else:
        assert float32_to_bf16(wide)[0] == pattern


# ----------------------------------------------------------------------------- protobuf
def _proto_ready(tensor: InferTensor) -> InferTensor:
    # Protobuf carries BYTES as bytes: str elements come back UTF-8 encoded.
    if tensor.datatype is Datatype.BYTES:
        flat = [v.encode() if isinstance(v, str) else v for v in tensor.data.reshape(-1)]
        data = np.empty(len(flat), dtype=object)
        data[:] = flat
        tensor = InferTensor(tensor.name, tensor.datatype, tensor.shape, data, tensor.parameters)
    return tensor


proto_parameters = st.dictionaries(
    st.text(min_size=1, max_size=6).filter(lambda k: not k.startswith("binary_data")),
    st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.text(max_size=8),
        st.floats(allow_nan=False),
    ),
    max_size=3,
)


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
@pytest.mark.parametrize("datatype", list(Datatype), ids=str)
@given(data=st.data())
@settings(max_examples=10, deadline=None)
def test_protobuf_request_round_trip(raw: bool, datatype: Datatype, data: st.DataObject) -> None:
    inputs = _distinct_names(data.draw(st.lists(tensors(datatype), max_size=3)))
    for tensor in inputs:
        tensor.parameters.update(data.draw(proto_parameters))
    request = InferRequest(
        data.draw(names),
        [_proto_ready(t) for t in inputs],
        id=data.draw(optional_ids),
        parameters=data.draw(proto_parameters),
        outputs=data.draw(
            st.one_of(
                st.none(), st.lists(st.builds(RequestedOutput, names, proto_parameters), min_size=1)
            )
        ),
        model_version=data.draw(optional_ids),
    )
    message = oip_grpc.request_to_proto(request, raw=raw)
    uses_raw = raw or datatype in (Datatype.FP16, Datatype.BF16)
    assert len(message.raw_input_contents) == (len(inputs) if uses_raw else 0)
    wire = message.SerializeToString()
    back = oip_grpc.request_from_proto(oip_grpc.pb.ModelInferRequest.FromString(wire))
    assert back == request


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
@pytest.mark.parametrize("datatype", list(Datatype), ids=str)
@given(data=st.data())
@settings(max_examples=10, deadline=None)
def test_protobuf_response_round_trip(raw: bool, datatype: Datatype, data: st.DataObject) -> None:
    outputs = _distinct_names(data.draw(st.lists(tensors(datatype), max_size=3)))
    response = InferResponse(
        data.draw(names),
        [_proto_ready(t) for t in outputs],
        id=data.draw(optional_ids),
        parameters=data.draw(proto_parameters),
        model_version=data.draw(optional_ids),
    )
    message = oip_grpc.response_to_proto(response, raw=raw)
    wire = message.SerializeToString()
    back = oip_grpc.response_from_proto(oip_grpc.pb.ModelInferResponse.FromString(wire))
    assert back == response


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_protobuf_mixed_datatypes_typed_falls_back_to_raw(data: st.DataObject) -> None:
    inputs = _distinct_names(data.draw(st.lists(tensors(), min_size=1, max_size=4)))
    request = InferRequest("m", [_proto_ready(t) for t in inputs])
    message = oip_grpc.request_to_proto(request, raw=False)
    needs_raw = any(t.datatype in (Datatype.FP16, Datatype.BF16) for t in inputs)
    assert bool(message.raw_input_contents) == needs_raw
    back = oip_grpc.request_from_proto(
        oip_grpc.pb.ModelInferRequest.FromString(message.SerializeToString())
    )
    assert back == request


def test_protobuf_rest_only_parameters_are_dropped() -> None:
    tensor = InferTensor.from_numpy("a", np.ones(2, np.float32), binary=True)
    request = InferRequest("m", [tensor], parameters={"binary_data_output": True, "k": "v"})
    message = oip_grpc.request_to_proto(request)
    assert dict(message.parameters) == {"k": oip_grpc.pb.InferParameter(string_param="v")}
    assert len(message.inputs[0].parameters) == 0


def test_protobuf_typed_contents_fields() -> None:
    expected = {
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
    for datatype, field in expected.items():
        values = [b"a", b"b"] if datatype is Datatype.BYTES else [1, 0]
        tensor = InferTensor.from_numpy("t", values, datatype=datatype)
        message = oip_grpc.request_to_proto(InferRequest("m", [tensor]), raw=False)
        contents = message.inputs[0].contents
        assert [f.name for f, _ in contents.ListFields()] == [field], datatype
    # KServe-style input with typed contents decodes.
    message = oip_grpc.pb.ModelInferRequest(model_name="m")
    item = message.inputs.add(name="x", datatype="INT8", shape=[2])
    item.contents.int_contents.extend([-128, 127])
    assert oip_grpc.request_from_proto(message).inputs[0].data.tolist() == [-128, 127]


@pytest.mark.parametrize("datatype", NUMERIC, ids=str)
def test_protobuf_raw_decode_is_zero_copy(datatype: Datatype) -> None:
    tensor = InferTensor("a", datatype, (3, 2), np.zeros((3, 2), dtype=datatype.numpy_dtype))
    message = oip_grpc.request_to_proto(InferRequest("m", [tensor, tensor]))
    parsed = oip_grpc.pb.ModelInferRequest.FromString(message.SerializeToString())
    for decoded in oip_grpc.request_from_proto(parsed).inputs:
        assert not decoded.data.flags.owndata
        base = decoded.data
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, bytes)  # the raw_input_contents bytes, not a copy of them
    response = oip_grpc.response_to_proto(InferResponse("m", [tensor]))
    out = oip_grpc.response_from_proto(response).outputs[0].data
    assert not out.flags.owndata


def test_protobuf_metadata_messages_exist() -> None:
    assert set(oip_grpc.METHODS) == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }
    assert oip_grpc.METHODS["ModelInfer"] == (
        oip_grpc.pb.ModelInferRequest,
        oip_grpc.pb.ModelInferResponse,
    )
    assert oip_grpc.SERVICE_NAME == "inference.GRPCInferenceService"
    assert oip_grpc.pb.ModelInferRequest.DESCRIPTOR.full_name == "inference.ModelInferRequest"


def test_bytes_elements_that_are_not_bytes_encode_alike_everywhere() -> None:
    # Object arrays may hold numbers or numpy scalars; every path sends their text as UTF-8.
    values = np.array([1, 2.5, np.bytes_(b"z"), "\u00e9", bytearray(b"\x00")], dtype=object)
    expected = [b"1", b"2.5", b"z", "\u00e9".encode(), b"\x00"]
    tensor = InferTensor("x", Datatype.BYTES, (5,), values, {"binary_data": True})
    body, length = encode_request(InferRequest("m", [tensor]))
    assert decode_request(body, model_name="m", header_length=length).inputs[0].data.tolist() == (
        expected
    )
    for raw in (True, False):
        message = oip_grpc.request_to_proto(InferRequest("m", [tensor]), raw=raw)
        assert oip_grpc.request_from_proto(message).inputs[0].data.tolist() == expected


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_to_bytes_matches_serialize_to_string(data: st.DataObject) -> None:
    # The hand-written serialization parses to exactly the message the converter builds:
    # every field, parameters of each kind on the message, its tensors and requested outputs.
    tensors_ = [
        _proto_ready(t) for t in _distinct_names(data.draw(st.lists(tensors(), max_size=4)))
    ]
    for tensor in tensors_:
        tensor.parameters = data.draw(proto_parameters)
    raw = data.draw(st.booleans())
    request = InferRequest(
        data.draw(st.text(max_size=6)),
        tensors_,
        id=data.draw(optional_ids),
        parameters=data.draw(proto_parameters),
        outputs=data.draw(
            st.one_of(
                st.none(),
                st.lists(st.builds(RequestedOutput, names, proto_parameters), min_size=1),
            )
        ),
        model_version=data.draw(optional_ids),
    )
    wire = oip_grpc.request_to_bytes(request, raw=raw)
    parsed = oip_grpc.pb.ModelInferRequest.FromString(wire)
    assert parsed == oip_grpc.request_to_proto(request, raw=raw)
    assert oip_grpc.request_from_proto(parsed) == request
    response = InferResponse(
        "m",
        tensors_,
        id=data.draw(optional_ids),
        model_version="1",
        parameters=data.draw(proto_parameters),
    )
    wire = oip_grpc.response_to_bytes(response, raw=raw)
    parsed = oip_grpc.pb.ModelInferResponse.FromString(wire)
    assert parsed == oip_grpc.response_to_proto(response, raw=raw)
    assert oip_grpc.response_from_proto(parsed) == response


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
def test_to_bytes_refuses_parameters_protobuf_cannot_hold(value: int) -> None:
    response = InferResponse("m", [], parameters={"k": value})
    with pytest.raises(ValueError, match="out of range"):
        oip_grpc.response_to_proto(response)
    with pytest.raises(ValueError, match="out of range"):
        oip_grpc.response_to_bytes(response)


def test_to_bytes_large_tensor_lengths() -> None:
    # Varint lengths of several bytes (>= 2**21) frame correctly.
    array = np.arange(2**20, dtype=np.float32)
    response = InferResponse(
        "m", [InferTensor.from_numpy("a", array), InferTensor.from_numpy("b", array[:3])]
    )
    parsed = oip_grpc.pb.ModelInferResponse.FromString(oip_grpc.response_to_bytes(response))
    assert [len(r) for r in parsed.raw_output_contents] == [2**22, 12]
    assert oip_grpc.response_from_proto(parsed) == response


@pytest.mark.parametrize("pad", range(8))
def test_unaligned_binary_tensors_are_copied_aligned(pad: int) -> None:
    # Other clients' headers have any length; a misaligned FP32 view would be slow to use.
    array = np.arange(64, dtype=np.float32)
    head = (
        orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "FP32",
                        "shape": [64],
                        "parameters": {"binary_data_size": 256},
                    }
                ]
            }
        )
        + b" " * pad
    )
    body = head + array.tobytes()
    tensor = decode_request(body, model_name="m", header_length=len(head)).inputs[0]
    assert tensor.data.flags.aligned
    assert tensor.data.tolist() == array.tolist()
    whole = np.frombuffer(body, dtype=np.uint8)
    aligned = (whole.ctypes.data + len(head)) % 4 == 0
    assert np.shares_memory(tensor.data, whole) == aligned


def test_encoded_binary_header_is_padded_for_alignment() -> None:
    for name in ("a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh"):
        tensor = InferTensor.from_numpy(name, np.arange(4, dtype=np.float64), binary=True)
        body, length = encode_request(InferRequest("m", [tensor]))
        assert length is not None and length % 8 == 0
        assert orjson.loads(body[:length])["inputs"][0]["name"] == name
        back = decode_request(body, model_name="m", header_length=length).inputs[0]
        assert np.shares_memory(back.data, np.frombuffer(body, dtype=np.uint8))


@pytest.mark.parametrize(
    "array",
    [
        np.array([1]),
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([[True, False]]),
        np.zeros((0, 4), dtype=np.uint16),
        np.array([1, 2], dtype=">i4"),  # big-endian: not the array as it is
        np.array(["a", "b"]),
        np.array([1.5], dtype=np.float16)[0:1],
    ],
)
def test_from_numpy_of_an_array_matches_the_explicit_datatype(array: np.ndarray) -> None:
    """A plain numeric array taken as it is gives what naming its datatype gives, each tensor
    with parameters of its own."""
    tensor = InferTensor.from_numpy("t", array)
    named = InferTensor.from_numpy("t", array, datatype=tensor.datatype)
    assert tensor == named
    assert tensor.shape == array.shape and all(type(d) is int for d in tensor.shape)
    assert tensor.datatype is Datatype.from_numpy(array.dtype)
    tensor.parameters["x"] = 1
    assert InferTensor.from_numpy("t", array).parameters == {}
