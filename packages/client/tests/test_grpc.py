"""InferenceGRPCClient against a real gRPC server on loopback (core's converter on its side)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import numpy as np
import pytest

from moorage.client import (
    ConnectionFailed,
    InferenceGRPCClient,
    InferInput,
    InferRequest,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    RequestedOutput,
    Timeout,
    default_channel_options,
)
from moorage.client._errors import error_from_grpc
from moorage.core import errors
from moorage.core.protocol import InferTensor


def request(*tensors: InferTensor, model: str = "echo", **kwargs: Any) -> InferRequest:
    return InferRequest(model, list(tensors), **kwargs)


def test_default_channel_options_match_kserve() -> None:
    options = dict(default_channel_options())
    assert options["grpc.max_send_message_length"] == -1
    assert options["grpc.max_receive_message_length"] == -1
    assert options["grpc.enable_retries"] == 1
    policy = json.loads(options["grpc.service_config"])["methodConfig"][0]
    assert policy["name"] == [{"service": "inference.GRPCInferenceService"}]
    assert policy["retryPolicy"] == {
        "maxAttempts": 3,
        "initialBackoff": "0.1s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }


def test_port_defaults_and_channel_args() -> None:
    assert InferenceGRPCClient("example.com").url == "example.com:80"
    assert InferenceGRPCClient("example.com", use_ssl=True).url == "example.com:443"
    assert InferenceGRPCClient("[::1]").url == "[::1]:80"
    client = InferenceGRPCClient("h:1", channel_args=[("grpc.max_send_message_length", 10)])
    assert dict(client._options)["grpc.max_send_message_length"] == 10
    with pytest.raises(InvalidInput):
        InferenceGRPCClient("")


async def test_health_metadata_repository(grpc_server: Any, transport: str) -> None:
    async with InferenceGRPCClient(grpc_server.url, transport=transport) as client:
        assert client.transport == transport
        assert await client.is_server_live() is True
        assert await client.is_server_ready() is True
        assert await client.is_model_ready("echo") is True
        meta = await client.get_server_metadata()
        assert (meta.name, meta.version, meta.extensions) == ("fake", "1.0", ["binary"])
        model = await client.get_model_metadata("echo")
        assert model.inputs[0].shape == [-1, 4] and model.versions == ["1"]
        assert await client.load_model("echo") is True
        assert await client.unload_model("echo") is True
        grpc_server.behaviour["ready"] = False
        assert await client.is_model_ready("echo") is False


@pytest.mark.parametrize("raw", [True, False])
async def test_infer_round_trip(grpc_server: Any, raw: bool, transport: str) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    n = np.array([[1, -2]], dtype=np.int64)
    async with InferenceGRPCClient(grpc_server.url, raw=raw, transport=transport) as client:
        result = await client.infer(
            request(InferTensor.from_numpy("x", x), InferTensor.from_numpy("n", n), id="q")
        )
    assert result.id == "q" and result.model_name == "echo"
    np.testing.assert_array_equal(result.output("x").as_numpy(), x)
    np.testing.assert_array_equal(result.output("n").as_numpy(), n)


@pytest.mark.parametrize(
    "dtype", ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
              "uint16", "uint32", "uint64", "bool"],
)  # fmt: skip
async def test_every_numeric_dtype_round_trips_raw(
    grpc_server: Any, dtype: str, transport: str
) -> None:
    x = (np.arange(6) % 2 if dtype == "bool" else np.arange(6)).astype(dtype).reshape(2, 3)
    async with InferenceGRPCClient(grpc_server.url, transport=transport) as client:
        result = await client.infer(request(InferTensor.from_numpy("x", x)))
    out = result.output("x").as_numpy()
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(out, x)


async def test_fp16_without_raw_still_travels_raw(grpc_server: Any, transport: str) -> None:
    x = np.array([1.5, -2.0], dtype=np.float16)
    async with InferenceGRPCClient(grpc_server.url, raw=False, transport=transport) as client:
        result = await client.infer(request(InferTensor.from_numpy("h", x)))
    np.testing.assert_array_equal(result.output("h").as_numpy(), x)


@pytest.mark.parametrize("raw", [True, False])
async def test_bytes(grpc_server: Any, raw: bool, transport: str) -> None:
    async with InferenceGRPCClient(grpc_server.url, raw=raw, transport=transport) as client:
        result = await client.infer(
            request(InferTensor.from_numpy("s", [["a", "é"], ["\x00", ""]]))
        )
    assert result.output("s").as_numpy().tolist() == [[b"a", "é".encode()], [b"\x00", b""]]


async def test_kserve_style_request_and_requested_outputs(grpc_server: Any, transport: str) -> None:
    inp = InferInput("x", [2], "INT32")
    inp.set_data_from_numpy(np.array([4, 5], dtype=np.int32))
    req = InferRequest(
        "echo",
        [inp, InferInput("y", [1], "FP32", data=[1.0])],
        request_outputs=[RequestedOutput("x")],
    )
    async with InferenceGRPCClient(grpc_server.url, transport=transport) as client:
        result = await client.infer(req)
    assert result.output("x").as_numpy().tolist() == [4, 5]


async def test_metadata_headers_reach_the_server(grpc_server: Any, transport: str) -> None:
    async with InferenceGRPCClient(
        grpc_server.url, headers={"X-Team": "a"}, transport=transport
    ) as client:
        await client.infer(request(InferTensor.from_numpy("x", [1])), headers={"X-Req": "7"})
    seen = grpc_server.seen_metadata[-1]
    assert seen["x-team"] == "a" and seen["x-req"] == "7"


async def test_not_found_carries_server_message(grpc_server: Any, transport: str) -> None:
    async with InferenceGRPCClient(grpc_server.url, transport=transport) as client:
        with pytest.raises(ModelNotFound, match=r"Model with name nope does not exist\.") as info:
            await client.infer(request(InferTensor.from_numpy("x", [1]), model="nope"))
        with pytest.raises(ModelNotFound):
            await client.is_model_ready("nope")
    assert info.value.details["grpc_status"] == "NOT_FOUND"
    assert isinstance(info.value.__cause__, grpc.RpcError)


async def test_server_side_unavailable_is_not_ready(grpc_server: Any, transport: str) -> None:
    grpc_server.behaviour["unavailable"] = True
    async with InferenceGRPCClient(grpc_server.url, retries=1, transport=transport) as client:
        with pytest.raises(ModelNotReady, match="Model echo is not ready"):
            await client.infer(request(InferTensor.from_numpy("x", [1])))


async def test_deadline_is_timeout(grpc_server: Any, transport: str) -> None:
    grpc_server.behaviour["delay"] = 0.5
    async with InferenceGRPCClient(grpc_server.url, timeout=0.05, transport=transport) as client:
        with pytest.raises(Timeout):
            await client.infer(request(InferTensor.from_numpy("x", [1])))
        # a per-call timeout overrides the client's
        result = await client.infer(request(InferTensor.from_numpy("x", [1])), timeout=5)
    assert result.output("x").as_numpy().tolist() == [1]


async def test_server_down_is_connection_failed(unused_port: int, transport: str) -> None:
    async with InferenceGRPCClient(
        f"127.0.0.1:{unused_port}", timeout=5, transport=transport
    ) as client:
        with pytest.raises(ConnectionFailed, match="cannot reach") as info:
            await client.is_server_live()
    assert info.value.details["grpc_status"] == "UNAVAILABLE"


async def test_message_over_the_server_limit(grpc_small_server: Any, transport: str) -> None:
    async with InferenceGRPCClient(grpc_small_server.url, transport=transport) as client:
        with pytest.raises(PayloadTooLarge):
            await client.infer(request(InferTensor.from_numpy("x", np.zeros(4096, np.float32))))


async def test_client_message_limit_from_channel_args(grpc_server: Any, transport: str) -> None:
    options = [("grpc.max_receive_message_length", 256)]
    async with InferenceGRPCClient(
        grpc_server.url, channel_args=options, transport=transport
    ) as client:
        with pytest.raises(PayloadTooLarge):
            await client.infer(request(InferTensor.from_numpy("x", np.zeros(1024, np.float32))))


async def test_invalid_request_type(transport: str) -> None:
    async with InferenceGRPCClient("127.0.0.1:1", transport=transport) as client:
        with pytest.raises(InvalidInput, match="Invalid input format"):
            await client.infer({"inputs": []})  # type: ignore[arg-type]


async def test_closed_client_refuses_calls(grpc_server: Any, transport: str) -> None:
    client = InferenceGRPCClient(grpc_server.url, transport=transport)
    assert await client.is_server_live()
    await client.close()
    with pytest.raises(ConnectionFailed, match="closed"):
        await client.is_server_live()


async def test_mutual_tls(grpc_tls_server: Any, test_ca: Any, transport: str) -> None:
    url = f"localhost:{grpc_tls_server.port}"
    async with InferenceGRPCClient(
        url,
        use_ssl=True,
        root_certificates=str(test_ca.ca_cert),  # paths, as in KServe
        private_key=str(test_ca.client_key),
        certificate_chain=str(test_ca.client_cert),
        transport=transport,
    ) as client:
        assert await client.is_server_live()
    async with InferenceGRPCClient(
        url,
        creds=grpc.ssl_channel_credentials(
            test_ca.read("ca_cert"), test_ca.read("client_key"), test_ca.read("client_cert")
        ),
    ) as client:
        assert client.transport == "grpcio"  # a ChannelCredentials object needs grpcio
        result = await client.infer(request(InferTensor.from_numpy("x", [2.0])))
        assert result.output("x").as_numpy().tolist() == [2.0]


async def test_tls_failures_are_connection_failed(
    grpc_tls_server: Any, test_ca: Any, transport: str
) -> None:
    url = f"localhost:{grpc_tls_server.port}"
    # no client certificate: the server (require_client_auth) refuses the handshake
    async with InferenceGRPCClient(
        url,
        use_ssl=True,
        root_certificates=test_ca.read("ca_cert"),
        timeout=5,
        retries=1,
        transport=transport,
    ) as client:
        with pytest.raises(ConnectionFailed):
            await client.is_server_live()
    # the server's certificate is not trusted (system roots only)
    async with InferenceGRPCClient(
        url, use_ssl=True, timeout=5, retries=1, transport=transport
    ) as client:
        with pytest.raises(ConnectionFailed):
            await client.is_server_live()


def test_missing_certificate_file(tmp_path: Any) -> None:
    with pytest.raises(InvalidInput, match="cannot read root_certificates"):
        InferenceGRPCClient("h:1", use_ssl=True, root_certificates=str(tmp_path / "none.pem"))


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: Any = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing


@pytest.mark.parametrize(
    ("code", "details", "trailing", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "bad", (), errors.InvalidInput),
        (grpc.StatusCode.FAILED_PRECONDITION, "bad", (), errors.InvalidInput),
        (grpc.StatusCode.NOT_FOUND, "gone", (), errors.ModelNotFound),
        (grpc.StatusCode.UNAVAILABLE, "Model m is not ready", (), errors.ModelNotReady),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", (),
         errors.ConnectionFailed),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", (), errors.Timeout),
        (grpc.StatusCode.INTERNAL, "boom", (), errors.ServerError),
        (grpc.StatusCode.UNKNOWN, "boom", (), errors.ServerError),
        (grpc.StatusCode.UNIMPLEMENTED, "no", (), errors.ServerError),
        (grpc.StatusCode.UNAUTHENTICATED, "who", (), errors.Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, "no", (), errors.PermissionDenied),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", (), errors.Overloaded),
        (grpc.StatusCode.CANCELLED, "Cancelled", (), errors.ConnectionFailed),
        (grpc.StatusCode.INTERNAL, "x", (("moorage-error-code", "inference_error"),),
         errors.InferenceError),
        (grpc.StatusCode.INVALID_ARGUMENT, "x", (("moorage-error-code", "invalid_tensor"),),
         errors.InvalidTensor),
    ],
)  # fmt: skip
def test_grpc_status_mapping(
    code: grpc.StatusCode, details: str, trailing: Any, expected: type[Exception]
) -> None:
    error = error_from_grpc(_FakeRpcError(code, details, trailing), "h:1")
    assert type(error) is expected
    assert details in error.message
