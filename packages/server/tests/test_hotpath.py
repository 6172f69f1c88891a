"""HotPath (the inference and health routes served ahead of Starlette) answers exactly as the
Starlette routes do: the same requests go to an app with it and to one without, and the
answers are compared."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from moorage.core.config.server import ServerSettings
from moorage.server import DataPlane, ModelServer
from moorage.server.rest import create_app
from moorage.server.rest.hotpath import HotPath

from .conftest import make_repository

V2 = {"id": "r1", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
BIG = {"inputs": [{"name": "x", "shape": [1, 400], "datatype": "FP32", "data": [1.5] * 400}]}


class Passthrough:
    """Middleware HotPath does not know: with it, every request goes through Starlette."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def make_app(*, hot: bool) -> Any:
    server = ModelServer(
        ServerSettings(_cli_parse_args=False, access_log_format="%(m)s %(U)s %(s)s"),
        registered_models=make_repository(),
    )
    middleware = server.observability.middleware()
    if not hot:
        middleware.append(Middleware(Passthrough))
    return create_app(
        server.dataplane, max_body_bytes=64 * 1024, routers=server.observability.routers(),
        middleware=middleware,
    )  # fmt: skip


@pytest.fixture
async def clients() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Any]]:
    hot_app, cold_app = make_app(hot=True), make_app(hot=False)
    hot = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hot_app, raise_app_exceptions=False),
        base_url="http://test",
    )
    cold = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cold_app, raise_app_exceptions=False),
        base_url="http://test",
    )
    async with hot, cold:
        yield hot, cold, hot_app


REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v2/models/echo/infer", {"json": V2}),
    ("POST", "/v2/models/echo/versions/1/infer", {"json": V2}),
    ("POST", "/v2/models/sum/infer", {"json": V2}),
    ("POST", "/v2/models/echo/infer", {"json": V2, "headers": {"x-echo": "hi"}}),
    ("POST", "/v2/models/echo/infer", {"content": b"{not json"}),
    ("POST", "/v2/models/echo/infer", {"content": b"x" * (65 * 1024)}),
    ("POST", "/v2/models/nope/infer", {"json": V2}),
    ("POST", "/v2/models/failing/infer", {"json": V2}),
    ("POST", "/v2/models/lazy/infer", {"json": V2}),
    ("POST", "/v2/models/echo/infer", {"json": BIG, "headers": {"accept-encoding": "gzip"}}),
    ("POST", "/v2/models/echo/infer", {"json": V2, "headers": {"accept-encoding": "gzip"}}),
    ("POST", "/v1/models/echo:predict", {"json": {"instances": [[1, 2]]}}),
    ("POST", "/v1/models/sum:predict", {"json": {"instances": [[1, 2]]}}),
    ("POST", "/v1/models/echo:explain", {"json": {"instances": [[1, 2]]}}),
    ("POST", "/v1/models/failing:predict", {"json": {"instances": ["bad"]}}),
    ("POST", "/v1/models/sum:explain", {"json": {"instances": [[1, 2]]}}),
    ("POST", "/v1/models/echo:predict", {"content": b"raw", "headers": {"content-type": "x/y"}}),
    ("GET", "/v2/models/echo/infer", {}),
    ("POST", "/v2/models/echo/infer/", {"json": V2}),
    ("POST", "/v2/models//infer", {"json": V2}),
    ("POST", "/v2/models/a/b/infer", {"json": V2}),
    ("GET", "/v2/health/live", {}),
    ("GET", "/v2/health/ready", {}),
    ("POST", "/v2/health/live", {}),
]


def _comparable(response: httpx.Response) -> tuple[Any, ...]:
    body: Any = response.content
    if response.headers.get("content-type") == "application/json":
        body = orjson.loads(body)
        if isinstance(body, dict) and body.get("id") not in (None, "r1"):
            body["id"] = "<generated>"
    headers = {
        k: v for k, v in response.headers.items() if k not in ("x-request-id", "content-length")
    }
    return response.status_code, headers, body, "x-request-id" in response.headers


@pytest.mark.parametrize(("method", "path", "kwargs"), REQUESTS)
async def test_hot_path_answers_as_starlette_does(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient, Any],
    method: str,
    path: str,
    kwargs: dict[str, Any],
) -> None:
    hot, cold, hot_app = clients
    got = await hot.request(method, path, **kwargs)
    want = await cold.request(method, path, **kwargs)
    assert _comparable(got) == _comparable(want)
    assert isinstance(hot_app.middleware_stack, HotPath)


async def test_request_ids_metrics_and_access_lines(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient, Any], caplog: pytest.LogCaptureFixture
) -> None:
    hot, _, _ = clients
    with caplog.at_level(logging.INFO, logger="moorage.server.access"):
        response = await hot.post("/v2/models/echo/infer", json=V2, headers={"x-request-id": "a1"})
        fresh = await hot.post("/v1/models/echo:predict", json={"instances": [1]})
    assert response.headers["x-request-id"] == "a1"
    assert len(fresh.headers["x-request-id"]) == 32
    lines = [r for r in caplog.records if r.name == "moorage.server.access"]
    assert [r.getMessage() for r in lines] == [
        "POST /v2/models/echo/infer 200",
        "POST /v1/models/echo:predict 200",
    ]
    assert lines[0].request_id == "a1"  # type: ignore[attr-defined]
    assert lines[1].route == "/v1/models/{model_name}:predict"  # type: ignore[attr-defined]
    scrape = (await hot.get("/metrics")).text
    assert (
        'moorage_server_http_requests_total{method="POST",'
        'route="/v2/models/{model_name}/infer",status="200"}'
    ) in scrape


async def test_the_model_sees_the_request_id(dataplane: DataPlane) -> None:
    app = make_app(hot=True)
    echo = app.state.dataplane.repository.get_model("echo")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/v2/models/echo/infer", json=V2)
    assert echo.seen_headers["x-request-id"] == response.headers["x-request-id"]


def test_match_takes_one_path_segment_per_parameter() -> None:
    app = create_app(DataPlane(make_repository()))
    hot = app.build_middleware_stack()
    assert isinstance(hot, HotPath)
    assert hot.match("POST", "/v1/models/a:b:predict") is not None
    assert hot.match("POST", "/v1/models/a:b:predict")[2] == {"model_name": "a:b"}  # type: ignore[index]
    assert hot.match("POST", "/v2/models/m/versions/7/infer")[2] == {  # type: ignore[index]
        "model_name": "m",
        "model_version": "7",
    }
    for method, path in [
        ("POST", "/v2/models/m/versions//infer"),
        ("POST", "/v2/models/m/other/7/infer"),
        ("POST", "/v1/models/:predict"),
        ("POST", "/v1/models/a/b:predict"),
        ("GET", "/v1/models/m:predict"),
        ("GET", "/v2/models/m"),
    ]:
        assert hot.match(method, path) is None, path


async def test_access_lines_written_directly_read_as_logging_writes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the default text handler the access line skips the LogRecord; the line is the
    one logging writes (checked against a record written through logging beside it)."""
    import io
    import re
    import sys

    from moorage.server import logs

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        handler = logs.install_handler(level="INFO")
        access = logging.getLogger("moorage.server.access")
        assert logs.plain_text_handler(access, logging.INFO) is handler
        transport = httpx.ASGITransport(app=make_app(hot=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.post("/v2/models/echo/infer", json=V2)
        access.info("%s", "POST /v2/models/echo/infer 200")
        lines = stream.getvalue().splitlines()
        direct, logged = [line for line in lines if "moorage.server.access:" in line]
        clock = r"^\d\d:\d\d:\d\d\.\d{3} "
        assert re.sub(clock, "", direct) == re.sub(clock, "", logged)
        root.addHandler(logging.NullHandler())  # another handler: records again
        assert logs.plain_text_handler(access, logging.INFO) is None
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
