"""Hypothesis: no request body, however malformed, makes the app answer 500.

The target model echoes its inputs back, so every failure seen here is the decoding (or the
encoding of what was decoded), not a model's own bug.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moorage.core.protocol.rest import HEADER_LENGTH
from moorage.server import DataPlane
from moorage.server.rest import create_app

from .conftest import make_repository

DATATYPES = ["BOOL", "INT8", "INT32", "INT64", "UINT8", "UINT64", "FP16", "FP32", "FP64",
             "BF16", "BYTES", "FP99", "", "fp32"]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)

tensor = st.fixed_dictionaries(
    {
        "name": st.one_of(st.text(max_size=4), st.integers()),
        "datatype": st.sampled_from(DATATYPES) | json_values,
        "shape": st.lists(st.integers(-2, 5), max_size=3) | json_values,
    },
    optional={
        "data": json_values
        | st.lists(st.integers(-300, 300) | st.floats() | st.text(max_size=3), max_size=12),
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_size", "binary_data", "x"]),
            st.integers(-4, 64) | json_values,
            max_size=2,
        )
        | json_values,
    },
)

v2_bodies = st.fixed_dictionaries(
    {"inputs": st.lists(tensor, max_size=3) | json_values},
    optional={
        "id": json_values,
        "parameters": json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": json_values}), max_size=2) | json_values,
    },
)


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app(DataPlane(make_repository()), max_body_bytes=1 << 16)


async def _post(app: Any, path: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://fuzz") as client:
        return await client.post(path, content=content, headers=headers)


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(body=v2_bodies, tail=st.binary(max_size=32), header=st.none() | st.integers(-5, 400))
async def test_v2_structured(app: Any, body: Any, tail: bytes, header: int | None) -> None:
    raw = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) if _dumpable(body) else b"{}"
    headers = {}
    if header is not None:
        headers[HEADER_LENGTH] = str(min(header, len(raw)) if header > 0 else header)
    content = raw + (tail if header else b"")
    _check(await _post(app, "/v2/models/echo/infer", content, headers))


@FUZZ
@given(
    content=st.binary(max_size=200),
    header=st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=5),
)
async def test_v2_bytes(app: Any, content: bytes, header: str | None) -> None:
    headers = {} if header is None else {HEADER_LENGTH: header}
    _check(await _post(app, "/v2/models/echo/infer", content, headers))


@FUZZ
@given(body=json_values)
async def test_v1(app: Any, body: Any) -> None:
    raw = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) if _dumpable(body) else b"[]"
    headers = {"content-type": "application/json"}
    _check(await _post(app, "/v1/models/echo:predict", raw, headers))


def _dumpable(value: Any) -> bool:
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True
