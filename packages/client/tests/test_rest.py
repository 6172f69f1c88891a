"""InferenceRESTClient, with the transport users get by default, against an OIP server on
loopback (``fake_server``: real HTTP/1.1, what arrived is recorded) and servers that fail."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from moorage.client import (
    ConnectionFailed,
    InferenceRESTClient,
    InferInput,
    InferRequest,
    InferResponse,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    RequestedOutput,
    RESTConfig,
    ServerError,
    Timeout,
    UnsupportedProtocol,
)
from moorage.core import errors
from moorage.core.protocol import InferTensor
from moorage.core.protocol.rest import HEADER_LENGTH


def client_for(protocol: str = "v2", **kwargs: Any) -> InferenceRESTClient:
    """A client as users make it: no transport given, so the default one."""
    return InferenceRESTClient(RESTConfig(protocol=protocol, **kwargs))


def request(*tensors: InferTensor, **kwargs: Any) -> InferRequest:
    return InferRequest("echo", list(tensors), **kwargs)


# ----------------------------------------------------------------------------- config
class Protocol(enum.Enum):
    V1 = "v1"
    V2 = "v2"


def test_config_defaults_match_kserve() -> None:
    config = RESTConfig()
    assert (config.protocol, config.retries, config.http2, config.timeout) == ("v1", 3, False, 60)
    assert (config.cert, config.verify, config.auth, config.verbose) == (None, True, None, False)


def test_config_accepts_protocol_enum_and_rejects_unknown() -> None:
    assert RESTConfig(protocol=Protocol.V2).protocol == "v2"
    with pytest.raises(InvalidInput, match="unsupported protocol"):
        RESTConfig(protocol="v3")
    with pytest.raises(InvalidInput, match="http1=False"):
        RESTConfig(http1=False)


def test_built_transport_is_really_used() -> None:
    """KServe builds a transport from retries/http2/cert/verify and then drops it."""
    client = InferenceRESTClient(RESTConfig(retries=5, http2=True))
    transport = client._client._transport
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    pool = transport._pool
    assert pool._retries == 5
    assert pool._http2 is True


def test_given_transport_is_used_as_is() -> None:
    transport = httpx.AsyncHTTPTransport()
    client = InferenceRESTClient(RESTConfig(transport=transport))
    assert client._client._transport is transport


def test_bad_ca_path_is_invalid_input(tmp_path: Any) -> None:
    with pytest.raises(InvalidInput, match="cannot load CA"):
        RESTConfig(verify=str(tmp_path / "missing.pem")).build_transport()


# ----------------------------------------------------------------------------- urls
async def test_relative_base_url_is_rejected(fake_server: Any) -> None:
    async with client_for() as client:
        with pytest.raises(InvalidInput, match="relative"):
            await client.is_server_ready("/v2")


async def test_base_url_path_prefix_is_kept(fake_server: Any) -> None:
    async with client_for() as client:
        assert await client.is_server_ready(f"{fake_server.url}/prefix/") is True
    assert fake_server.requests[-1].url.path == "/prefix/v2/health/ready"


async def test_model_name_is_quoted(fake_server: Any) -> None:
    async with client_for() as client:
        with pytest.raises(ModelNotFound):
            await client.is_model_ready(fake_server.url, "a/b c")
    assert fake_server.requests[-1].url.raw_path == b"/v2/models/a%2Fb%20c/ready"


# ----------------------------------------------------------------------------- v2 infer
async def test_v2_json_round_trip(fake_server: Any) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    async with client_for() as client:
        result = await client.infer(
            fake_server.url, request(InferTensor.from_numpy("x", x), id="r1")
        )
    assert isinstance(result, InferResponse)
    assert result.id == "r1" and result.model_name == "echo"
    np.testing.assert_array_equal(result.output("x").as_numpy(), x)
    sent = fake_server.requests[-1]
    assert sent.url.path == "/v2/models/echo/infer"
    assert sent.headers["content-type"] == "application/json"
    assert HEADER_LENGTH not in sent.headers
    assert orjson.loads(sent.content)["inputs"][0]["data"] == x.ravel().tolist()


async def test_binary_inputs_are_sent_binary_per_tensor(fake_server: Any) -> None:
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    b = np.array([1.5, 2.5], dtype=np.float64)
    req = request(InferTensor.from_numpy("a", a, binary=True), InferTensor.from_numpy("b", b))
    async with client_for() as client:
        result = await client.infer(fake_server.url, req)
    sent = fake_server.requests[-1]
    length = int(sent.headers[HEADER_LENGTH])
    assert sent.headers["content-type"] == "application/octet-stream"
    head = orjson.loads(sent.content[:length])
    assert head["inputs"][0]["parameters"] == {"binary_data_size": a.nbytes}
    assert "data" not in head["inputs"][0]
    assert head["inputs"][1]["data"] == [1.5, 2.5]
    assert sent.content[length:] == a.tobytes()
    np.testing.assert_array_equal(result.output("a").as_numpy(), a)
    np.testing.assert_array_equal(result.output("b").as_numpy(), b)


async def test_binary_outputs_for_all_are_decoded_without_copies(fake_server: Any) -> None:
    x = np.random.default_rng(0).random((64, 16), dtype=np.float32)
    req = request(InferTensor.from_numpy("x", x), parameters={"binary_data_output": True})
    headers: dict[str, str] = {}
    async with client_for() as client:
        result = await client.infer(fake_server.url, req, response_headers=headers)
    assert HEADER_LENGTH in headers
    out = result.output("x").as_numpy()
    np.testing.assert_array_equal(out, x)
    assert not out.flags.owndata  # a view into the response body
    assert not out.flags.writeable


async def test_binary_output_per_output_overrides_request(fake_server: Any) -> None:
    req = request(
        InferTensor.from_numpy("a", np.ones(3, np.float32)),
        InferTensor.from_numpy("b", np.zeros(3, np.float32)),
        parameters={"binary_data_output": True},
        request_outputs=[RequestedOutput("a", {"binary_data": False}), RequestedOutput("b")],
    )
    headers: dict[str, str] = {}
    async with client_for() as client:
        result = await client.infer(fake_server.url, req, response_headers=headers)
    # the server answered "a" in JSON and "b" in binary; both decode the same
    assert [o.name for o in result.outputs] == ["a", "b"]
    length = int(headers[HEADER_LENGTH])
    assert length < int(headers["content-length"])
    np.testing.assert_array_equal(result.output("b").as_numpy(), np.zeros(3, np.float32))


@pytest.mark.parametrize(
    "dtype", ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
              "uint16", "uint32", "uint64", "bool"],
)  # fmt: skip
async def test_every_numeric_dtype_round_trips_binary(fake_server: Any, dtype: str) -> None:
    x = (np.arange(12) % 2 if dtype == "bool" else np.arange(12)).astype(dtype).reshape(3, 4)
    req = request(
        InferTensor.from_numpy("x", x, binary=True), parameters={"binary_data_output": True}
    )
    async with client_for() as client:
        result = await client.infer(fake_server.url, req)
    out = result.output("x").as_numpy()
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(out, x)


async def test_fp16_json_request_is_encoded(fake_server: Any) -> None:
    x = np.array([0.5, -1.25, 3.0], dtype=np.float16)
    async with client_for() as client:
        result = await client.infer(fake_server.url, request(InferTensor.from_numpy("h", x)))
    assert orjson.loads(fake_server.requests[-1].content)["inputs"][0]["datatype"] == "FP16"
    np.testing.assert_array_equal(result.output("h").as_numpy(), x)


@pytest.mark.parametrize("binary", [False, True])
async def test_bytes_from_str_and_bytes(fake_server: Any, binary: bool) -> None:
    req = request(
        InferTensor.from_numpy("s", ["héllo", "world"], binary=binary),
        InferTensor.from_numpy("b", [b"\x00\xff" if binary else b"ab"], binary=binary),
        parameters={"binary_data_output": binary},
    )
    async with client_for() as client:
        result = await client.infer(fake_server.url, req)
    assert result.output("s").as_numpy().tolist() in (
        ["héllo", "world"],
        ["héllo".encode(), b"world"],
    )
    assert result.output("b").as_numpy().tolist() in (
        [b"\x00\xff" if binary else b"ab"],
        ["ab"],
    )


async def test_lists_become_tensors(fake_server: Any) -> None:
    async with client_for() as client:
        result = await client.infer(
            fake_server.url,
            request(InferTensor.from_numpy("x", [[1, 2], [3, 4]], datatype="INT32")),
        )
    assert result.output("x").as_numpy().dtype == np.int32


async def test_dict_body_is_sent_as_json_and_parsed_as_v2(fake_server: Any) -> None:
    body = {"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2]}]}
    async with client_for() as client:
        result = await client.infer(fake_server.url, body, model_name="echo")
    assert isinstance(result, InferResponse)
    assert result.output("x").as_numpy().tolist() == [1, 2]


async def test_model_name_falls_back_to_the_request(fake_server: Any) -> None:
    async with client_for() as client:
        await client.infer(fake_server.url, request(InferTensor.from_numpy("x", [1])))
        with pytest.raises(InvalidInput, match="model_name should not be 'None'"):
            await client.infer(fake_server.url, {"inputs": []})


async def test_headers_are_merged(fake_server: Any) -> None:
    async with client_for(headers={"x-a": "1", "x-b": "1"}) as client:
        await client.infer(
            fake_server.url, request(InferTensor.from_numpy("x", [1])), headers={"x-b": "2"}
        )
    sent = fake_server.requests[-1].headers
    assert (sent["x-a"], sent["x-b"]) == ("1", "2")


async def test_kserve_style_infer_input(fake_server: Any) -> None:
    inp = InferInput("x", [2, 2], "FP32")
    with pytest.raises(errors.InvalidTensor, match="unexpected datatype"):
        inp.set_data_from_numpy(np.zeros((2, 2), np.int32))
    with pytest.raises(errors.InvalidTensor, match="unexpected numpy array shape"):
        inp.set_data_from_numpy(np.zeros((4,), np.float32))
    empty = InferInput("y", [1], "INT32")
    assert "not set" in repr(empty)
    async with client_for() as client:
        with pytest.raises(InvalidInput, match="has no data"):
            await client.infer(fake_server.url, InferRequest("echo", infer_inputs=[empty]))
        inp.set_data_from_numpy(np.eye(2, dtype=np.float32))  # binary_data=True by default
        req = InferRequest(
            model_name="echo",
            infer_inputs=[inp, InferInput("z", [3], "BYTES", data=["a", "b", "c"])],
            request_id="7",
            request_outputs=[RequestedOutput("x", parameters={"binary_data": True})],
        )
        assert req.request_id == "7" and not req.use_binary_outputs
        result = await client.infer(fake_server.url, req)
    assert HEADER_LENGTH in fake_server.requests[-1].headers
    assert [o.name for o in result.outputs] == ["x"]
    np.testing.assert_array_equal(result.outputs[0].as_numpy(), np.eye(2, dtype=np.float32))


# ----------------------------------------------------------------------------- v1
async def test_v1_predict_and_explain(fake_server: Any) -> None:
    async with client_for(protocol="v1") as client:
        result = await client.infer(fake_server.url, {"instances": [[1, 2]]}, model_name="echo")
        assert result == {"predictions": [[1, 2]]}
        assert fake_server.requests[-1].url.path == "/v1/models/echo:predict"
        assert await client.explain(fake_server.url, "echo", {"instances": [1]}) == {
            "explanations": [1]
        }
        assert fake_server.requests[-1].url.path == "/v1/models/echo:explain"
        assert await client.is_server_live(fake_server.url) is True
        assert await client.is_model_ready(fake_server.url, "echo") is True
        with pytest.raises(UnsupportedProtocol):
            await client.is_server_ready(fake_server.url)
        with pytest.raises(UnsupportedProtocol):
            await client.get_server_metadata(fake_server.url)


async def test_explain_is_v1_only(fake_server: Any) -> None:
    async with client_for() as client:
        with pytest.raises(UnsupportedProtocol):
            await client.explain(fake_server.url, "echo", {})


async def test_graph_endpoint_posts_to_base_url(fake_server: Any) -> None:
    fake_server.overrides[("POST", "/graph")] = lambda r: httpx.Response(200, json={"ok": 1})
    async with client_for() as client:
        assert await client.infer(f"{fake_server.url}/graph", {"x": 1}, is_graph_endpoint=True) == {
            "ok": 1
        }


# ----------------------------------------------------------------------------- health etc.
async def test_v2_health_metadata_repository(fake_server: Any) -> None:
    async with client_for() as client:
        assert await client.is_server_live(fake_server.url) is True
        assert await client.is_server_ready(fake_server.url) is True
        assert await client.is_model_ready(fake_server.url, "echo") is True
        meta = await client.get_server_metadata(fake_server.url)
        assert (meta.name, meta.version, meta.extensions) == ("fake", "1.0", ["binary"])
        model = await client.get_model_metadata(fake_server.url, "echo")
        assert model.inputs[0].shape == [-1, 4] and model.platform == "echo"
        await client.get_model_metadata(fake_server.url, "echo", model_version="1")
        assert fake_server.requests[-1].url.path == "/v2/models/echo/versions/1"
        assert await client.load_model(fake_server.url, "echo") is True
        assert fake_server.requests[-1].url.path == "/v2/repository/models/echo/load"
        assert await client.unload_model(fake_server.url, "echo") is True


async def test_model_not_ready_503_is_false(fake_server: Any) -> None:
    fake_server.ready = False
    async with client_for() as client:
        assert await client.is_model_ready(fake_server.url, "echo") is False
        assert await client.is_server_ready(fake_server.url) is False


@pytest.mark.parametrize(("status", "expected"), [(200, True), (400, False), (503, False)])
async def test_empty_bodied_health_follows_the_status(
    fake_server: Any, status: int, expected: bool
) -> None:
    """MLServer and Triton answer health checks with a bare status code."""
    fake_server.overrides[("GET", "/v2/health/live")] = lambda r: httpx.Response(status)
    fake_server.overrides[("GET", "/v2/models/m/ready")] = lambda r: httpx.Response(status)
    async with client_for() as client:
        assert await client.is_server_live(fake_server.url) is expected
        assert await client.is_model_ready(fake_server.url, "m") is expected


# ----------------------------------------------------------------------------- errors
async def test_unknown_model_raises_model_not_found_with_message(fake_server: Any) -> None:
    async with client_for() as client:
        with pytest.raises(ModelNotFound) as info:
            await client.infer(
                fake_server.url, InferRequest("nope", [InferTensor.from_numpy("x", [1])])
            )
    error = info.value
    assert "Model with name nope does not exist." in error.message
    url = f"{fake_server.url}/v2/models/nope/infer"
    assert f"'404 Not Found' for url '{url}'" in error.message
    assert error.details["status_code"] == 404
    assert error.details["server_code"] == "model_not_found"
    assert isinstance(error.__cause__, httpx.HTTPStatusError)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"error": "bad tensor"}, errors.InvalidInput),
        (400, {"error": "bad", "code": "invalid_tensor"}, errors.InvalidTensor),
        (503, {"error": "Model echo is not ready"}, ModelNotReady),
        (503, {"error": "full", "code": "overloaded"}, errors.Overloaded),
        (500, {"error": "boom"}, ServerError),
        (500, {"error": "model raised", "code": "inference_error"}, errors.InferenceError),
        (422, {"detail": [{"loc": ["body"], "msg": "field required"}]}, InvalidInput),
        (401, {"error": "who are you"}, errors.Unauthenticated),
        (504, {"error": "slow"}, Timeout),
        (500, {"error": "odd", "code": "not-a-core-code"}, ServerError),
    ],
)
async def test_error_bodies_map_to_core_errors(
    fake_server: Any, status: int, body: Any, expected: type[Exception]
) -> None:
    fake_server.overrides[("POST", "/v2/models/echo/infer")] = lambda r: httpx.Response(
        status, json=body
    )
    async with client_for() as client:
        with pytest.raises(expected) as info:
            await client.infer(fake_server.url, request(InferTensor.from_numpy("x", [1])))
    assert type(info.value) is expected
    message = body.get("error") or "field required"
    assert message in info.value.message


async def test_plain_text_error_body(fake_server: Any) -> None:
    fake_server.overrides[("GET", "/v2/health/ready")] = lambda r: httpx.Response(
        502, text="upstream connect error"
    )
    async with client_for() as client:
        with pytest.raises(ServerError, match="upstream connect error, '502 Bad Gateway'"):
            await client.is_server_ready(fake_server.url)


async def _answer(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    behaviour: str,
    received: asyncio.Event,
) -> None:
    """A raw HTTP/1.1 server misbehaving as ``behaviour`` says, once it read the request."""
    # CancelledError: the server closes under a silent answer at the end of the test
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
        await reader.readuntil(b"\r\n\r\n")
        received.set()
        if behaviour == "hang up":
            writer.close()
        elif behaviour == "reset":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST
        elif behaviour == "bad gzip":
            body = b"not gzip at all"
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()
        else:  # "silent": read the request, never answer
            await asyncio.sleep(30)


@contextlib.asynccontextmanager
async def failing_server(behaviour: str) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """The base URL of a loopback server that fails as ``behaviour`` says, and an event set
    when it read a request."""
    received = asyncio.Event()
    if behaviour == "refused":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            yield f"http://127.0.0.1:{sock.getsockname()[1]}", received  # bound, not listening
        return
    if behaviour == "full backlog":  # connects hang: the accept queue is full, never drained
        with socket.socket() as sock, socket.socket() as filler:
            sock.bind(("127.0.0.1", 0))
            sock.listen(0)
            filler.connect(sock.getsockname())
            yield f"http://127.0.0.1:{sock.getsockname()[1]}", received
        return
    server = await asyncio.start_server(
        lambda r, w: _answer(r, w, behaviour, received), "127.0.0.1", 0
    )
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", received
        server.close()


@pytest.mark.parametrize(
    ("behaviour", "expected", "cause"),
    [
        ("refused", ConnectionFailed, httpx.ConnectError),
        ("reset", ConnectionFailed, httpx.RemoteProtocolError),
        ("hang up", ConnectionFailed, httpx.RemoteProtocolError),
        ("full backlog", Timeout, httpx.ConnectTimeout),
        ("silent", Timeout, httpx.ReadTimeout),
        ("pool", Timeout, httpx.PoolTimeout),
        ("bad gzip", ServerError, httpx.DecodingError),
    ],
)
async def test_transport_failures_map_and_chain(
    behaviour: str, expected: type[Exception], cause: type[Exception]
) -> None:
    """Real failures on loopback: each maps to its core error and chains httpx's exception."""
    timeout = httpx.Timeout(10, connect=0.3, read=0.3, pool=0.3)
    limits = httpx.Limits(max_connections=1)
    async with (
        failing_server("silent" if behaviour == "pool" else behaviour) as (url, received),
        client_for(retries=0, timeout=timeout, limits=limits) as client,
    ):
        busy = None
        if behaviour == "pool":  # the one connection waits on a silent server
            busy = asyncio.ensure_future(client.is_server_live(url, timeout=10))
            await received.wait()
        with pytest.raises(expected) as info:
            await client.is_server_live(url)
        if busy is not None:
            busy.cancel()
            with contextlib.suppress(asyncio.CancelledError, Timeout):
                await busy
    assert type(info.value) is expected
    assert isinstance(info.value.__cause__, cause), repr(info.value.__cause__)
    assert f"{url}/v2/health/live" in info.value.message


async def test_malformed_infer_response_is_server_error(fake_server: Any) -> None:
    fake_server.overrides[("POST", "/v2/models/echo/infer")] = lambda r: httpx.Response(
        200, content=b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "data": [1]}]}'
    )
    async with client_for() as client:
        with pytest.raises(ServerError, match="invalid inference response") as info:
            await client.infer(fake_server.url, request(InferTensor.from_numpy("x", [1])))
    assert isinstance(info.value.__cause__, errors.InvalidInput)


async def test_non_json_success_is_server_error(fake_server: Any) -> None:
    fake_server.overrides[("GET", "/")] = lambda r: httpx.Response(200, text="<html>")
    async with client_for(protocol="v1") as client:
        with pytest.raises(ServerError, match="invalid JSON"):
            await client.is_server_live(fake_server.url)


async def test_unserializable_dict_is_invalid_input(fake_server: Any) -> None:
    async with client_for() as client:
        with pytest.raises(InvalidInput, match="not JSON serializable"):
            await client.infer(fake_server.url, {"x": object()}, model_name="echo")
        with pytest.raises(InvalidInput, match="Invalid input format"):
            await client.infer(fake_server.url, [1, 2], model_name="echo")  # type: ignore[arg-type]


async def test_verbose_logs(fake_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="moorage.client._rest")
    async with client_for(verbose=True) as client:
        await client.is_server_live(fake_server.url)
    assert f"GET {fake_server.url}/v2/health/live -> 200" in caplog.text
