"""Wire compatibility with tritonclient, the reference OIP client, in one process.

Our protobuf messages live in a private descriptor pool, so they coexist with tritonclient's
``inference`` stubs in the default pool; bytes written by one parse with the other. The REST
codec reads tritonclient's request bodies and tritonclient reads ours.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from moorage.core.protocol import Datatype, InferRequest, InferResponse, InferTensor
from moorage.core.protocol import grpc as oip_grpc
from moorage.core.protocol.rest import decode_request, encode_response

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
tritonclient_http = pytest.importorskip("tritonclient.http")
from tritonclient.grpc import _utils as triton_grpc_utils  # noqa: E402
from tritonclient.grpc import service_pb2 as triton_pb  # noqa: E402

# Datatypes tritonclient handles from plain numpy (BF16 goes through ml_dtypes, checked below).
SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True]]),
    "INT8": np.array([[-128, 0, 127]], dtype=np.int8),
    "INT16": np.array([[-1, 2, 3]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1]], dtype=np.int64),
    "UINT8": np.array([[0, 1, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 1, 65535]], dtype=np.uint16),
    "UINT32": np.array([[0, 1, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([[0, 1, 2**64 - 1]], dtype=np.uint64),
    "FP16": np.array([[0.5, -np.inf, 65504]], dtype=np.float16),
    "FP32": np.array([[1.5, np.nan, -0.0]], dtype=np.float32),
    "FP64": np.array([[1e300, np.inf, -2.5]], dtype=np.float64),
    "BYTES": np.array([[b"a\x00b", b"\xff\xfe", b""]], dtype=object),
}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "f":
        return a.dtype == b.dtype and a.tobytes() == b.tobytes()
    return a.shape == b.shape and a.tolist() == b.tolist()


def test_pools_are_separate() -> None:
    ours = oip_grpc.pb.ModelInferRequest.DESCRIPTOR
    theirs = triton_pb.ModelInferRequest.DESCRIPTOR
    assert ours.full_name == theirs.full_name == "inference.ModelInferRequest"
    assert ours.file.pool is not theirs.file.pool
    assert oip_grpc.pb.ModelInferRequest is not triton_pb.ModelInferRequest


@pytest.mark.parametrize("first", ["moorage", "tritonclient"])
def test_both_import_orders_work_in_a_fresh_process(first: str) -> None:
    imports = ["import moorage.core.protocol.grpc as m", "import tritonclient.grpc as t"]
    if first == "tritonclient":
        imports.reverse()
    code = "; ".join(
        [
            *imports,
            "r = t.service_pb2.ModelInferRequest(model_name='x', raw_input_contents=[b'1'])",
            "assert m.pb.ModelInferRequest.FromString(r.SerializeToString()).model_name == 'x'",
        ]
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("binary", [True, False], ids=["raw", "typed"])
def test_tritonclient_grpc_request_parses_with_ours(binary: bool) -> None:
    inputs = []
    for name, array in SAMPLES.items():
        if not binary and name == "FP16":
            continue  # tritonclient always sends raw contents; typed needs us on the sending side
        tensor = tritonclient_grpc.InferInput(f"in_{name}", list(array.shape), name)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    outputs = [tritonclient_grpc.InferRequestedOutput("out")]
    theirs = triton_grpc_utils._get_inference_request(
        model_name="m",
        inputs=inputs,
        model_version="3",
        request_id="req-1",
        outputs=outputs,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        parameters={"custom": 7, "flag": True, "s": "v"},
    )
    request = oip_grpc.request_from_proto(
        oip_grpc.pb.ModelInferRequest.FromString(theirs.SerializeToString())
    )
    assert (request.model_name, request.model_version, request.id) == ("m", "3", "req-1")
    assert request.parameters == {"custom": 7, "flag": True, "s": "v"}
    assert request.outputs is not None and [o.name for o in request.outputs] == ["out"]
    for tensor in request.inputs:
        expected = SAMPLES[tensor.datatype.value]
        assert tensor.name == f"in_{tensor.datatype}"
        assert _same(tensor.data, expected), tensor.datatype


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_our_grpc_messages_parse_with_tritonclient(raw: bool) -> None:
    tensors = [InferTensor.from_numpy(f"t_{n}", a, datatype=n) for n, a in SAMPLES.items()]
    if not raw:
        tensors = [t for t in tensors if t.datatype is not Datatype.FP16]
    request = InferRequest("m", tensors, id="7", parameters={"k": 1}, model_version="2")
    theirs = triton_pb.ModelInferRequest.FromString(
        oip_grpc.request_to_proto(request, raw=raw).SerializeToString()
    )
    assert (theirs.model_name, theirs.id, theirs.model_version) == ("m", "7", "2")
    assert theirs.parameters["k"].int64_param == 1
    assert len(theirs.raw_input_contents) == (len(tensors) if raw else 0)

    if not raw:  # tritonclient reads typed contents only as fields; check them as fields
        for message, tensor in zip(theirs.inputs, tensors, strict=True):
            (field, values), *_ = message.contents.ListFields()
            assert field.name.endswith("_contents")
            expected = SAMPLES[tensor.datatype.value].reshape(-1).tolist()
            assert np.array_equal(list(values), expected, equal_nan=message.datatype[:2] == "FP")

    response = InferResponse("m", tensors, id="7")
    wire = oip_grpc.response_to_proto(response, raw=raw).SerializeToString()
    result = tritonclient_grpc.InferResult(triton_pb.ModelInferResponse.FromString(wire))
    if not raw:
        return
    for tensor in tensors:
        got = result.as_numpy(tensor.name)
        assert got is not None, tensor.name
        expected = SAMPLES[tensor.datatype.value]
        if tensor.datatype is Datatype.BYTES:
            assert got.tolist() == expected.tolist()
        else:
            assert _same(got, expected), tensor.datatype

    # The hand-framed bytes read the same in tritonclient.
    framed = triton_pb.ModelInferResponse.FromString(oip_grpc.response_to_bytes(response))
    assert framed == result.get_response()

    # ...and back: tritonclient's bytes of our response parse as ours again.
    back = oip_grpc.response_from_proto(
        oip_grpc.pb.ModelInferResponse.FromString(result.get_response().SerializeToString())
    )
    assert back == response


def test_bf16_matches_tritonclient() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = np.array([1.0, -2.5, 3.0e38], dtype=ml_dtypes.bfloat16)
    tensor = tritonclient_grpc.InferInput("b", [3], "BF16")
    tensor.set_data_from_numpy(values)
    theirs = triton_grpc_utils._get_inference_request(
        "m", [tensor], "", "", None, 0, False, False, 0, None, None
    )
    ours = oip_grpc.request_from_proto(
        oip_grpc.pb.ModelInferRequest.FromString(theirs.SerializeToString())
    ).inputs[0]
    assert ours.datatype is Datatype.BF16
    assert ours.data.tobytes() == values.tobytes()
    assert ours.as_numpy().tolist() == values.astype(np.float32).tolist()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_body_decodes_with_ours(binary: bool) -> None:
    inputs = []
    for name, array in SAMPLES.items():
        if not binary and name in ("FP16", "BYTES"):
            continue  # FP16 and non-UTF-8 bytes cannot go in JSON
        if not binary and array.dtype.kind == "f":
            array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=-1.0)  # strict JSON
        tensor = tritonclient_http.InferInput(f"in_{name}", list(array.shape), name)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append((tensor, array))
    outputs = [tritonclient_http.InferRequestedOutput("out", binary_data=True)]
    body, length = tritonclient_http.InferenceServerClient.generate_request_body(
        [t for t, _ in inputs], outputs=outputs, request_id="r", parameters={"p": 1}
    )
    request = decode_request(body, model_name="m", header_length=length)
    assert request.id == "r" and request.parameters == {"p": 1}
    assert request.outputs is not None and request.outputs[0].parameters == {"binary_data": True}
    for tensor, (_, expected) in zip(request.inputs, inputs, strict=True):
        assert _same(tensor.data, expected), tensor.name


def test_our_http_response_decodes_with_tritonclient() -> None:
    tensors = [
        InferTensor.from_numpy(f"t_{n}", a, datatype=n, binary=True) for n, a in SAMPLES.items()
    ]
    tensors.append(InferTensor.from_numpy("json_int", np.arange(4, dtype=np.int64)))
    tensors.append(InferTensor.from_numpy("json_text", np.array(["h\u00e9", "x"], dtype=object)))
    body, length = encode_response(InferResponse("m", tensors, id="9"))
    result = tritonclient_http.InferResult.from_response_body(body, header_length=length)
    assert result.get_response()["id"] == "9"
    for name, expected in SAMPLES.items():
        got = result.as_numpy(f"t_{name}")
        assert got is not None and _same(got, expected), name
    assert result.as_numpy("json_int").tolist() == [0, 1, 2, 3]
    assert result.as_numpy("json_text").tolist() == ["h\u00e9", "x"]
