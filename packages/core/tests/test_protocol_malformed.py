"""Malformed bodies and messages raise a typed InvalidInput subclass: never another exception,
never a hang, never a huge allocation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from moorage.core.errors import InvalidInput, InvalidTensor, UnsupportedDatatype
from moorage.core.protocol import InferRequest, InferTensor
from moorage.core.protocol import grpc as oip_grpc
from moorage.core.protocol.rest import (
    decode_bytes_elements,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from moorage.core.protocol.v1 import decode_v1_request

pytestmark = pytest.mark.timeout(20)


def _raises(
    call: Callable[[], Any], cls: type[InvalidInput] = InvalidInput, match: str | None = None
) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        call()
    assert isinstance(info.value, cls), repr(info.value)
    if match is not None:
        assert match in str(info.value), str(info.value)
    return info.value


def _request(*inputs: dict[str, Any], raw: bytes = b"", **doc: Any) -> Callable[[], Any]:
    head = orjson.dumps({"inputs": list(inputs), **doc})
    if not raw:
        return lambda: decode_request(head, model_name="m")
    return lambda: decode_request(head + raw, model_name="m", header_length=len(head))


def _tensor(**fields: Any) -> dict[str, Any]:
    return {"name": "x", "datatype": "FP32", "shape": [2], **fields}


# ----------------------------------------------------------------------------- REST framing
@pytest.mark.parametrize("length", [-1, -(2**40), 100, 2**63])
def test_header_length_outside_the_body(length: int) -> None:
    _raises(lambda: decode_request(b'{"inputs":[]}', model_name="m", header_length=length))
    _raises(lambda: decode_response(b'{"outputs":[]}', header_length=length))


def test_binary_body_without_header_length() -> None:
    head = orjson.dumps({"inputs": [_tensor(parameters={"binary_data_size": 8})]})
    err = _raises(lambda: decode_request(head + b"\x00" * 8, model_name="m"))
    assert "inference-header-content-length" in str(err)


def test_header_length_cutting_the_json() -> None:
    head = orjson.dumps({"inputs": []})
    _raises(lambda: decode_request(head, model_name="m", header_length=len(head) - 1))
    _raises(lambda: decode_request(head, model_name="m", header_length=0))


@pytest.mark.parametrize(
    "body", [b"", b"[]", b"1", b'"x"', b"null", b"true", b"{", b"\xff\xfe", b'{"inputs":[]}x']
)
def test_not_a_json_object(body: bytes) -> None:
    _raises(lambda: decode_request(body, model_name="m"))
    _raises(lambda: decode_response(body))
    if body != b'{"inputs":[]}x':
        _raises(lambda: decode_v1_request(body))


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"inputs": None},
        {"inputs": {}},
        {"inputs": "x"},
        {"inputs": [1]},
        {"inputs": [[]]},
        {"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]},
        {"inputs": [{"name": 1, "datatype": "FP32", "shape": [1], "data": [1]}]},
        {"inputs": [], "id": 1},
        {"inputs": [], "id": ["x"]},
        {"inputs": [], "parameters": []},
        {"inputs": [], "parameters": "x"},
        {"inputs": [], "outputs": {}},
        {"inputs": [], "outputs": [1]},
        {"inputs": [], "outputs": [{"name": 1}]},
        {"inputs": [], "outputs": [{"name": "a", "parameters": 3}]},
        {"inputs": [_tensor(data=[1, 2], parameters=[])]},
    ],
)
def test_wrong_json_types_in_a_request(doc: dict[str, Any]) -> None:
    _raises(lambda: decode_request(orjson.dumps(doc), model_name="m"))


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"outputs": None},
        {"outputs": {}},
        {"outputs": [], "model_name": 3},
        {"outputs": [], "model_version": 3},
        {"outputs": [], "id": False},
        {"outputs": [], "parameters": [1]},
        {"outputs": [7]},
        {"outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]},
    ],
)
def test_wrong_json_types_in_a_response(doc: dict[str, Any]) -> None:
    _raises(lambda: decode_response(orjson.dumps(doc)))


# ----------------------------------------------------------------------------- REST tensors
@pytest.mark.parametrize("datatype", [None, "", "FLOAT32", "fp32", "STRING", 3, [], {}, True])
def test_unknown_datatype(datatype: Any) -> None:
    fields = {"datatype": datatype} if datatype is not None else {"datatype": None}
    err = _raises(_request(_tensor(data=[1, 2], **fields)), UnsupportedDatatype)
    assert "input 'x'" in str(err) and "FP32" in str(err)


@pytest.mark.parametrize(
    "shape", [None, 2, "2", [-1], [2, -3], [1.0], [True], ["2"], [None], [[2]], {"0": 2}]
)
def test_bad_shape(shape: Any) -> None:
    _raises(_request(_tensor(shape=shape, data=[1, 2])), InvalidTensor)
    _raises(
        _request(_tensor(shape=shape, parameters={"binary_data_size": 8}), raw=b"\x00" * 8),
        InvalidTensor,
    )


def test_missing_data_message_is_kserves() -> None:
    err = _raises(_request(_tensor()))
    assert str(err) == "'data' field is missing for input 'x' for model 'm'"
    body = orjson.dumps({"outputs": [_tensor()], "model_name": "r"})
    assert str(_raises(lambda: decode_response(body))) == (
        "'data' field is missing for output 'x' for model 'r'"
    )


def test_data_and_binary_both_set() -> None:
    err = _raises(_request(_tensor(data=[1, 2], parameters={"binary_data_size": 8}), raw=bytes(8)))
    assert "both 'data' and binary data" in str(err)


@pytest.mark.parametrize(("data", "shape"), [([1, 2, 3], [2]), ([1], [2]), ([], [1]), (1, [2])])
def test_json_shape_and_data_size_mismatch(data: Any, shape: list[int]) -> None:
    for datatype in ("FP32", "INT64", "BOOL", "BF16"):
        _raises(_request(_tensor(datatype=datatype, shape=shape, data=data)), InvalidTensor)
    strings = data if not isinstance(data, list) else [str(v) for v in data]
    _raises(_request(_tensor(datatype="BYTES", shape=shape, data=strings)), InvalidTensor)


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("FP32", [{"a": 1}, 2]),
        ("FP32", ["abc", 1]),
        ("FP32", [[1, 2], [3]]),
        ("INT8", [300, 1]),
        ("INT8", [-129, 1]),
        ("UINT8", [-1, 1]),
        ("UINT64", [-1, 0]),
        ("INT64", [2**63, 0]),
        ("INT32", [None, 1]),
        ("BYTES", [1, 2]),
        ("BYTES", ["a", None]),
        ("BYTES", [{"b64": "x"}, "a"]),
        ("BF16", ["x", 1.0]),
    ],
)
def test_json_data_of_the_wrong_type(datatype: str, data: Any) -> None:
    _raises(_request(_tensor(datatype=datatype, data=data)), InvalidTensor)


@pytest.mark.parametrize("size", [-1, 1.5, "8", True, [8], {"n": 8}])
def test_bad_binary_data_size(size: Any) -> None:
    _raises(_request(_tensor(parameters={"binary_data_size": size}), raw=bytes(8)))


def test_binary_data_size_past_the_end() -> None:
    tensors = (
        _tensor(parameters={"binary_data_size": 8}),
        {**_tensor(parameters={"binary_data_size": 8}), "name": "y"},
    )
    err = _raises(_request(*tensors, raw=bytes(12)))
    assert "runs past the end" in str(err) and "'y'" in str(err)


def test_leftover_binary_bytes() -> None:
    err = _raises(_request(_tensor(parameters={"binary_data_size": 8}), raw=bytes(9)))
    assert "1 binary bytes" in str(err)
    _raises(_request(_tensor(data=[1, 2]), raw=b"\x00"))


@pytest.mark.parametrize("size", [0, 4, 7, 9, 16])
def test_binary_size_does_not_match_shape(size: int) -> None:
    raw = bytes(size)
    _raises(_request(_tensor(parameters={"binary_data_size": size}), raw=raw), InvalidTensor)


@pytest.mark.parametrize(
    ("raw", "count", "problem"),
    [
        (b"\x01\x00\x00", 1, "need at least 4 bytes"),
        (b"\x05\x00\x00\x00abc", 1, "runs past the end"),
        (b"\xff\xff\xff\xff", 1, "runs past the end"),
        (b"\x01\x00\x00\x00a\x01\x00", 2, "need at least 8 bytes"),
        (b"\x01\x00\x00\x00a\x01\x00\x00\x00", 2, "element 1 of 1 bytes runs past the end"),
        (b"\x01\x00\x00\x00ab", 1, "1 bytes left over"),
        (b"\x00\x00\x00\x00", 0, "4 bytes left over"),
        (b"", 1, "need at least 4 bytes"),
    ],
)
def test_bytes_elements_malformed(raw: bytes, count: int, problem: str) -> None:
    _raises(lambda: decode_bytes_elements(raw, count, name="s"), InvalidTensor, problem)
    item = {"name": "s", "datatype": "BYTES", "shape": [count]}
    item["parameters"] = {"binary_data_size": len(raw)}
    _raises(_request(item, raw=raw or b""), InvalidTensor)


def test_bytes_that_are_not_utf8_cannot_go_in_json() -> None:
    tensor = InferTensor.from_numpy("s", np.array([b"\xff"], dtype=object))
    err = _raises(lambda: encode_request(InferRequest("m", [tensor])))
    assert "binary_data=True" in str(err)
    assert encode_request(InferRequest("m", [InferTensor.from_numpy("s", [b"\xff"], binary=True)]))


def test_response_errors_are_typed_too() -> None:
    from moorage.core.protocol import InferResponse

    tensor = InferTensor.from_numpy("s", np.array([b"\xff"], dtype=object))
    _raises(lambda: encode_response(InferResponse("m", [tensor])))


def test_tensor_constructor_checks_size() -> None:
    _raises(lambda: InferTensor("x", "FP32", (3,), np.zeros(2, np.float32)), InvalidTensor)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- v1
@pytest.mark.parametrize(
    "doc", [{}, {"instances": 1}, {"instances": {}}, {"instances": "x"}, {"predictions": []}]
)
def test_v1_bad_bodies(doc: dict[str, Any]) -> None:
    _raises(lambda: decode_v1_request(orjson.dumps(doc)))


def test_v1_good_bodies() -> None:
    assert decode_v1_request(b'{"instances":[[1,2]]}') == {"instances": [[1, 2]]}
    assert decode_v1_request(b'{"inputs":{"a":1}}') == {"inputs": {"a": 1}}


# ----------------------------------------------------------------------------- protobuf
def _proto(
    datatype: str = "FP32",
    shape: tuple[int, ...] = (2,),
    raw: list[bytes] | None = None,
    **contents: list[Any],
) -> Any:
    message = oip_grpc.pb.ModelInferRequest(model_name="m")
    item = message.inputs.add(name="x", datatype=datatype, shape=list(shape))
    for field, values in contents.items():
        getattr(item.contents, field).extend(values)
    if raw is not None:
        message.raw_input_contents.extend(raw)
    return message


def _proto_raises(message: Any, cls: type[InvalidInput] = InvalidInput) -> InvalidInput:
    parsed = oip_grpc.pb.ModelInferRequest.FromString(message.SerializeToString())
    return _raises(lambda: oip_grpc.request_from_proto(parsed), cls)


@pytest.mark.parametrize("datatype", ["", "FLOAT32", "fp32", "TYPE_FP32"])
def test_proto_unknown_datatype(datatype: str) -> None:
    _proto_raises(_proto(datatype, fp32_contents=[1, 2]), UnsupportedDatatype)


def test_proto_negative_shape() -> None:
    _proto_raises(_proto(shape=(-1,), raw=[b""]), InvalidTensor)
    _proto_raises(_proto(shape=(2, -2), fp32_contents=[1, 2]), InvalidTensor)


def test_proto_raw_contents_count_mismatch() -> None:
    message = _proto(raw=[bytes(8), bytes(8)])
    err = _proto_raises(message)
    assert "does not match the number of raw contents" in str(err)


def test_proto_raw_and_typed_contents_both() -> None:
    err = _proto_raises(_proto(raw=[bytes(8)], fp32_contents=[1, 2]))
    assert "contents field must not be specified" in str(err)


@pytest.mark.parametrize("size", [0, 4, 7, 9])
def test_proto_raw_size_mismatch(size: int) -> None:
    _proto_raises(_proto(raw=[bytes(size)]), InvalidTensor)


def test_proto_typed_count_mismatch() -> None:
    _proto_raises(_proto(fp32_contents=[1]), InvalidTensor)
    _proto_raises(_proto(fp32_contents=[1, 2, 3]), InvalidTensor)
    _proto_raises(_proto(int_contents=[1, 2]), InvalidTensor)  # wrong field for FP32
    _proto_raises(_proto("BYTES", bytes_contents=[b"a"]), InvalidTensor)


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_proto_half_floats_need_raw_contents(datatype: str) -> None:
    err = _proto_raises(_proto(datatype, fp32_contents=[1, 2]))
    assert "raw contents" in str(err)


def test_proto_bytes_raw_malformed() -> None:
    _proto_raises(_proto("BYTES", shape=(1,), raw=[b"\x09\x00\x00\x00ab"]), InvalidTensor)
    _proto_raises(_proto("BYTES", shape=(2,), raw=[b"\x00\x00\x00\x00"]), InvalidTensor)


def test_proto_response_errors() -> None:
    message = oip_grpc.pb.ModelInferResponse(model_name="m")
    message.outputs.add(name="y", datatype="INT32", shape=[3]).contents.int_contents.extend([1])
    _raises(lambda: oip_grpc.response_from_proto(message), InvalidTensor)
    message.raw_output_contents.append(bytes(12))
    _raises(lambda: oip_grpc.response_from_proto(message), InvalidInput)


# ----------------------------------------------------------------------------- shape limits
HUGE_ZERO_SIZED = [[2**63 - 1, 0], [2**62, 2, 0], [2**40, 2**40, 0], [0, 2**64 - 1]]


@pytest.mark.parametrize("shape", [*HUGE_ZERO_SIZED, [1] * 65, [0] * 65, [1] * 200])
def test_shapes_numpy_cannot_hold_are_typed_errors(shape: list[int]) -> None:
    for datatype in ("FP32", "BYTES", "BOOL"):
        _raises(_request(_tensor(datatype=datatype, shape=shape, data=[])), InvalidTensor)
        binary = _tensor(datatype=datatype, shape=shape, parameters={"binary_data_size": 0})
        _raises(_request(binary), InvalidTensor)
        if max(shape) < 2**63:
            _proto_raises(_proto(datatype, shape=tuple(shape), raw=[b""]), InvalidTensor)
            _proto_raises(_proto(datatype, shape=tuple(shape)), InvalidTensor)


def test_high_rank_and_zero_sized_shapes_within_limits() -> None:
    for shape in ([1] * 32, [2, 0, 3] * 10, [1] * 64, [2**20, 2**20, 0]):
        body = orjson.dumps({"inputs": [_tensor(shape=shape, data=[1.0] * int(np.prod(shape)))]})
        assert decode_request(body, model_name="m").inputs[0].data.shape == tuple(shape)


# ----------------------------------------------------------------------------- no huge allocations
@pytest.mark.parametrize("count", [10**8, 10**11, 2**59])
def test_bytes_count_is_checked_before_allocating(count: int) -> None:
    # A tiny body claiming many BYTES elements must fail fast, not allocate count slots.
    _raises(lambda: decode_bytes_elements(b"\x00" * 8, count, name="s"), InvalidTensor)
    item = {"name": "s", "datatype": "BYTES", "shape": [count]}
    _raises(_request({**item, "data": ["a", "b"]}), InvalidTensor, "needs")
    _raises(_request({**item, "parameters": {"binary_data_size": 8}}, raw=bytes(8)), InvalidTensor)
    _proto_raises(_proto("BYTES", shape=(count,), raw=[bytes(8)]), InvalidTensor)
    _proto_raises(_proto("BYTES", shape=(count,), bytes_contents=[b"a"]), InvalidTensor)


@pytest.mark.parametrize("datatype", ["BYTES", "FP32", "BOOL"])
@pytest.mark.parametrize("depth", [200, 1000, 1023])
def test_deeply_nested_data(datatype: str, depth: int) -> None:
    # orjson parses up to 1024 levels; decoding them must not hit Python's recursion limit.
    value = b'"a"' if datatype == "BYTES" else b"1"
    data = b"[" * depth + value + b"]" * depth
    head = b'{"inputs":[{"name":"x","datatype":"%s","shape":[1],"data":' % datatype.encode()
    try:
        tensor = decode_request(head + data + b"}]}", model_name="m").inputs[0]
    except InvalidInput:
        return  # numpy refuses that many dimensions: a typed error is fine too
    assert tensor.data.shape == (1,)


def test_flatten_keeps_order() -> None:
    body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "s",
                    "datatype": "BYTES",
                    "shape": [5],
                    "data": [["a", ["b"]], [], "c", [[["d"]], "e"]],
                }
            ]
        }
    )
    assert decode_request(body, model_name="m").inputs[0].data.tolist() == list("abcde")


@pytest.mark.parametrize(
    ("datatype", "field", "value"),
    [
        ("INT8", "int_contents", 128),
        ("INT8", "int_contents", -129),
        ("INT16", "int_contents", 2**15),
        ("UINT8", "uint_contents", 256),
        ("UINT16", "uint_contents", 2**16),
    ],
)
def test_proto_typed_contents_out_of_range(datatype: str, field: str, value: int) -> None:
    err = _proto_raises(_proto(datatype, shape=(1,), **{field: [value]}), InvalidTensor)
    assert f"contents do not fit datatype {datatype}" in str(err)
    message = oip_grpc.pb.ModelInferResponse(model_name="m")
    getattr(message.outputs.add(name="y", datatype=datatype, shape=[1]).contents, field).append(
        value
    )
    _raises(lambda: oip_grpc.response_from_proto(message), InvalidTensor)
