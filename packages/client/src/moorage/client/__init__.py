"""moorage-client: inference clients for the Open Inference Protocol (KServe 0.14's API).

- :class:`InferenceRESTClient` (HTTP/1.1 on its own keep-alive pool, HTTP/2 and the rest on
  httpx; v1 and v2; binary tensor extension)
  configured by :class:`RESTConfig`, and :class:`InferenceGRPCClient` (v2; its own HTTP/2
  transport, or ``grpc.aio`` where needed).
- :class:`SyncInferenceRESTClient` / :class:`SyncInferenceGRPCClient`: blocking twins.
- Requests and responses are core's types (:mod:`moorage.core.protocol`); :class:`InferInput`
  and :class:`InferRequest` add KServe's constructors on top of them.
- Every failure is one of core's typed errors (:mod:`moorage.core.errors`), re-exported here.
"""

from moorage.client._config import USE_CLIENT_DEFAULT, RESTConfig
from moorage.client._grpc import InferenceGRPCClient, default_channel_options
from moorage.client._inputs import InferInput, InferRequest
from moorage.client._rest import InferenceRESTClient
from moorage.client._sync import SyncInferenceGRPCClient, SyncInferenceRESTClient
from moorage.client._version import __version__
from moorage.core.errors import (
    ConnectionFailed,
    InferenceError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    MoorageError,
    PayloadTooLarge,
    ServerError,
    ServerNotReady,
    Timeout,
    UnsupportedProtocol,
)
from moorage.core.protocol import Datatype, InferResponse, InferTensor, RequestedOutput

__all__ = [
    "USE_CLIENT_DEFAULT",
    "ConnectionFailed",
    "Datatype",
    "InferInput",
    "InferRequest",
    "InferResponse",
    "InferTensor",
    "InferenceError",
    "InferenceGRPCClient",
    "InferenceRESTClient",
    "InvalidInput",
    "ModelNotFound",
    "ModelNotReady",
    "MoorageError",
    "PayloadTooLarge",
    "RESTConfig",
    "RequestedOutput",
    "ServerError",
    "ServerNotReady",
    "SyncInferenceGRPCClient",
    "SyncInferenceRESTClient",
    "Timeout",
    "UnsupportedProtocol",
    "__version__",
    "default_channel_options",
]
