"""The Open Inference Protocol, once, for REST and gRPC, server and client.

- :class:`Datatype` — the datatype table and its numpy mapping.
- :class:`InferTensor`, :class:`InferRequest`, :class:`InferResponse`, :class:`RequestedOutput`
  — the v2 data model (numpy arrays inside).
- :mod:`.rest` — JSON and binary tensor extension codec; :mod:`.v1` — v1 bodies.
- :mod:`.grpc` — protobuf messages and the converter (``grpc`` extra).
- :mod:`.schema` — pydantic models for metadata, health, errors and OpenAPI docs.
"""

import importlib.util

if importlib.util.find_spec("numpy") is None:
    raise ImportError(
        "moorage.core.protocol needs numpy: pip install 'moorage-core[protocol]'", name="numpy"
    )

from moorage.core.protocol._datatypes import Datatype
from moorage.core.protocol._types import (
    InferRequest,
    InferResponse,
    InferTensor,
    Parameters,
    RequestedOutput,
    bf16_to_float32,
    float32_to_bf16,
    select_outputs,
)

__all__ = [
    "Datatype",
    "InferRequest",
    "InferResponse",
    "InferTensor",
    "Parameters",
    "RequestedOutput",
    "bf16_to_float32",
    "float32_to_bf16",
    "select_outputs",
]
