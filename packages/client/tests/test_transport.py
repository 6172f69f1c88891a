"""The REST client over real sockets: HTTP/2 (checked on the server side), TLS with a test CA,
timeouts and a server that is not there."""

from __future__ import annotations

import ssl
from typing import Any

import numpy as np
import pytest

from moorage.client import (
    ConnectionFailed,
    InferenceRESTClient,
    InferRequest,
    RESTConfig,
    Timeout,
)
from moorage.core.protocol import InferTensor


def tls_config(test_ca: Any, **kwargs: Any) -> RESTConfig:
    return RESTConfig(protocol="v2", verify=str(test_ca.ca_cert), **kwargs)


async def test_http2_is_negotiated_over_tls(h2_tls_server: Any, test_ca: Any) -> None:
    x = np.arange(1024, dtype=np.float32)
    tensor = InferTensor.from_numpy("x", x, binary=True)
    req = InferRequest("echo", [tensor], parameters={"binary_data_output": True})
    async with InferenceRESTClient(tls_config(test_ca, http2=True)) as client:
        assert await client.is_server_ready(h2_tls_server.url)
        result = await client.infer(h2_tls_server.url, req)
    np.testing.assert_array_equal(result.output("x").as_numpy(), x)
    assert h2_tls_server.versions[-2:] == ["2", "2"]


async def test_http11_over_tls_by_default(h2_tls_server: Any, test_ca: Any) -> None:
    async with InferenceRESTClient(tls_config(test_ca)) as client:
        assert await client.is_server_ready(h2_tls_server.url)
    assert h2_tls_server.versions[-1] == "1.1"


async def test_h2c_prior_knowledge(h2c_server: Any) -> None:
    config = RESTConfig(protocol="v2", http2=True, http1=False)
    async with InferenceRESTClient(config) as client:
        assert await client.is_server_ready(h2c_server.url)
    assert h2c_server.versions[-1] == "2"


async def test_ssl_context_and_verify_false(h2_tls_server: Any, test_ca: Any) -> None:
    context = ssl.create_default_context(cafile=str(test_ca.ca_cert))
    async with InferenceRESTClient(RESTConfig(protocol="v2", verify=context)) as client:
        assert await client.is_server_ready(h2_tls_server.url)
    async with InferenceRESTClient(RESTConfig(protocol="v2", verify=False)) as client:
        assert await client.is_server_ready(h2_tls_server.url)


async def test_untrusted_certificate_is_connection_failed(h2_tls_server: Any) -> None:
    async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as client:
        with pytest.raises(ConnectionFailed, match="CERTIFICATE_VERIFY_FAILED") as info:
            await client.is_server_ready(h2_tls_server.url)
    assert info.value.__cause__ is not None


async def test_client_certificate_is_loaded(h2_tls_server: Any, test_ca: Any) -> None:
    config = tls_config(test_ca, cert=(str(test_ca.client_cert), str(test_ca.client_key)))
    async with InferenceRESTClient(config) as client:
        assert await client.is_server_ready(h2_tls_server.url)


async def test_read_timeout(h2c_server: Any) -> None:
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=0.1)) as client:
        with pytest.raises(Timeout, match="waiting for the answer"):
            await client.is_model_ready(h2c_server.url, "slow")
    # a per-call timeout wins over the config's
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=None)) as client:
        with pytest.raises(Timeout):
            await client.is_model_ready(h2c_server.url, "slow", timeout=0.05)


async def test_server_down(unused_port: int) -> None:
    async with InferenceRESTClient(RESTConfig(protocol="v2", retries=1)) as client:
        with pytest.raises(ConnectionFailed, match=f"127.0.0.1:{unused_port}") as info:
            await client.is_server_live(f"http://127.0.0.1:{unused_port}")
    assert "httpx" in type(info.value.__cause__).__module__
