"""The blocking twins: one private event loop per client, usable from scripts, threads and
running event loops (notebooks)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from moorage.client import (
    ConnectionFailed,
    InferRequest,
    ModelNotFound,
    RESTConfig,
    SyncInferenceGRPCClient,
    SyncInferenceRESTClient,
)
from moorage.core.protocol import InferTensor


def rest_client(protocol: str = "v2") -> SyncInferenceRESTClient:
    """As users make it: the default transport, to ``fake_server`` on loopback."""
    return SyncInferenceRESTClient(RESTConfig(protocol=protocol))


def test_sync_rest_methods(fake_server: Any) -> None:
    req = InferRequest("echo", [InferTensor.from_numpy("x", np.arange(3), binary=True)])
    with rest_client() as client:
        assert client.config.protocol == "v2"
        assert client.is_server_live(fake_server.url) and client.is_server_ready(fake_server.url)
        assert client.is_model_ready(fake_server.url, "echo")
        assert client.get_server_metadata(fake_server.url).name == "fake"
        assert client.get_model_metadata(fake_server.url, "echo").platform == "echo"
        assert client.load_model(fake_server.url, "echo") and client.unload_model(
            fake_server.url, "echo"
        )
        result = client.infer(fake_server.url, req)
        np.testing.assert_array_equal(result.output("x").as_numpy(), np.arange(3))
        with pytest.raises(ModelNotFound):
            client.is_model_ready(fake_server.url, "nope")
    with rest_client("v1") as client:
        assert client.infer(fake_server.url, {"instances": [1]}, "echo") == {"predictions": [1]}
        assert client.explain(fake_server.url, "echo", {"instances": [2]}) == {"explanations": [2]}


def test_one_loop_for_all_calls_and_closed_afterwards(fake_server: Any) -> None:
    client = rest_client()
    thread = client._thread._thread
    loops = {id(client._thread._loop) for _ in range(3) if client.is_server_live(fake_server.url)}
    assert len(loops) == 1
    client.close()
    client.close()  # idempotent
    assert not thread.is_alive()
    with pytest.raises(ConnectionFailed, match="closed"):
        client.is_server_live(fake_server.url)


def test_usable_from_many_threads(fake_server: Any) -> None:
    with rest_client() as client, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: client.is_server_ready(fake_server.url), range(32)))
    assert all(results)


async def test_usable_inside_a_running_loop(fake_server: Any) -> None:
    """Notebooks call blocking code while their own loop runs."""
    with rest_client() as client:
        assert client.is_server_live(fake_server.url)


def test_sync_grpc_methods(grpc_server: Any, transport: str) -> None:
    req = InferRequest("echo", [InferTensor.from_numpy("x", np.ones((2, 2), np.float16))])
    with SyncInferenceGRPCClient(grpc_server.url, timeout=10, transport=transport) as client:
        assert client.url == grpc_server.url
        assert client._async.transport == transport
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("echo")
        assert client.get_server_metadata().version == "1.0"
        assert client.get_model_metadata("echo").name == "echo"
        assert client.load_model("echo") and client.unload_model("echo")
        result = client.infer(req, headers={"x-sync": "1"})
        np.testing.assert_array_equal(result.output("x").as_numpy(), np.ones((2, 2), np.float16))
        with pytest.raises(ModelNotFound):
            client.is_model_ready("nope")
    assert grpc_server.seen_metadata[-2]["x-sync"] == "1"


def test_sync_constructor_errors_stop_the_loop() -> None:
    before = {t for t in threading.enumerate() if t.name == "moorage-grpc-client"}
    with pytest.raises(Exception, match="url should not be empty"):
        SyncInferenceGRPCClient("")
    after = {t for t in threading.enumerate() if t.name == "moorage-grpc-client"}
    assert after <= before


def test_garbage_collected_client_stops_its_thread(fake_server: Any) -> None:
    import gc

    client = rest_client()
    thread = client._thread._thread
    live = client.is_server_live(
        fake_server.url
    )  # not inside assert: pytest keeps its operands alive
    del client
    gc.collect()
    assert live and not thread.is_alive()
