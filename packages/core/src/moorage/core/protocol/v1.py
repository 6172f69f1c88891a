"""OIP v1 bodies (KServe / TF-Serving style): ``instances`` in, ``predictions`` out."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from moorage.core.errors import InvalidInput

__all__ = ["decode_v1_request", "encode_v1_response"]


def decode_v1_request(body: bytes | bytearray | memoryview, /) -> dict[str, Any]:
    """Parse and check a v1 predict/explain body; returns the JSON object unchanged."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"invalid JSON in request body: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput('v1 request body must be a JSON object with "instances" or "inputs"')
    if "instances" in doc:
        if not isinstance(doc["instances"], list):
            raise InvalidInput('Expected "instances" to be a list')
    elif "inputs" not in doc:
        raise InvalidInput('v1 request body needs "instances" (a list) or "inputs"')
    return doc


def encode_v1_response(result: Any, /) -> bytes:
    """A v1 response body: dicts go out as they are, anything else as ``predictions``."""
    if isinstance(result, np.ndarray) or not isinstance(result, dict):
        result = {"predictions": result}
    return orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
