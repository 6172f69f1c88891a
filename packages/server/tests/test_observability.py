"""Metrics, request ids, access logs and JSON log lines, over REST (ASGI) and gRPC (loopback)."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY

from moorage.core.config.server import ServerSettings
from moorage.core.http2.grpcwire import StatusCode
from moorage.core.protocol import InferRequest, InferResponse, InferTensor
from moorage.core.protocol.grpc import (
    METHODS,
    SERVICE_NAME,
    pb,
    request_to_proto,
    response_from_proto,
)
from moorage.server import Model, ModelServer, request_id_var
from moorage.server.dataplane import InferenceEvent
from moorage.server.grpc import create_grpc_server
from moorage.server.logs import JsonFormatter, RequestContextFilter

from .conftest import IRIS_ROWS, make_repository


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class RequestIdModel(Model):
    """Answers (v2) with the request id it sees in the context."""

    def __init__(self) -> None:
        super().__init__("request-id")
        self.ready = True

    async def predict(self, payload: Any, headers: Any = None) -> Any:
        rid = request_id_var.get()
        return InferResponse(self.name, [InferTensor.from_numpy("rid", np.array([rid], object))])


class LoggingModel(Model):
    """Logs from inside predict, to show the request id reaching the model's log records."""

    def __init__(self) -> None:
        super().__init__("logging")
        self.ready = True

    async def predict(self, payload: Any, headers: Any = None) -> Any:
        logging.getLogger("tests.model").info("predicting")
        return {"predictions": [request_id_var.get()]}


def make_server(**settings: Any) -> ModelServer:
    repository = make_repository()
    repository.update(LoggingModel())
    repository.update(RequestIdModel())
    return ModelServer(
        ServerSettings(_cli_parse_args=False, **settings), registered_models=repository
    )


@pytest.fixture
async def observed() -> AsyncIterator[httpx.AsyncClient]:
    app = make_server(
        access_log_format="%(m)s %(U)s %(s)s %({x-request-id}o)s"
    ).create_application()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


# ----------------------------------------------------------------------------- metrics
async def test_metrics_count_and_time_each_stage(observed: httpx.AsyncClient) -> None:
    v1 = {"model": "sum", "protocol": "v1"}
    v2 = {"model": "sum", "protocol": "v2"}
    before = {
        "v1": sample("moorage_server_requests_total", status="200", **v1),
        "v2": sample("moorage_server_request_duration_seconds_count", **v2),
        "kserve": sample("request_predict_seconds_count", model_name="sum"),
        "pre": sample("moorage_server_preprocess_duration_seconds_count", **v2),
    }
    for _ in range(3):
        r = await observed.post("/v1/models/sum:predict", json={"instances": [[1, 2]]})
        assert r.status_code == 200
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    assert (await observed.post("/v2/models/sum/infer", json=body)).status_code == 200

    assert sample("moorage_server_requests_total", status="200", **v1) == before["v1"] + 3
    assert sample("moorage_server_request_duration_seconds_count", **v2) == before["v2"] + 1
    assert sample("request_predict_seconds_count", model_name="sum") == before["kserve"] + 4
    assert sample("moorage_server_preprocess_duration_seconds_count", **v2) == before["pre"] + 1
    assert sample("moorage_server_request_duration_seconds_sum", **v2) > 0

    scrape = await observed.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    for name in (
        "moorage_server_request_duration_seconds_bucket",
        "moorage_server_predict_duration_seconds_bucket",
        "request_preprocess_seconds_bucket",
        "request_postprocess_seconds_bucket",
        "moorage_server_http_requests_total",
    ):
        assert name in text
    assert 'moorage_server_requests_total{model="sum",protocol="v1",status="200"}' in text


async def test_failures_are_counted_by_status(observed: httpx.AsyncClient) -> None:
    labels = {"model": "failing", "protocol": "v1"}
    err500 = sample("moorage_server_requests_total", status="500", **labels)
    err400 = sample("moorage_server_requests_total", status="400", **labels)
    assert (await observed.post("/v1/models/failing:predict", json={"instances": [1]})).is_error
    r = await observed.post("/v1/models/failing:predict", json={"instances": ["bad"]})
    assert r.status_code == 400
    assert sample("moorage_server_requests_total", status="500", **labels) == err500 + 1
    assert sample("moorage_server_requests_total", status="400", **labels) == err400 + 1


async def test_http_metrics_use_route_templates(observed: httpx.AsyncClient) -> None:
    route = "/v1/models/{model_name}:predict"
    ok = sample("moorage_server_http_requests_total", method="POST", route=route, status="200")
    missing = sample("moorage_server_http_requests_total", method="POST", route=route, status="404")
    unmatched = sample(
        "moorage_server_http_requests_total", method="GET", route="unmatched", status="404"
    )
    await observed.post("/v1/models/echo:predict", json={"instances": [1]})
    await observed.post("/v1/models/nope:predict", json={"instances": [1]})
    await observed.get("/no/such/route")
    assert (
        sample("moorage_server_http_requests_total", method="POST", route=route, status="200")
        == ok + 1
    )
    assert (
        sample("moorage_server_http_requests_total", method="POST", route=route, status="404")
        == missing + 1
    )
    assert (
        sample("moorage_server_http_requests_total", method="GET", route="unmatched", status="404")
        == unmatched + 1
    )


def test_tallied_observations_match_what_observe_records() -> None:
    """Observations tallied on the request path read back (sums, every bucket, counts) as
    prometheus-client's own ``observe`` and ``inc`` record them, through any collection:
    the registry, a name-restricted registry and the text exposition."""
    from prometheus_client import CollectorRegistry, Histogram

    from moorage.server import metrics

    amounts = [0.0001, 0.0004, 0.0005, 0.003, 0.2, 0.2, 7.5, 61.0, 0.0]
    reference = Histogram("reference_seconds", "", ["model"], buckets=metrics.BUCKETS,
                          registry=CollectorRegistry())  # fmt: skip
    for amount in amounts:
        reference.labels("m").observe(amount)
    expected = {
        (s.name, s.labels.get("le")): s.value
        for s in reference.collect()[0].samples
        if not s.name.endswith("_created")
    }

    hook = metrics.MetricsHook()
    model = "tally-check"
    for amount in amounts:
        event = InferenceEvent(model, "predict", "v2", "rest", {}, None, None, 0.0)
        event.timings.update({"preprocess": 0.0, "predict": amount, "postprocess": 0.0})
        hook.on_response(event)
    for name in ("moorage_server_predict_duration_seconds", "request_predict_seconds"):
        labels = (
            {"model_name": model}
            if name.startswith("request_")
            else {"model": model, "protocol": "v2"}
        )
        for (sample_name, le), value in expected.items():
            got_name = name + sample_name.removeprefix("reference_seconds")
            extra = {"le": le} if le is not None else {}
            assert sample(got_name, **labels, **extra) == pytest.approx(value), (got_name, le)
    restricted = REGISTRY.restricted_registry(["moorage_server_requests_total"])
    hook.on_response(InferenceEvent(model, "predict", "v2", "rest", {}, None, None, 0.0))
    totals = [
        s.value
        for m in restricted.collect()
        for s in m.samples
        if s.labels.get("model") == model and s.name == "moorage_server_requests_total"
    ]
    assert totals == [len(amounts) + 1]
    text = metrics.render_metrics().decode()
    assert (
        f'moorage_server_requests_total{{model="{model}",protocol="v2",status="200"}} 10.0' in text
    )


def test_tallies_lose_nothing_across_threads() -> None:
    """Threads observing while another collects: every observation is counted once."""
    import threading

    from moorage.server import metrics

    threads, per_thread = 4, 2000
    method = "TallyThreads"
    before = sample("moorage_server_grpc_requests_total", method=method, code="OK")
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            REGISTRY.get_sample_value("moorage_server_grpc_requests_total", {})

    def observe() -> None:
        for _ in range(per_thread):
            metrics.observe_grpc(method, StatusCode.OK, 0.001)

    reader = threading.Thread(target=scrape)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: a race would show
    reader.start()
    workers = [threading.Thread(target=observe) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    reader.join()
    sys.setswitchinterval(interval)
    count = threads * per_thread
    assert sample("moorage_server_grpc_requests_total", method=method, code="OK") == before + count
    assert sample("moorage_server_grpc_request_duration_seconds_count", method=method) == count
    assert sample("moorage_server_grpc_request_duration_seconds_sum", method=method) == (
        pytest.approx(count * 0.001)
    )


async def test_metrics_can_be_turned_off() -> None:
    app = make_server(enable_metrics=False).create_application()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/metrics")).status_code == 404
        assert "x-request-id" in (await client.get("/v2/health/live")).headers


# ----------------------------------------------------------------------------- request ids
async def test_request_id_is_echoed_and_reaches_the_model(observed: httpx.AsyncClient) -> None:
    r = await observed.post(
        "/v1/models/logging:predict", json={"instances": [1]}, headers={"x-request-id": "abc-1"}
    )
    assert r.headers["x-request-id"] == "abc-1"
    assert r.json() == {"predictions": ["abc-1"]}


async def test_request_id_is_generated_when_missing(observed: httpx.AsyncClient) -> None:
    r = await observed.post("/v1/models/logging:predict", json={"instances": [1]})
    generated = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert r.json() == {"predictions": [generated]}
    other = await observed.get("/v2/health/live")
    assert other.headers["x-request-id"] != generated


async def test_oversized_request_id_is_replaced(observed: httpx.AsyncClient) -> None:
    r = await observed.get("/v2/health/live", headers={"x-request-id": "x" * 1000})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


async def test_log_records_carry_the_request_id(
    observed: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestContextFilter())
    with caplog.at_level(logging.INFO):
        await observed.post(
            "/v1/models/logging:predict", json={"instances": [1]}, headers={"x-request-id": "r-7"}
        )
    records = [r for r in caplog.records if r.name == "tests.model"]
    assert records and records[0].request_id == "r-7"  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- access log
async def test_access_log_line_and_fields(
    observed: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="moorage.server.access"):
        await observed.post(
            "/v1/models/echo:predict", json={"instances": [1]}, headers={"x-request-id": "q1"}
        )
    (record,) = [r for r in caplog.records if r.name == "moorage.server.access"]
    assert record.getMessage() == "POST /v1/models/echo:predict 200 q1"
    fields = vars(record)
    assert fields["request_id"] == "q1"
    assert fields["status"] == 200
    assert fields["route"] == "/v1/models/{model_name}:predict"
    assert fields["duration_ms"] >= 0 and fields["bytes"] > 0


async def test_no_access_log_by_default(caplog: pytest.LogCaptureFixture) -> None:
    app = make_server().create_application()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with caplog.at_level(logging.INFO, logger="moorage.server.access"):
            await client.get("/v2/health/live")
    assert not [r for r in caplog.records if r.name == "moorage.server.access"]


def test_compiled_access_format_writes_what_percent_formatting_writes() -> None:
    """Every atom, compiled into functions, reads as ``format % atoms`` reads it."""
    from moorage.server.access_log import _Atoms, _compile

    scope = {
        "method": "POST",
        "path": "/v2/models/m/infer",
        "query_string": b"a=1",
        "http_version": "1.1",
        "client": ("10.0.0.1", 5000),
        "headers": [(b"x-request-id", b"r1"), (b"user-agent", b"ua"), (b"referer", b"ref")],
    }
    out = [(b"Content-Type", b"application/json")]
    atoms = list("hlurmUqHsBbfaTMDLp")
    fmt = " ".join(f"%({a})s" for a in atoms)
    fmt += " %({x-request-id}i)s %({X-Missing}i)s %({content-type}o)s %({x-missing}o)s end"
    compiled = _compile(fmt)
    assert compiled is not None
    for sent in (0, 160):
        line = "".join(
            p if isinstance(p, str) else p(scope, 200, sent, 1.25, out) for p in compiled
        )
        assert line == fmt % _Atoms(scope, 200, sent, 1.25, out)
    assert _compile("%(h)s %d") is None and _compile("%(nope)s") is None


def test_grpc_access_line_written_directly_reads_as_logging_writes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the default text handler the gRPC access line skips the LogRecord too; the line
    is the one logging writes (a handler added beside it sends it through logging again)."""
    import io
    import re
    import sys

    from moorage.core.http2.grpcwire import StatusCode
    from moorage.server import logs
    from moorage.server.access_log import GrpcAccessInterceptor

    class Context:
        def peer(self) -> str:
            return "ipv4:127.0.0.1:5000"

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    interceptor = GrpcAccessInterceptor(access_log=True, record_metrics=False)
    try:
        logs.install_handler(level="INFO")
        interceptor._observe("ModelInfer", StatusCode.OK, 0.0012345, "r1", Context())
        root.addHandler(logging.NullHandler())  # another handler: through logging
        interceptor._observe("ModelInfer", StatusCode.OK, 0.0012345, "r1", Context())
        lines = [line for line in stream.getvalue().splitlines() if "server.access:" in line]
        direct, logged = (re.sub(r"^\d\d:\d\d:\d\d\.\d{3} ", "", line) for line in lines)
        assert direct == logged
        assert direct.endswith("ipv4:127.0.0.1:5000 gRPC ModelInfer OK 1.234ms")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_access_lines_on_a_loop_follow_a_logging_change_by_the_next_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the event loop the access log looks its handler up once per loop pass: a handler
    added to logging takes the lines of the passes after it."""
    import asyncio
    import io
    import sys

    from moorage.core.http2.grpcwire import StatusCode
    from moorage.server import logs
    from moorage.server.access_log import GrpcAccessInterceptor

    class Context:
        def peer(self) -> str:
            return "ipv4:127.0.0.1:5000"

    class Collecting(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    interceptor = GrpcAccessInterceptor(access_log=True, record_metrics=False)
    collecting = Collecting()

    async def passes() -> None:
        interceptor._observe("ModelInfer", StatusCode.OK, 0.001, "r1", Context())
        await asyncio.sleep(0)
        root.addHandler(collecting)
        await asyncio.sleep(0)
        interceptor._observe("ModelInfer", StatusCode.OK, 0.002, "r2", Context())

    try:
        handler = logs.install_handler(level="INFO")
        asyncio.run(passes())
        handler.flush()
        assert collecting.messages == ["ipv4:127.0.0.1:5000 gRPC ModelInfer OK 2.000ms"]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_text_lines_on_a_loop_are_written_together_and_in_order() -> None:
    """Access lines written on the event loop wait for the loop's pass to end, and for the
    write interval since the last write, then go out in one write; any other record, or a
    flush, writes them first (the order holds)."""
    import asyncio
    import io

    from moorage.server.logs import WRITE_INTERVAL_S, TextHandler

    class Counting(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            self.writes += 1
            return super().write(text)

    stream = Counting()
    handler = TextHandler(stream)
    handler.write_line("moorage.server.access", "INFO", "one")
    assert stream.getvalue().endswith("moorage.server.access: one\n")  # no loop: at once
    handler.write_line("moorage.server.access", "INFO", "two")
    handler.write_line("moorage.server.access", "INFO", "three")
    assert stream.writes == 3
    logger = logging.getLogger("test.textlines")
    logger.propagate = False
    logger.addHandler(handler)
    try:

        async def on_loop() -> None:
            await asyncio.sleep(WRITE_INTERVAL_S)  # long enough after the last write
            before = stream.writes
            for n in range(5):
                handler.write_line("moorage.server.access", "INFO", f"batch {n}")
            assert stream.writes == before  # nothing yet
            await asyncio.sleep(0)
            assert stream.writes == before + 1  # all five in one write, at the pass's end
            started = time.monotonic()
            handler.write_line("moorage.server.access", "INFO", "soon after")
            await asyncio.sleep(0)
            assert stream.writes == before + 1  # within the interval: it waits
            for _ in range(200):
                if stream.writes > before + 1:
                    break
                await asyncio.sleep(0.005)
            assert time.monotonic() - started >= WRITE_INTERVAL_S * 0.9
            handler.write_line("moorage.server.access", "INFO", "before the record")
            logger.warning("a record")  # writes the waiting line first
            handler.write_line("moorage.server.access", "INFO", "before the flush")
            handler.flush()

        asyncio.run(on_loop())
    finally:
        logger.removeHandler(handler)
    messages = [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()]
    assert messages == [
        "one", "two", "three", *(f"batch {n}" for n in range(5)), "soon after",
        "before the record", "a record", "before the flush",
    ]  # fmt: skip


def test_json_formatter_writes_extras_and_request_id() -> None:
    record = logging.LogRecord("moorage.x", logging.WARNING, __file__, 1, "hello %s", ("w",), None)
    record.model = "iris"
    RequestContextFilter().filter(record)
    token = request_id_var.set("ctx-1")
    try:
        other = logging.LogRecord("moorage.y", logging.INFO, __file__, 1, "m", None, None)
        RequestContextFilter().filter(other)
    finally:
        request_id_var.reset(token)
    doc = orjson.loads(JsonFormatter().format(record))
    assert doc["message"] == "hello w" and doc["level"] == "WARNING"
    assert doc["model"] == "iris" and doc["request_id"] is None
    assert orjson.loads(JsonFormatter().format(other))["request_id"] == "ctx-1"


# ----------------------------------------------------------------------------- gRPC
Call = Callable[..., Any]


async def with_call(method: Call, request: Any, metadata: Any = ()) -> tuple[Any, dict[str, Any]]:
    call = method(request, metadata=metadata)
    reply = await call
    return reply, dict(await call.trailing_metadata())


@pytest.fixture(
    params=[("grpcio", False), ("grpcio", True), ("native", False)],
    ids=["aio", "threaded", "native"],
)
async def grpc_call(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[str], Call]]:
    server = make_server()
    implementation, threaded = request.param
    grpc_server = create_grpc_server(
        server.dataplane,
        interceptors=server.observability.grpc_interceptors(),
        threaded=threaded,
        implementation=implementation,
    )
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    def method(name: str) -> Call:
        request_cls, response_cls = METHODS[name]
        return channel.unary_unary(
            f"/{SERVICE_NAME}/{name}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )

    yield method
    await channel.close()
    await grpc_server.stop(0)


async def test_grpc_metrics_and_request_ids(grpc_call: Callable[[str], Call]) -> None:
    infer_ok = sample("moorage_server_grpc_requests_total", method="ModelInfer", code="OK")
    not_found = sample("moorage_server_grpc_requests_total", method="ModelInfer", code="NOT_FOUND")
    inferences = sample(
        "moorage_server_requests_total", model="echo", protocol="grpc-v2", status="200"
    )
    request = InferRequest("echo", [InferTensor.from_numpy("x", np.ones((1, 2), np.float32))])

    infer = grpc_call("ModelInfer")
    _, given = await with_call(infer, request_to_proto(request), (("x-request-id", "g-42"),))
    assert given["x-request-id"] == "g-42"
    _, generated = await with_call(infer, request_to_proto(request))
    assert re.fullmatch(r"[0-9a-f]{32}", generated["x-request-id"])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await infer(request_to_proto(InferRequest("nope", request.inputs)))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert dict(info.value.trailing_metadata())["x-request-id"]
    assert (await grpc_call("ServerLive")(pb.ServerLiveRequest())).live

    assert sample("moorage_server_grpc_requests_total", method="ModelInfer", code="OK") == (
        infer_ok + 2
    )
    assert sample("moorage_server_grpc_requests_total", method="ModelInfer", code="NOT_FOUND") == (
        not_found + 1
    )
    assert sample(
        "moorage_server_requests_total", model="echo", protocol="grpc-v2", status="200"
    ) == (inferences + 2)
    assert sample("moorage_server_grpc_request_duration_seconds_count", method="ServerLive") > 0


async def test_grpc_generated_request_id_reaches_the_model(
    grpc_call: Callable[[str], Call],
) -> None:
    tensor = InferTensor.from_numpy("x", np.ones((1, 2), np.float32))
    request = request_to_proto(InferRequest("request-id", [tensor]))
    reply, trailing = await with_call(grpc_call("ModelInfer"), request)
    rid = trailing["x-request-id"]
    assert response_from_proto(reply).outputs[0].data.tolist() == [rid.encode()]


# ----------------------------------------------------------------------------- settings
def test_agent_logger_flags_are_accepted() -> None:
    settings = ServerSettings.from_cli(
        ["--log-url", "https://sink", "--log-mode=request", "--metadata-headers", "a,B",
         "--inference-service", "isvc", "--namespace", "ns", "--component", "predictor",
         "--endpoint", "default", "--source-uri", "pod-1", "--logger-tls-skip-verify", "true",
         "--logger-ca-cert-file", "ca.crt", "--component-port", "8080"]
    )  # fmt: skip
    assert settings.logger_url == "https://sink" and settings.logger_mode == "request"
    assert settings.logger_metadata_headers == ["a", "B"]
    assert (settings.logger_inference_service, settings.logger_namespace) == ("isvc", "ns")
    assert (settings.logger_component, settings.logger_endpoint) == ("predictor", "default")
    assert settings.logger_source_uri == "pod-1" and settings.logger_tls_skip_verify
    assert settings.logger_ca_cert_file == "ca.crt"
    assert settings.extra_args == ["--component-port", "8080"]


# ----------------------------------------------------------------------------- real processes
def _counter(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.integration
@pytest.mark.slow
def test_workers_report_summed_metrics_and_json_logs(
    iris_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_integration import start, stop

    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    stale = multiproc / "counter_1.db"
    stale.write_bytes(b"stale samples of an earlier run")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(multiproc))
    log = tmp_path / "workers.log"
    server = start(
        ["--model_name", "iris", "--model_dir", str(iris_dir), "--workers", "2",
         "--log_format", "json", "--enable_access_log", "true", "--enable_grpc", "false"],
        log,
    )  # fmt: skip
    try:
        for _ in range(80):
            if server.output().count("moorage-server ready") >= 2:
                break
            time.sleep(0.25)
        assert not stale.exists()
        with httpx.Client(base_url=server.url) as client:
            for i in range(20):
                r = client.post(
                    "/v1/models/iris:predict",
                    json={"instances": IRIS_ROWS},
                    headers={"x-request-id": f"req-{i}"},
                )
                assert r.status_code == 200 and r.headers["x-request-id"] == f"req-{i}"
            labels = 'model="iris",protocol="v1",status="200"'
            for _ in range(4):  # whichever worker answers, the sum over both
                text = client.get("/metrics").text
                assert _counter(text, "moorage_server_requests_total", labels) == 20
    finally:
        assert stop(server) == 0, server.output()
    lines = [orjson.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    access = [d for d in lines if d["logger"] == "moorage.server.access"]
    assert {d["request_id"] for d in access} >= {f"req-{i}" for i in range(20)}
    assert all(d["status"] == 200 for d in access if d["request_id"].startswith("req-"))
    assert len({d["process"] for d in lines if "moorage-server ready" in d["message"]}) == 2


async def test_an_error_outside_the_data_plane_still_gets_the_request_id() -> None:
    from starlette.routing import Route, Router

    async def broken(request: Any) -> Any:
        raise RuntimeError("route bug")

    server = make_server()
    server.observability.routers = lambda: [Router([Route("/broken", broken)])]  # type: ignore[method-assign]
    transport = httpx.ASGITransport(app=server.create_application(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get("/broken", headers={"x-request-id": "bug-1"})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == "bug-1"
    assert r.json()["error"] == "RuntimeError : route bug"
