"""REST v1 and v2 through the ASGI app (no sockets)."""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from moorage.core.protocol import InferRequest, InferTensor, RequestedOutput
from moorage.core.protocol.rest import HEADER_LENGTH, decode_response, encode_request
from moorage.server import DataPlane
from moorage.server.rest import create_app

V2_BODY = {
    "id": "r1",
    "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}],
}


async def test_health_and_metadata(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).json() == {"status": "alive"}
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    meta = (await client.get("/v2")).json()
    assert meta["name"] == "moorage" and "model_repository_extension" in meta["extensions"]
    models = (await client.get("/v1/models")).json()["models"]
    assert set(models) >= {"echo", "sum", "failing"}
    assert (await client.get("/v2/models")).json()["models"] == models
    assert (await client.get("/v1/models/echo")).json() == {"name": "echo", "ready": True}
    assert (await client.get("/v2/models/echo/ready")).json() == {"name": "echo", "ready": True}
    meta = (await client.get("/v2/models/echo")).json()
    assert meta == {
        "name": "echo",
        "platform": "",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [],
    }


async def test_server_not_ready_while_a_model_is_not(client: httpx.AsyncClient) -> None:
    # "lazy" is registered but not loaded
    response = await client.get("/v2/health/ready")
    assert response.status_code == 503 and response.json() == {"ready": False}
    assert (await client.get("/v1/models/lazy")).status_code == 503
    assert (await client.get("/v2/models/lazy/ready")).status_code == 503
    assert (await client.post("/v2/repository/models/lazy/load")).json() == {
        "name": "lazy",
        "load": True,
    }
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    response = await client.post("/v1/models/lazy:predict", json={"instances": [1]})
    assert response.json() == {"predictions": ["lazy"]}
    assert (await client.post("/v2/repository/models/lazy/unload")).json() == {
        "name": "lazy",
        "unload": True,
    }
    response = await client.post("/v1/models/lazy:predict", json={"instances": [1]})
    assert response.status_code == 404


async def test_v2_infer_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/echo/infer", json=V2_BODY)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"] == "r1" and body["model_name"] == "echo"
    assert body["outputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0]}
    ]


async def test_v2_infer_generates_an_id(client: httpx.AsyncClient) -> None:
    body = {"inputs": V2_BODY["inputs"]}
    response = await client.post("/v2/models/sum/infer", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert len(out["id"]) == 36
    assert out["outputs"][0]["data"] == [3.0, 7.0]


async def test_v2_binary_both_ways(client: httpx.AsyncClient) -> None:
    data = np.arange(6, dtype=np.int32).reshape(2, 3)
    request = InferRequest(
        "echo",
        [
            InferTensor.from_numpy("a", data, binary=True),
            InferTensor.from_numpy("s", np.array([b"hi", b"\xff\x00"], dtype=object), binary=True),
        ],
        outputs=[RequestedOutput("a", {"binary_data": True}), RequestedOutput("s", {})],
        parameters={"binary_data_output": True},
    )
    body, json_length = encode_request(request)
    assert json_length is not None
    response = await client.post(
        "/v2/models/echo/infer",
        content=body,
        headers={HEADER_LENGTH: str(json_length), "content-type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    header_length = int(response.headers[HEADER_LENGTH])
    decoded = decode_response(response.content, header_length=header_length)
    np.testing.assert_array_equal(decoded.output("a").data, data)
    assert list(decoded.output("s").data) == [b"hi", b"\xff\x00"]


async def test_v2_versions(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/echo/versions/7/infer", json=V2_BODY)
    assert response.status_code == 404
    assert "version '7'" in response.json()["error"]
    assert (await client.get("/v2/models/echo/versions/7")).status_code == 404
    assert (await client.get("/v2/models/echo/versions/7/ready")).status_code == 404


async def test_v2_versioned_model(dataplane: DataPlane, client: httpx.AsyncClient) -> None:
    model = dataplane.repository.get_model("echo")
    assert model is not None
    model.version = "3"
    response = await client.post("/v2/models/echo/versions/3/infer", json=V2_BODY)
    assert response.status_code == 200
    meta = (await client.get("/v2/models/echo/versions/3")).json()
    assert meta["versions"] == ["3"]


async def test_v1_predict_and_explain(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/echo:predict", json={"instances": [[1, 2]]})
    assert response.json() == {"predictions": [[1, 2]]}
    response = await client.post("/v1/models/sum:predict", json={"instances": [[1, 2], [3, 4]]})
    assert response.json()["outputs"][0]["data"] == [3.0, 7.0]
    response = await client.post("/v1/models/echo:explain", json={"instances": [1, 2, 3]})
    assert response.json() == {"explanations": 3}
    # curl's default content type still decodes as JSON
    response = await client.post(
        "/v1/models/echo:predict",
        content=b'{"instances": [1]}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.json() == {"predictions": [1]}


async def test_explain_not_implemented(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/sum:explain", json={"instances": [[1]]})
    assert response.status_code == 501
    assert response.json()["error"] == "Could not find explainer_host."


async def test_headers_in_and_out(dataplane: DataPlane, client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v2/models/echo/infer", json=V2_BODY, headers={"x-echo": "hello", "x-request-id": "q"}
    )
    assert response.headers["x-echoed"] == "hello"
    model: Any = dataplane.repository.get_model("echo")
    assert model.seen_headers["x-request-id"] == "q"


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v2/models/echo/infer", b"{not json", 400, "invalid JSON"),
        ("/v2/models/echo/infer", b"[1]", 400, "JSON object"),
        ("/v2/models/echo/infer", b'{"inputs": 3}', 400, "'inputs' must be a list"),
        (
            "/v2/models/echo/infer",
            b'{"inputs":[{"name":"x","shape":[2],"datatype":"FP99","data":[1,2]}]}',
            400,
            "unsupported datatype",
        ),
        (
            "/v2/models/echo/infer",
            b'{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}',
            400,
            "needs 3 elements",
        ),
        (
            "/v2/models/echo/infer",
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":["a"]}]}',
            400,
            "does not fit datatype",
        ),
        ("/v2/models/nope/infer", orjson.dumps(V2_BODY), 404, "nope"),
        ("/v1/models/nope:predict", b'{"instances": []}', 404, "nope"),
        ("/v1/models/echo:predict", b'{"instances": 1}', 400, "instances"),
        ("/v1/models/failing:predict", b'{"instances": [1]}', 500, "failing"),
        ("/v1/models/failing:predict", b'{"instances": ["bad"]}', 400, "refuses"),
        ("/v2/models/failing/infer", orjson.dumps(V2_BODY), 500, "RuntimeError: boom"),
    ],
)
async def test_bad_requests(
    client: httpx.AsyncClient, path: str, body: bytes, status: int, needle: str
) -> None:
    response = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()
    assert needle in error["error"]
    assert error["code"]
    # the server keeps serving
    assert (await client.post("/v2/models/echo/infer", json=V2_BODY)).status_code == 200


async def test_lying_binary_header_length(client: httpx.AsyncClient) -> None:
    request = InferRequest(
        "echo", [InferTensor.from_numpy("a", np.ones(4, np.float32), binary=True)]
    )
    body, json_length = encode_request(request)
    assert json_length is not None
    for lie in (str(json_length + 5), str(len(body) + 10), "-1", "abc", str(json_length - 3)):
        response = await client.post(
            "/v2/models/echo/infer", content=body, headers={HEADER_LENGTH: lie}
        )
        assert response.status_code == 400, (lie, response.text)
        assert response.json()["error"]
    # binary body without the header
    response = await client.post("/v2/models/echo/infer", content=body)
    assert response.status_code == 400
    assert HEADER_LENGTH in response.json()["error"]


async def test_oversized_body_413(client: httpx.AsyncClient) -> None:
    big = b'{"instances": [' + b"1," * 40_000 + b"1]}"
    response = await client.post("/v1/models/echo:predict", content=big)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"

    async def chunks() -> Any:
        for _ in range(20):
            yield b" " * 8192

    response = await client.post("/v1/models/echo:predict", content=chunks())
    assert response.status_code == 413


async def test_overloaded_503(dataplane: DataPlane, client: httpx.AsyncClient) -> None:
    import asyncio

    slow: Any = dataplane.repository.get_model("slow")
    tasks = [
        asyncio.create_task(client.post("/v1/models/slow:predict", json={"instances": [1]}))
        for _ in range(4)
    ]
    for _ in range(100):
        await asyncio.sleep(0.01)
        if dataplane.repository.bound("slow").inflight == 4:
            break
    response = await client.post("/v1/models/slow:predict", json={"instances": [1]})
    assert response.status_code == 503
    assert response.json()["code"] == "overloaded"
    # other models are unaffected
    assert (await client.post("/v2/models/echo/infer", json=V2_BODY)).status_code == 200
    slow.release.set()
    assert [r.status_code for r in await asyncio.gather(*tasks)] == [200] * 4


async def test_gzip_only_when_asked(client: httpx.AsyncClient) -> None:
    body = {"instances": list(range(2000))}
    plain = await client.post(
        "/v1/models/echo:predict", json=body, headers={"accept-encoding": "identity"}
    )
    assert "content-encoding" not in plain.headers
    zipped = await client.post(
        "/v1/models/echo:predict", json=body, headers={"accept-encoding": "gzip"}
    )
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.json() == plain.json()  # httpx decodes it
    raw = await client.post(
        "/v1/models/echo:predict", json=body, headers={"accept-encoding": "gzip"}
    )
    assert len(gzip.compress(raw.content)) > 0


async def test_unknown_route_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v3/nothing")
    assert response.status_code == 404
    assert response.json()["error"] == "Not Found"


async def test_docs_only_when_enabled(dataplane: DataPlane, client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 404
    assert (await client.get("/openapi.json")).status_code == 404
    app = create_app(dataplane, enable_docs_url=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as docs_client:
        assert (await docs_client.get("/docs")).status_code == 200
        spec = (await docs_client.get("/openapi.json")).json()
    assert "/v2/models/{model_name}/infer" in spec["paths"]
    assert "InferenceRequestSchema" in spec["components"]["schemas"]
